#!/usr/bin/env bash
# Build (or reuse from cache) the cloud-init test guest of Hypervisor Scale:
# a small Debian 12 (bookworm) root filesystem with the real cloud-init
# package, as a standalone compressed qcow2 (ext4, no partition table) plus
# the kernel and initramfs extracted from it, for direct kernel boot.
#
# Cache: ${HS_CLOUD_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/cloud-guest}
# Output (stdout, last four lines):  CLOUD_IMAGE=<cache>/disk.qcow2
#                                    CLOUD_KERNEL=<cache>/vmlinuz
#                                    CLOUD_INITRD=<cache>/initrd.img
#                                    CLOUD_CMDLINE=root=UUID=...\ console=ttyS0\ ...
# (values quoted with printf %q). Everything else goes to stderr, so
# `eval "$(build-cloud-guest.sh)"` works.
#
# Environment:
#   HS_CLOUD_GUEST_CACHE   cache directory (see above)
#   HS_CLOUD_GUEST_FORCE=1 rebuild even if the cache is valid
#   HS_CLOUD_GUEST_KERNEL  kernel flavour: amd64 (default; has the AHCI driver
#                          q35's ide-cd needs) or cloud-amd64 (smaller, but no
#                          AHCI: attach the seed with virtio-scsi + scsi-cd)
#   HS_CLOUD_GUEST_MIRROR  Debian mirror (default: the one in this host's apt
#                          sources, else http://deb.debian.org/debian)
# Building needs root (debootstrap, chroot); reusing the cache does not.
# See README.md in this directory.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
LIB="$HERE/lib.sh"
CACHE=${HS_CLOUD_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/cloud-guest}
SUITE=bookworm
FLAVOUR=${HS_CLOUD_GUEST_KERNEL:-amd64}
KERNEL_META=linux-image-$FLAVOUR
# Installed on top of debootstrap's minbase. ifupdown: cloud-init's "eni"
# network renderer (without a renderer cloud-init's init stage fails);
# sudo: the default user's sudoers rule; openssh-client: ssh-keygen, which
# cloud-init's ssh module runs for host keys (only ed25519, see below). No
# openssh-server: cloud-init writes authorized_keys without it.
PACKAGES="$KERNEL_META systemd-sysv udev cloud-init ifupdown sudo openssh-client"
# Versions that make up the cache stamp (with the hash of this script).
STAMP_PACKAGES="$KERNEL_META cloud-init systemd udev ifupdown sudo python3 initramfs-tools"
DISK_SIZE=2G       # ext4 size (sparse; the qcow2 holds only used blocks)
HOSTNAME_BASE=debian-base
# Root and CD-ROM drivers the initramfs gets (MODULES=list): virtio root
# disk, AHCI/PIIX/virtio-scsi CD-ROM (so the cidata seed is there early).
INITRD_MODULES="virtio_pci virtio_blk virtio_scsi virtio_net ahci ata_piix sd_mod sr_mod cdrom isofs ext4"
# Kernel module trees left out of the image (never used by a QEMU test guest).
PRUNE_MODULES="drivers/gpu drivers/media drivers/net/wireless drivers/infiniband
drivers/iio drivers/staging drivers/comedi drivers/mtd drivers/bluetooth drivers/isdn
sound net/bluetooth net/wireless net/mac80211"
# Units masked for a fast, quiet boot under TCG.
MASK_UNITS="apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer
systemd-pstore.service systemd-firstboot.service systemd-networkd-wait-online.service
ifupdown-wait-online.service systemd-tmpfiles-clean.timer systemd-binfmt.service
proc-sys-fs-binfmt_misc.automount sys-kernel-debug.mount sys-kernel-tracing.mount
dev-hugepages.mount sys-fs-fuse-connections.mount"

log() { printf 'build-cloud-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$FLAVOUR" in
    amd64 | cloud-amd64) ;;
    *) die "HS_CLOUD_GUEST_KERNEL must be amd64 or cloud-amd64, not '$FLAVOUR'" ;;
esac

# stdout is only for the final lines: keep it on fd 3, send the rest to stderr.
exec 3>&1 1>&2

# ---------------------------------------------------------------- tools ----
# apt_update, apt_lists_empty, need, candidates; APT_OPTS, APT_CACHE_OPTS.
# shellcheck source=tests/guest/lib.sh
source "$LIB"

# ------------------------------------------------------------ mirrors ----
# host_sources: "URI SUITE" for every enabled deb source of this host
# (one-line .list format and deb822 .sources format).
host_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 == "deb" {
                 i = 2
                 if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                 print $i, $(i + 1)
             }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'function flush() {
                 if (types ~ /(^| )deb( |$)/ && enabled !~ /^[Nn]o/) {
                     n = split(uris, u, " "); m = split(suites, s, " ")
                     for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b]
                 }
                 types = uris = suites = ""; enabled = "yes"; key = ""
             }
             BEGIN { enabled = "yes" }
             /^[ \t]*#/ { next }
             /^[ \t]*$/ { flush(); next }
             /^[ \t]/ { if (key == "uris") uris = uris " " $0
                        else if (key == "suites") suites = suites " " $0
                        next }
             { key = tolower($0); sub(/:.*/, "", key)
               val = $0; sub(/^[^:]*:[ \t]*/, "", val)
               if (key == "types") types = val
               else if (key == "uris") uris = val
               else if (key == "suites") suites = val
               else if (key == "enabled") enabled = val }
             END { flush() }' "$f"
    done
}

# mirror_for SUITE DEFAULT: the host's mirror URI for SUITE, else DEFAULT.
mirror_for() {
    local m
    m=$(host_sources 2>/dev/null | awk -v s="$1" '$2 == s { print $1; exit }') || true
    echo "${m:-$2}"
}

# ------------------------------------------------------------ versions ----
# inputs_hash: hash of everything besides package versions that shapes the image.
inputs_hash() {
    { cat "$SELF" "$LIB"; echo "flavour: $FLAVOUR"; } | sha256sum | cut -d' ' -f1
}

# stamp_text: the expected stamp (minus output sizes) for the current inputs.
stamp_text() {
    printf 'inputs %s\n' "$HASH"
    printf 'debootstrap %s\n' "$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo none)"
    printf '%s\n' "$VERSIONS"
}

OUTPUTS="disk.qcow2 vmlinuz initrd.img cmdline"

# stamp_valid TEXT: the cache holds a complete build for TEXT.
stamp_valid() {
    local f want
    [ -f "$CACHE/stamp" ] || return 1
    for f in $OUTPUTS; do [ -s "$CACHE/$f" ] || return 1; done
    want=$(printf '%s\n' "$1"
        for f in $OUTPUTS; do printf 'size %s %s\n' "$f" "$(stat -c %s "$CACHE/$f")"; done)
    [ "$want" = "$(cat "$CACHE/stamp")" ]
}

# stamp_inputs_match: the cached build comes from this very script (any versions).
stamp_inputs_match() {
    [ -f "$CACHE/stamp" ] && [ "$(head -n1 "$CACHE/stamp")" = "inputs $HASH" ] || return 1
    local f
    for f in $OUTPUTS; do [ -s "$CACHE/$f" ] || return 1; done
}

emit() {
    printf 'CLOUD_IMAGE=%q\n' "$CACHE/disk.qcow2" >&3
    printf 'CLOUD_KERNEL=%q\n' "$CACHE/vmlinuz" >&3
    printf 'CLOUD_INITRD=%q\n' "$CACHE/initrd.img" >&3
    printf 'CLOUD_CMDLINE=%q\n' "$(cat "$CACHE/cmdline")" >&3
}

# ------------------------------------------------------------- build ----
WORK=
R=

# umount_under DIR: unmount everything mounted below DIR, deepest first.
umount_under() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# cleanup: on any exit, undo mounts and remove the temp dir (never crossing
# into a mount that is still there).
cleanup() {
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        umount_under "$WORK"
        rm -rf --one-file-system "$WORK" || log "warning: could not remove $WORK"
    fi
}

# in_root CMD...: run CMD in the chroot.
in_root() {
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C HOME=/root \
        ${http_proxy:+http_proxy="$http_proxy"} "$@"
}

# mount_root: /proc, /sys, /dev, /dev/pts in the chroot and the shared .deb
# cache as its apt archive (all in our private mount namespace).
mount_root() {
    mount -t proc proc "$R/proc"
    mount -t sysfs sysfs "$R/sys"
    mount --bind /dev "$R/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
    rm -f "$R"/var/cache/apt/archives/*.deb
    mkdir -p "$CACHE/debs/partial"
    mount --bind "$CACHE/debs" "$R/var/cache/apt/archives"
}

# preconfigure: what must be in place before the packages are installed.
preconfigure() {
    local d p
    # Apt sources: the same mirrors as the host (+ updates and security).
    {
        echo "deb $MIRROR $SUITE main"
        echo "deb $MIRROR $SUITE-updates main"
        [ -n "$SECURITY_MIRROR" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
    } >"$R/etc/apt/sources.list"
    # No daemons started by maintainer scripts.
    printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
    chmod 0755 "$R/usr/sbin/policy-rc.d"
    # No docs, man pages, translations; no unused kernel module trees.
    {
        echo "# Hypervisor Scale cloud test guest: keep the image small."
        for d in /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian; do
            echo "path-exclude=$d/*"
        done
        echo "path-include=/usr/share/doc/*/copyright"
        echo "path-include=/usr/share/locale/locale.alias"
        for p in $PRUNE_MODULES; do
            echo "path-exclude=/lib/modules/*/kernel/$p/*"
            echo "path-exclude=/usr/lib/modules/*/kernel/$p/*"
        done
    } >"$R/etc/dpkg/dpkg.cfg.d/90-hs-cloud-guest"
    find "$R/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* "$R"/usr/share/lintian/*
    # Initramfs (generated by the kernel's postinst): only the drivers we
    # need, gzip (zstd is not installed).
    mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/etc/initramfs-tools/hooks"
    printf 'MODULES=list\nCOMPRESS=gzip\n' >"$R/etc/initramfs-tools/conf.d/90-hs-cloud-guest.conf"
    cat >"$R/etc/initramfs-tools/hooks/hs-cloud-guest" <<EOF
#!/bin/sh
# Hypervisor Scale cloud test guest: virtio root disk and CD-ROM drivers.
PREREQ=""
prereqs() { echo "\$PREREQ"; }
case "\$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in $INITRD_MODULES; do
    manual_add_modules "\$m"
done
EOF
    chmod 0755 "$R/etc/initramfs-tools/hooks/hs-cloud-guest"
    # Identity.
    echo "$HOSTNAME_BASE" >"$R/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        "$HOSTNAME_BASE" >"$R/etc/hosts"
    # Root: rw from the kernel command line, no fsck (a fresh overlay).
    printf 'UUID=%s\t/\text4\tdefaults,errors=remount-ro\t0\t0\n' "$ROOT_UUID" >"$R/etc/fstab"
}

# install_packages: the guest's packages, from the shared .deb cache.
install_packages() {
    in_root apt-get "${APT_OPTS[@]}" update
    # shellcheck disable=SC2086  # word splitting intended
    in_root apt-get "${APT_OPTS[@]}" install -y --no-install-recommends $PACKAGES
    in_root apt-get "${APT_OPTS[@]}" -y --no-install-recommends dist-upgrade
}

# configure_guest: cloud-init config, the report service, boot speed-ups.
configure_guest() {
    local u
    # cloud-init: only NoCloud (a `cidata` volume); one host key type (no
    # sshd here; RSA keygen is slow under TCG; [] fails the schema check);
    # no grub here (grub-dpkg costs ~2 s under TCG for nothing).
    cat >"$R/etc/cloud/cloud.cfg.d/90-hs-cloud-guest.cfg" <<'EOF'
# Hypervisor Scale cloud test guest (tests/guest/build-cloud-guest.sh)
datasource_list: [ NoCloud, None ]
ssh_genkeytypes: [ ed25519 ]
grub_dpkg:
  enabled: false
EOF
    # cloud-init's `locale` module would run locale-gen for Debian's default
    # en_US.UTF-8 at first boot (slow under TCG): generate it now.
    sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$R/etc/locale.gen"
    in_root locale-gen
    in_root update-locale LANG=en_US.UTF-8
    # A DHCP server that never answers must not hold the boot for 60 s.
    printf '\n# Hypervisor Scale cloud test guest\ntimeout 15;\n' >>"$R/etc/dhcp/dhclient.conf"

    install -m 0755 /dev/stdin "$R/usr/local/sbin/hs-cloud-report" <<'EOF'
#!/bin/sh
# Hypervisor Scale cloud test guest: report what cloud-init applied, as
# "HS-CLOUD ..." lines on ttyS0 (run by hs-cloud-report.service after
# cloud-final.service). Kernel option hs.poweroff: power off afterwards.
out=/dev/ttyS0
[ -w "$out" ] || out=/dev/console
# A leading newline: the serial getty's login prompt has none.
printf '\n' >"$out"
say() { printf 'HS-CLOUD %s\n' "$*" >"$out"; }

say "hostname=$(hostname)"
iid=$(cat /run/cloud-init/.instance-id 2>/dev/null) || iid=
[ -n "$iid" ] || iid=$(cloud-init query instance_id 2>/dev/null) || iid=
say "instance-id=${iid:-none}"
python3 - <<'PY' 2>/dev/null | while IFS= read -r l; do say "$l"; done
import json
try:
    r = json.load(open("/run/cloud-init/result.json"))["v1"]
    print("datasource=%s" % r.get("datasource"))
    print("errors=%d" % len(r.get("errors") or []))
except Exception:
    print("datasource=none")
PY
for d in /home/*/; do
    [ -d "$d" ] || continue
    u=${d%/}; u=${u##*/}
    f=${d}.ssh/authorized_keys
    if [ -f "$f" ]; then
        n=$(grep -c -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$f")
        sum=$(sha256sum <"$f"); sum=${sum%% *}
    else
        n=0 sum=none
    fi
    say "user=$u keys=$n sha256=$sum"
done
say done
case " $(cat /proc/cmdline) " in
*" hs.poweroff "*)
    say poweroff
    systemctl --no-block poweroff
    ;;
esac
exit 0
EOF
    # After=multi-user.target explicitly: cloud-final.service is ordered after
    # multi-user.target, so the implicit "target after wanted unit" ordering
    # would make a cycle.
    cat >"$R/etc/systemd/system/hs-cloud-report.service" <<'EOF'
[Unit]
Description=Hypervisor Scale: report the cloud-init result on ttyS0
After=multi-user.target cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hs-cloud-report
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
    in_root systemctl enable hs-cloud-report.service
    # shellcheck disable=SC2086  # word splitting intended
    for u in $MASK_UNITS; do ln -sfn /dev/null "$R/etc/systemd/system/$u"; done
    in_root systemctl disable getty@tty1.service 2>/dev/null || true
    # No root password (locked); the serial getty stays for manual debugging.
    in_root passwd -l root
}

# finish_root: undo build-only settings and drop caches before packing.
finish_root() {
    rm -f "$R/usr/sbin/policy-rc.d"
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/debconf/*-old
    mkdir -p "$R/var/lib/apt/lists/partial"
    rm -f "$R"/var/log/*.log "$R"/var/log/apt/* "$R/etc/resolv.conf"
    rm -rf "$R"/tmp/* "$R"/var/tmp/* "$R"/root/.cache
    find "$R/var/cache/apt/archives" -mindepth 1 -delete
    mkdir -p "$R/var/cache/apt/archives/partial"
}

# build: everything, into $WORK; publish into $CACHE at the end.
build() {
    [ "$(id -u)" = 0 ] || die "building the cloud guest needs root (debootstrap, chroot)"
    need debootstrap debootstrap
    need mkfs.ext4 e2fsprogs
    need qemu-img qemu-utils
    need chroot coreutils

    rm -rf --one-file-system "$CACHE"/tmp.* 2>/dev/null || true
    WORK=$(mktemp -d "$CACHE/tmp.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    R=$WORK/root
    ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p "$CACHE/debs"

    log "debootstrap $SUITE (minbase) from $MIRROR"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$R" "$MIRROR" ||
        die "debootstrap failed (see $R/debootstrap/debootstrap.log)"
    preconfigure
    mount_root
    log "installing: $PACKAGES"
    install_packages || die "package installation failed"
    log "configuring"
    configure_guest
    # shellcheck disable=SC2016  # dpkg-query formats, not shell expansions
    in_root dpkg-query -W -f '${Package} ${Version}\n' >"$WORK/packages"
    # shellcheck disable=SC2016
    INSTALLED=$(in_root dpkg-query -W -f '${Package}_${Version}_${Architecture}.deb\n' | sed 's/:/%3a/g')
    umount_under "$WORK"
    finish_root

    # Kernel + initramfs for direct kernel boot.
    local k i
    k=$(printf '%s\n' "$R"/boot/vmlinuz-* | sort -V | tail -n1)
    i=$R/boot/initrd.img-${k##*/vmlinuz-}
    if [ ! -s "$k" ] || [ ! -s "$i" ]; then die "no kernel / initramfs in $R/boot"; fi
    cp "$k" "$WORK/vmlinuz"
    cp "$i" "$WORK/initrd.img"
    printf 'root=UUID=%s rootfstype=ext4 rw console=ttyS0 net.ifnames=0 mitigations=off\n' \
        "$ROOT_UUID" >"$WORK/cmdline"

    log "making the ext4 file system ($DISK_SIZE) and the qcow2"
    mkfs.ext4 -q -F -L hs-cloud-root -U "$ROOT_UUID" -d "$R" \
        -E lazy_itable_init=0,lazy_journal_init=0 "$WORK/disk.raw" "$DISK_SIZE"
    qemu-img convert -c -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"
    rm -f "$WORK/disk.raw"
    chmod 0644 "$WORK/disk.qcow2" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/cmdline"

    # Publish: the stamp goes first out and last in, so a half-published
    # guest is never valid.
    local f
    { printf '%s\n' "$(stamp_text)"
        for f in $OUTPUTS; do printf 'size %s %s\n' "$f" "$(stat -c %s "$WORK/$f")"; done
    } >"$WORK/stamp"
    sync -f "$WORK/disk.qcow2" 2>/dev/null || true
    rm -f "$CACHE/stamp"
    for f in $OUTPUTS packages; do mv -f "$WORK/$f" "$CACHE/$f"; done
    mv -f "$WORK/stamp" "$CACHE/stamp"

    # Keep only the .debs of this build in the shared cache.
    local keep=$WORK/keep
    printf '%s\n' "$INSTALLED" >"$keep"
    for f in "$CACHE"/debs/*.deb; do
        [ -e "$f" ] || continue
        grep -qxF "${f##*/}" "$keep" || rm -f "$f"
    done
    log "done: disk.qcow2 $(du -m --apparent-size "$CACHE/disk.qcow2" | cut -f1) MiB," \
        "vmlinuz $(stat -c %s "$CACHE/vmlinuz") bytes, initrd.img $(stat -c %s "$CACHE/initrd.img") bytes"
}

# --------------------------------------------------------------- main ----
need flock util-linux
need sha256sum coreutils
need apt-cache apt

# Builds mount things: do everything in a private mount namespace, so that
# no mount outlives this script whatever happens.
if [ "$(id -u)" = 0 ] && [ -z "${_HS_CLOUD_GUEST_NS:-}" ] && command -v unshare >/dev/null &&
    unshare --mount --propagation private true 2>/dev/null; then
    export _HS_CLOUD_GUEST_NS=1
    exec 1>&3 3>&-
    exec unshare --mount --propagation private -- bash "$SELF" "$@"
fi

mkdir -p "$CACHE/apt"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

# Apt behind a proxy: debootstrap (wget) only follows the environment.
if [ -z "${http_proxy:-}" ]; then
    p=$(apt-config shell p Acquire::http::Proxy 2>/dev/null) && eval "$p" && [ -n "${p:-}" ] &&
        export http_proxy=$p
fi

# shellcheck disable=SC2086  # word splitting intended
VERSIONS=$(candidates $STAMP_PACKAGES | sort)
if [ "$(wc -l <<<"$VERSIONS")" -lt "$(wc -w <<<"$STAMP_PACKAGES")" ] && apt_lists_empty &&
    apt_update; then
    # shellcheck disable=SC2086
    VERSIONS=$(candidates $STAMP_PACKAGES | sort)
fi
HASH=$(inputs_hash)

if [ "${HS_CLOUD_GUEST_FORCE:-}" != 1 ]; then
    if stamp_valid "$(stamp_text)"; then
        emit
        exit 0
    fi
    if [ "$(wc -l <<<"$VERSIONS")" -lt "$(wc -w <<<"$STAMP_PACKAGES")" ] && stamp_inputs_match; then
        log "warning: apt cannot resolve the package versions; reusing the cached guest"
        emit
        exit 0
    fi
fi

MIRROR=${HS_CLOUD_GUEST_MIRROR:-$(mirror_for "$SUITE" http://deb.debian.org/debian)}
SECURITY_MIRROR=$(mirror_for "$SUITE-security" "")
if [ -z "$SECURITY_MIRROR" ] && [ -n "${HS_CLOUD_GUEST_MIRROR:-}" ]; then
    SECURITY_MIRROR=http://deb.debian.org/debian-security
fi
START=$SECONDS
build
log "built in $((SECONDS - START)) s"
emit
