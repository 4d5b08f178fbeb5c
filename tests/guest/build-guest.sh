#!/usr/bin/env bash
# Build (or reuse from cache) the tiny Linux test guest of Hypervisor Scale:
# a Debian cloud kernel plus a busybox initramfs whose /init is ./init.
#
# Cache: ${HS_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/guest}
# Output (stdout, last two lines):   KERNEL=<cache>/vmlinuz
#                                    INITRD=<cache>/initrd.img
# Everything else goes to stderr, so `eval "$(build-guest.sh)"` works.
#
# Environment:
#   HS_GUEST_CACHE          cache directory (see above)
#   HS_GUEST_EXTRA_MODULES  extra kernel module names to put in the initrd
#   HS_GUEST_FORCE=1        rebuild even if the cache is valid
#   HS_GUEST_OFFLINE=1      never call apt: use the .debs already in the cache
#   HS_GUEST_INIT           the guest's /init script (default ./init); its
#                           content is part of the stamp, so give each init
#                           its own HS_GUEST_CACHE (build-iommu-guest.sh does)
# See README.md in this directory.
# shellcheck disable=SC2012  # ls on our own, well-formed file names
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
LIB="$HERE/lib.sh"
INIT_SRC=${HS_GUEST_INIT:-$HERE/init}
CACHE=${HS_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/guest}

KERNEL_META=linux-image-cloud-amd64
BUSYBOX_PKG=busybox-static
# Modules wanted in the guest; their dependencies are added from modules.dep,
# builtin ones (modules.builtin) are skipped. Beyond the virtio set: virtio_scsi,
# sd_mod and ata_piix make a CD-ROM (sr_mod) reachable; button + evdev carry
# the ACPI power button to acpid; qemu_fw_cfg shows the clone record of
# hsd's warm templates (/sys/firmware/qemu_fw_cfg).
MODULES="virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
virtio_blk virtio_net virtio_balloon virtio_console sr_mod cdrom isofs
virtio_scsi sd_mod ata_piix button evdev qemu_fw_cfg ${HS_GUEST_EXTRA_MODULES:-}"

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools ----
# apt_update, apt_lists_empty, need, candidates; APT_OPTS, APT_CACHE_OPTS.
# shellcheck source=tests/guest/lib.sh
source "$LIB"

need flock util-linux
need sha256sum coreutils
need apt-get apt
need dpkg-deb dpkg

# ------------------------------------------------------------ versions ----
pick() { awk -v p="$1" '$1 == p { print $2; exit }' <<<"$2"; }

# The real kernel package behind the metapackage (e.g. linux-image-6.1.0-56-cloud-amd64).
kernel_package() {
    apt-cache "${APT_CACHE_OPTS[@]}" depends "$KERNEL_META" 2>/dev/null |
        awk '$1 ~ /^\|?Depends:$/ && $2 ~ /^linux-image-[0-9].*-cloud-amd64(-unsigned)?$/ { print $2; exit }' || true
}

# Offline fallback: newest kernel / busybox .debs already in the cache.
# Prints "KPKG KVER BBVER".
resolve_from_cache() {
    local k b
    k=$(ls -1 "$CACHE/debs"/linux-image-[0-9]*-cloud-amd64*_amd64.deb 2>/dev/null | sort -V | tail -n1) || true
    b=$(ls -1 "$CACHE/debs/${BUSYBOX_PKG}"_*_amd64.deb 2>/dev/null | sort -V | tail -n1) || true
    [ -n "$k" ] && [ -n "$b" ] || return 1
    echo "$(dpkg-deb -f "$k" Package) $(dpkg-deb -f "$k" Version) $(dpkg-deb -f "$b" Version)"
}

stamp_field() { # key column
    awk -v k="$1" -v c="$2" '$1 == k { print $c; exit }' "$CACHE/stamp" 2>/dev/null || true
}

inputs_hash() {
    { cat "$SELF" "$LIB" "$INIT_SRC"; echo "modules: $MODULES"; } | sha256sum | cut -d' ' -f1
}

# deb_path PKG VERSION: where `apt-get download` puts it (epoch ':' -> %3a).
deb_path() { echo "$CACHE/debs/${1}_${2//:/%3a}_amd64.deb"; }

emit() {
    printf 'KERNEL=%q\n' "$CACHE/vmlinuz"
    printf 'INITRD=%q\n' "$CACHE/initrd.img"
}

stamp_valid() { # expected-stamp-text
    [ -f "$CACHE/stamp" ] && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ] || return 1
    local want have
    want=$(printf '%s\n' "$1"
        printf 'vmlinuz-size %s\n' "$(stat -c %s "$CACHE/vmlinuz")"
        printf 'initrd-size %s\n' "$(stat -c %s "$CACHE/initrd.img")")
    have=$(cat "$CACHE/stamp")
    [ "$want" = "$have" ]
}

# --------------------------------------------------------------- main ----
[ -r "$INIT_SRC" ] || die "missing $INIT_SRC"
mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

mkdir -p "$CACHE/apt"
OLD_KPKG=$(stamp_field kernel 2)
offline=${HS_GUEST_OFFLINE:-}
MVER='' KPKG='' KVER='' BBVER=''
if [ "$offline" != 1 ]; then
    c=$(candidates "$KERNEL_META" "$BUSYBOX_PKG" ${OLD_KPKG:+"$OLD_KPKG"})
    if [ -z "$(pick "$KERNEL_META" "$c")" ] && apt_lists_empty && apt_update; then
        c=$(candidates "$KERNEL_META" "$BUSYBOX_PKG" ${OLD_KPKG:+"$OLD_KPKG"})
    fi
    MVER=$(pick "$KERNEL_META" "$c")
    BBVER=$(pick "$BUSYBOX_PKG" "$c")
    if [ -n "$MVER" ] && [ -n "$BBVER" ]; then
        # Fast path guess: the kernel package of the last build (a new kernel
        # ABI also changes the metapackage's version, so the stamp catches it).
        if [ -n "$OLD_KPKG" ] && [ -n "$(pick "$OLD_KPKG" "$c")" ]; then
            KPKG=$OLD_KPKG KVER=$(pick "$OLD_KPKG" "$c")
        fi
    else
        log "warning: apt cannot resolve $KERNEL_META / $BUSYBOX_PKG; trying the cached .debs"
        offline=1
    fi
fi
if [ "$offline" = 1 ]; then
    pkgs=$(resolve_from_cache) ||
        die "cannot resolve $KERNEL_META / $BUSYBOX_PKG with apt and no .debs in $CACHE/debs"
    read -r KPKG KVER BBVER <<<"$pkgs"
    MVER=offline
    if [ "$(stamp_field kernel 2)" = "$KPKG" ] && [ "$(stamp_field kernel 3)" = "$KVER" ]; then
        MVER=$(stamp_field meta 3)
    fi
fi

HASH=$(inputs_hash)
mkstamp() {
    printf 'meta %s %s\nkernel %s %s\nbusybox %s %s\ninputs %s' \
        "$KERNEL_META" "$MVER" "$KPKG" "$KVER" "$BUSYBOX_PKG" "$BBVER" "$HASH"
}

if [ "${HS_GUEST_FORCE:-}" != 1 ] && [ -n "$KPKG" ] && stamp_valid "$(mkstamp)"; then
    emit
    exit 0
fi

# Resolve what to build from (online: ask apt again, now including the real
# kernel package behind the metapackage).
resolve_online() {
    local c
    c=$(candidates "$KERNEL_META" "$BUSYBOX_PKG")
    MVER=$(pick "$KERNEL_META" "$c")
    BBVER=$(pick "$BUSYBOX_PKG" "$c")
    KPKG=$(kernel_package)
    [ -n "$MVER" ] && [ -n "$BBVER" ] && [ -n "$KPKG" ] || return 1
    KVER=$(pick "$KPKG" "$(candidates "$KPKG")")
    [ -n "$KVER" ]
}
if [ "$offline" != 1 ]; then
    resolve_online || die "cannot resolve $KERNEL_META / $BUSYBOX_PKG with apt"
fi

log "building guest: $KPKG $KVER, $BUSYBOX_PKG $BBVER"
need cpio cpio
need gzip gzip
need find findutils

# Leftovers of killed runs (we hold the lock, so nobody else is building).
rm -rf "$CACHE"/tmp.*
WORK=$(mktemp -d "$CACHE/tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM HUP

# --- fetch (.debs are kept in $CACHE/debs; re-runs do not download)
fetch() { # pkg version path
    [ -s "$3" ] && dpkg-deb -I "$3" >/dev/null 2>&1 && return 0
    [ "$offline" = 1 ] && die "offline and $3 is missing"
    log "downloading $1=$2"
    rm -f "$WORK/${1}"_*.deb "$3"
    (cd "$WORK" && apt-get "${APT_OPTS[@]}" download "$1=$2" >&2) || return 1
    local got
    got=$(ls -1 "$WORK/${1}"_*.deb | head -n1)
    [ -n "$got" ] && mv -f "$got" "$3"
}
fetch_all() {
    KDEB=$(deb_path "$KPKG" "$KVER")
    BDEB=$(deb_path "$BUSYBOX_PKG" "$BBVER")
    fetch "$KPKG" "$KVER" "$KDEB" && fetch "$BUSYBOX_PKG" "$BBVER" "$BDEB"
}
if ! fetch_all; then
    # Stale package lists (the mirror dropped that version): update, retry.
    log "download failed; refreshing the package lists"
    apt_update || die "apt-get update failed"
    resolve_online || die "cannot resolve $KERNEL_META / $BUSYBOX_PKG with apt"
    fetch_all || die "apt-get download of $KPKG=$KVER / $BUSYBOX_PKG=$BBVER failed"
fi
STAMP=$(mkstamp)

# --- extract
log "extracting"
dpkg-deb -x "$KDEB" "$WORK/kpkg"
dpkg-deb -x "$BDEB" "$WORK/bbpkg"
VMLINUZ=$(ls -1 "$WORK"/kpkg/boot/vmlinuz-* | head -n1)
[ -s "$VMLINUZ" ] || die "no vmlinuz in $KDEB"
KREL=${VMLINUZ##*/vmlinuz-}
MODROOT=$WORK/kpkg/lib/modules/$KREL
[ -d "$MODROOT" ] || die "no /lib/modules/$KREL in $KDEB"
BUSYBOX=$WORK/bbpkg/bin/busybox
[ -x "$BUSYBOX" ] || die "no bin/busybox in $BDEB"

# Debian ships no modules.dep (postinst runs depmod): make one.
if [ ! -s "$MODROOT/modules.dep" ]; then
    need depmod kmod
    depmod -b "$WORK/kpkg" "$KREL"
fi

# --- resolve modules (names use '_' ; file names may use '-')
declare -A DEPS=() PATHOF=() SEEN=() BUILTIN=()
while IFS= read -r line; do
    mod=${line%%:*}
    name=${mod##*/}; name=${name%%.ko*}; name=${name//-/_}
    PATHOF[$name]=$mod
    DEPS[$name]=${line#*:}
done <"$MODROOT/modules.dep"
if [ -f "$MODROOT/modules.builtin" ]; then
    while IFS= read -r b; do
        n=${b##*/}; n=${n%%.ko*}; BUILTIN[${n//-/_}]=1
    done <"$MODROOT/modules.builtin"
fi

ORDER=()
visit() { # name
    local n=$1 d dn
    [ -n "${SEEN[$n]:-}" ] && return 0
    SEEN[$n]=1
    for d in ${DEPS[$n]}; do
        dn=${d##*/}; dn=${dn%%.ko*}; dn=${dn//-/_}
        visit "$dn"
    done
    ORDER+=("$n")
}
for m in $MODULES; do
    m=${m//-/_}
    if [ -n "${PATHOF[$m]:-}" ]; then
        visit "$m"
    elif [ -z "${BUILTIN[$m]:-}" ]; then
        die "module $m is neither a module nor builtin in $KREL"
    fi
done

# --- initramfs tree
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,mnt,hsfill,etc/acpi/PWRF} \
         "$R/lib/modules/$KREL"
chmod 1777 "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
"$BUSYBOX" --list-full | while IFS= read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    case "$applet" in */*) ;; *) applet=bin/$applet ;; esac
    [ -e "$R/$applet" ] && continue
    mkdir -p "$R/${applet%/*}"
    rel=$(dirname "$applet" | sed 's|[^/][^/]*|..|g')
    ln -s "$rel/bin/busybox" "$R/$applet"
done
[ -e "$R/bin/sh" ] || ln -s busybox "$R/bin/sh"
# The kernel opens /dev/console before /init runs (init re-opens it anyway).
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$R/dev/null" c 1 3 2>/dev/null || true

need_decomp() { # file -> decompress cmd
    case "$1" in
        *.ko.xz) need xz xz-utils; echo "xz -dc" ;;
        *.ko.zst) need zstd zstd; echo "zstd -dcq" ;;
        *.ko.gz) echo "gzip -dc" ;;
        *.ko) echo "cat" ;;
        *) die "unknown module format: $1" ;;
    esac
}
: >"$R/lib/modules/hs-load-order"
: >"$R/lib/modules/$KREL/modules.dep"
for n in "${ORDER[@]}"; do
    src=${PATHOF[$n]}
    dst=${src%.ko*}.ko
    mkdir -p "$R/lib/modules/$KREL/$(dirname "$dst")"
    $(need_decomp "$src") "$MODROOT/$src" >"$R/lib/modules/$KREL/$dst"
    echo "$KREL/$dst" >>"$R/lib/modules/hs-load-order"
    deps=
    for d in ${DEPS[$n]}; do deps+=" ${d%.ko*}.ko"; done
    echo "$dst:$deps" >>"$R/lib/modules/$KREL/modules.dep"
done
cp "$MODROOT/modules.builtin" "$R/lib/modules/$KREL/" 2>/dev/null || true
log "modules (load order): ${ORDER[*]}"

# --- config files
install -m 0755 "$INIT_SRC" "$R/init"
# 4095 printable bytes; `yes` adds '\n' -> every 4 KiB page is identical.
for i in $(seq 0 255); do printf 'HS-FILL-%07x\n' "$i"; done | head -c 4095 >"$R/etc/hs-fill.pattern"
[ "$(stat -c %s "$R/etc/hs-fill.pattern")" = 4095 ] || die "bad fill pattern size"
cat >"$R/etc/inittab" <<'EOF'
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot -f
::shutdown:/bin/sync
EOF
cat >"$R/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=${TERM:-vt102}
PS1='hs-guest# '
cd /root
EOF
cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# busybox acpid: ACPI power button (QEMU system_powerdown).
# Leading newline: the shell prompt is usually on the current line.
printf '\nHS-GUEST-ACPI-POWEROFF\n' >/dev/console
[ -n "${HS_ALSO_TTYS0:-}" ] && printf '\nHS-GUEST-ACPI-POWEROFF\n' >/dev/ttyS0 2>/dev/null
sync
poweroff -f
EOF
chmod 0755 "$R/etc/acpi/PWRF/00000080"
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
echo 'root:x:0:' >"$R/etc/group"
echo hs-guest >"$R/etc/hostname"
printf '%s\n' "$KPKG $KVER" "$BUSYBOX_PKG $BBVER" >"$R/etc/hs-guest-release"

# --- pack (deterministic: sorted, fixed mtimes, owner root)
log "packing initramfs"
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
    gzip -9n >"$WORK/initrd.img"
cp "$VMLINUZ" "$WORK/vmlinuz"
chmod 0644 "$WORK/vmlinuz" "$WORK/initrd.img"

# --- publish: stamp goes last, so a half-published guest is never valid
printf '%s\nvmlinuz-size %s\ninitrd-size %s\n' "$STAMP" \
    "$(stat -c %s "$WORK/vmlinuz")" "$(stat -c %s "$WORK/initrd.img")" >"$WORK/stamp"
sync -f "$WORK/initrd.img" 2>/dev/null || true
rm -f "$CACHE/stamp"
mv -f "$WORK/vmlinuz" "$CACHE/vmlinuz"
mv -f "$WORK/initrd.img" "$CACHE/initrd.img"
mv -f "$WORK/stamp" "$CACHE/stamp"

# Drop .debs of other versions.
for f in "$CACHE"/debs/*.deb; do
    [ "$f" = "$KDEB" ] || [ "$f" = "$BDEB" ] || rm -f "$f"
done
log "done: vmlinuz $(stat -c %s "$CACHE/vmlinuz") bytes, initrd.img $(stat -c %s "$CACHE/initrd.img") bytes"
emit
