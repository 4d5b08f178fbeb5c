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
DLIB="$HERE/debian-lib.sh"
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
# For debian-lib.sh (file names and comments in the image, messages).
GUEST_TAG=hs-cloud-guest
GUEST_DESC="Hypervisor Scale cloud test guest"
GUEST_WHAT="cloud guest"
INITRD_DESC="virtio root disk and CD-ROM drivers"
NS_VAR=_HS_CLOUD_GUEST_NS
OFFLINE=   # no offline mode (apt failures still fall back to the cache)
OUTPUTS="disk.qcow2 vmlinuz initrd.img cmdline"

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
# Mirrors, stamp, debootstrap + chroot, packages, publishing (see its header).
# shellcheck source=tests/guest/debian-lib.sh
source "$DLIB"

# inputs_hash: hash of everything besides package versions that shapes the image.
inputs_hash() {
    { cat "$SELF" "$LIB" "$DLIB"; echo "flavour: $FLAVOUR"; } | sha256sum | cut -d' ' -f1
}

emit() {
    printf 'CLOUD_IMAGE=%q\n' "$CACHE/disk.qcow2" >&3
    printf 'CLOUD_KERNEL=%q\n' "$CACHE/vmlinuz" >&3
    printf 'CLOUD_INITRD=%q\n' "$CACHE/initrd.img" >&3
    printf 'CLOUD_CMDLINE=%q\n' "$(cat "$CACHE/cmdline")" >&3
}

# ------------------------------------------------------------- build ----
# configure_guest: cloud-init config, the report service, boot speed-ups.
configure_guest() {
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
    mask_units
    # No root password (locked); the serial getty stays for manual debugging.
    in_root passwd -l root
}

# build: everything, into $WORK; publish into $CACHE at the end.
build() {
    need debootstrap debootstrap
    need mkfs.ext4 e2fsprogs
    need qemu-img qemu-utils
    need chroot coreutils

    start_build
    bootstrap_root
    log "configuring"
    configure_guest
    record_packages
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

    publish
    prune_debs
    log "done: disk.qcow2 $(du -m --apparent-size "$CACHE/disk.qcow2" | cut -f1) MiB," \
        "vmlinuz $(stat -c %s "$CACHE/vmlinuz") bytes, initrd.img $(stat -c %s "$CACHE/initrd.img") bytes"
}

# --------------------------------------------------------------- main ----
need flock util-linux
need sha256sum coreutils
need apt-cache apt

# Builds mount things: do everything in a private mount namespace.
enter_namespace "$@"
lock_cache
resolve_versions

if [ "${HS_CLOUD_GUEST_FORCE:-}" != 1 ] && cache_usable; then
    emit
    exit 0
fi

set_mirrors "${HS_CLOUD_GUEST_MIRROR:-}"
START=$SECONDS
build
log "built in $((SECONDS - START)) s"
emit
