#!/usr/bin/env bash
# Build (or reuse from cache) the UEFI Secure Boot test guest of Hypervisor
# Scale: a small Debian 12 (bookworm) system on a GPT disk that boots through
# the signed chain OVMF (secboot code + Microsoft-keys vars) -> shim-signed ->
# grub-efi-amd64-signed -> Debian's signed kernel -> systemd, with
# qemu-guest-agent, tpm2-tools and mokutil, root autologin on ttyS0.
#
# Cache: ${HS_EFI_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/efi-guest}
# Output (stdout, last three lines):  EFI_IMAGE=<cache>/disk.qcow2
#                                     EFI_CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
#                                     EFI_VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
# (values quoted with printf %q). Everything else goes to stderr, so
# `eval "$(build-efi-guest.sh)"` works. EFI_CODE is read-only pflash 0;
# EFI_VARS is a template: give each VM a writable copy as pflash 1. The
# firmware needs `-machine q35,smm=on -global
# driver=cfi.pflash01,property=secure,value=on`.
#
# Environment:
#   HS_EFI_GUEST_CACHE    cache directory (see above)
#   HS_EFI_GUEST_FORCE=1  rebuild even if the cache is valid
#   HS_EFI_GUEST_OFFLINE=1 never run `apt-get update`; reuse a cached guest
#                         made by this same script even if package versions
#                         changed (a build from scratch still needs the mirror)
#   HS_EFI_GUEST_MIRROR   Debian mirror (default: the one in this host's apt
#                         sources, else http://deb.debian.org/debian)
# Building needs root (debootstrap, chroot); reusing the cache does not.
# No loop devices and no mounts of the image: the ESP is made with
# mkfs.vfat -C + mtools, the root with mkfs.ext4 -d, the GPT with sfdisk.
# See README.md in this directory.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
LIB="$HERE/lib.sh"
DLIB="$HERE/debian-lib.sh"
CACHE=${HS_EFI_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/efi-guest}
OFFLINE=${HS_EFI_GUEST_OFFLINE:-}
SUITE=bookworm
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
# Installed on top of debootstrap's minbase. libtss2-tcti-device0: the
# /dev/tpm* backend of tpm2-tools (only a Recommends). iproute2: `ip`.
PACKAGES="linux-image-amd64 systemd-sysv udev qemu-guest-agent tpm2-tools
libtss2-tcti-device0 mokutil efibootmgr iproute2"
# Not installed: their signed EFI binaries go to the ESP.
EFI_PACKAGES="shim-signed grub-efi-amd64-signed"
# Versions that make up the cache stamp (with the hash of the scripts).
STAMP_PACKAGES="linux-image-amd64 $EFI_PACKAGES systemd udev qemu-guest-agent tpm2-tools
mokutil initramfs-tools"
ESP_MIB=64         # FAT32 ESP
ROOT_MIB=2048      # ext4 root (sparse; the qcow2 holds only used blocks)
HOSTNAME_BASE=hs-efi-guest
# Root disk drivers the initramfs gets (MODULES=list).
INITRD_MODULES="virtio_pci virtio_blk virtio_scsi sd_mod ahci ext4"
# Kernel module trees left out of the image (never used by a QEMU test guest).
PRUNE_MODULES="drivers/gpu drivers/media drivers/net/wireless drivers/infiniband
drivers/iio drivers/staging drivers/comedi drivers/mtd drivers/bluetooth drivers/isdn
sound net/bluetooth net/wireless net/mac80211"
# Units masked for a fast, quiet boot under TCG (getty-static: gettys on
# tty2-6 when there is no dbus).
MASK_UNITS="apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer
systemd-pstore.service systemd-firstboot.service systemd-networkd-wait-online.service
systemd-tmpfiles-clean.timer systemd-binfmt.service
proc-sys-fs-binfmt_misc.automount sys-kernel-debug.mount sys-kernel-tracing.mount
dev-hugepages.mount sys-fs-fuse-connections.mount getty-static.service"
# For debian-lib.sh (file names and comments in the image, messages).
GUEST_TAG=hs-efi-guest
GUEST_DESC="Hypervisor Scale EFI test guest"
GUEST_WHAT="EFI guest"
INITRD_DESC="virtio / SCSI / AHCI root disk drivers"
NS_VAR=_HS_EFI_GUEST_NS
OUTPUTS="disk.qcow2 grub.cfg"

log() { printf 'build-efi-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# stdout is only for the final lines: keep it on fd 3, send the rest to stderr.
exec 3>&1 1>&2

# ---------------------------------------------------------------- tools ----
# apt_update, apt_lists_empty, need, candidates; APT_OPTS, APT_CACHE_OPTS.
# shellcheck source=tests/guest/lib.sh
source "$LIB"
# Mirrors, stamp, debootstrap + chroot, packages, publishing (see its header).
# shellcheck source=tests/guest/debian-lib.sh
source "$DLIB"

# need_file FILE PACKAGE: make sure FILE exists, installing PACKAGE if not.
need_file() {
    [ -e "$1" ] && return 0
    [ "$(id -u)" = 0 ] || die "'$1' is missing; install the Debian package '$2'"
    log "installing $2 (for $1)"
    if apt_lists_empty || ! apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "$2" >&2; then
        apt_update || die "apt-get update failed"
        apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "$2" >&2 ||
            die "could not install $2"
    fi
    [ -e "$1" ] || die "$2 installed but '$1' still missing"
}

# inputs_hash: hash of everything besides package versions that shapes the image.
inputs_hash() {
    cat "$SELF" "$LIB" "$DLIB" | sha256sum | cut -d' ' -f1
}

emit() {
    printf 'EFI_IMAGE=%q\n' "$CACHE/disk.qcow2" >&3
    printf 'EFI_CODE=%q\n' "$OVMF_CODE" >&3
    printf 'EFI_VARS=%q\n' "$OVMF_VARS" >&3
}

# ------------------------------------------------------------- build ----
# configure_guest: network, agent, serial autologin, report service.
configure_guest() {
    local d
    # DHCP on the first ethernet (predictable names: en*; eth* just in case).
    mkdir -p "$R/etc/systemd/network"
    cat >"$R/etc/systemd/network/50-$GUEST_TAG.network" <<'EOF'
# Hypervisor Scale EFI test guest: DHCP (IPv4) on ethernet.
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    in_root systemctl enable systemd-networkd.service

    # qemu-guest-agent: started by its udev rule when the virtio port
    # org.qemu.guest_agent.0 appears (the unit has no [Install]). qemu-ga
    # sends its own freeze/thaw messages to syslog (the journal) only, so a
    # freeze hook writes them to its log file too.
    install -m 0755 /dev/stdin "$R/usr/local/sbin/hs-fsfreeze-hook" <<'EOF'
#!/bin/sh
# Hypervisor Scale EFI test guest: qemu-ga's --fsfreeze-hook. Called with
# "freeze" before the file systems are frozen and "thaw" after the thaw.
printf '%s: hs-fsfreeze-hook: %s\n' "$(date +%s.%N)" "$1" >>/var/log/qemu-ga.log
exit 0
EOF
    d=$R/etc/systemd/system/qemu-guest-agent.service.d
    mkdir -p "$d"
    cat >"$d/$GUEST_TAG.conf" <<'EOF'
# Hypervisor Scale EFI test guest: log to /var/log/qemu-ga.log (agent
# errors/warnings + hs-fsfreeze-hook freeze/thaw lines).
[Service]
ExecStart=
ExecStart=-/usr/sbin/qemu-ga --logfile=/var/log/qemu-ga.log --fsfreeze-hook=/usr/local/sbin/hs-fsfreeze-hook
EOF

    # Root autologin on the serial console; a recognisable prompt.
    d=$R/etc/systemd/system/serial-getty@ttyS0.service.d
    mkdir -p "$d"
    cat >"$d/$GUEST_TAG.conf" <<'EOF'
# Hypervisor Scale EFI test guest: root autologin on ttyS0.
[Service]
ExecStart=
ExecStart=-/sbin/agetty -o '-p -f -- \\u' --keep-baud --autologin root 115200,57600,38400,9600 - $TERM
EOF
    cat >>"$R/root/.profile" <<'EOF'

# Hypervisor Scale EFI test guest: a prompt tests can wait for, no pagers.
PS1='hs-efi# '
export PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0
EOF
    # No bracketed-paste escapes (ESC [?2004h/l) around every prompt.
    printf 'set enable-bracketed-paste off\n' >"$R/root/.inputrc"
    in_root passwd -d root
    # Kernel messages on the console: warnings and worse only, once up.
    printf 'kernel.printk = 4 4 1 7\n' >"$R/etc/sysctl.d/90-$GUEST_TAG.conf"

    # HS-EFI lines on ttyS0 once the system is up, before the login prompt.
    install -m 0755 /dev/stdin "$R/usr/local/sbin/hs-efi-report" <<'EOF'
#!/bin/sh
# Hypervisor Scale EFI test guest: "HS-EFI ..." lines on ttyS0 (run by
# hs-efi-report.service before the serial getty).
out=/dev/ttyS0
[ -w "$out" ] || out=/dev/console
say() { printf 'HS-EFI %s\n' "$*" >"$out"; }
i=0
while [ ! -e /dev/tpm0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sb=$(mokutil --sb-state 2>&1 | head -n1)
say "hostname=$(hostname) kernel=$(uname -r)"
say "secureboot=$sb"
if [ -e /dev/tpm0 ]; then say "tpm=/dev/tpm0"; else say "tpm=none"; fi
say ready
exit 0
EOF
    cat >"$R/etc/systemd/system/hs-efi-report.service" <<'EOF'
[Unit]
Description=Hypervisor Scale: report the EFI guest state on ttyS0
After=systemd-udev-trigger.service
Before=serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hs-efi-report
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
    in_root systemctl enable hs-efi-report.service
    mask_units
}

# fetch_efi_binaries DIR: the signed shim and grub (not installed: their
# .debs through the shared cache, unpacked into DIR); adds the .debs to
# INSTALLED and their versions to WORK/packages.
fetch_efi_binaries() {
    local p v deb
    # shellcheck disable=SC2086  # word splitting intended
    in_root sh -c 'cd /var/cache/apt/archives && apt-get "$@"' sh \
        "${APT_OPTS[@]}" download $EFI_PACKAGES || die "could not download $EFI_PACKAGES"
    for p in $EFI_PACKAGES; do
        v=$(in_root apt-cache show --no-all-versions "$p" | awk '$1 == "Version:" { print $2; exit }')
        deb=${p}_${v//:/%3a}_amd64.deb
        [ -s "$CACHE/debs/$deb" ] || die "$deb is not in $CACHE/debs"
        dpkg-deb -x "$CACHE/debs/$deb" "$1"
        INSTALLED+=$'\n'$deb
        printf '%s %s (ESP)\n' "$p" "$v" >>"$WORK/packages"
    done
}

# make_disk KVER: WORK/disk.raw, GPT: ESP (shim, grub, grub.cfg) + ext4 root.
make_disk() {
    local kver=$1 efi=$WORK/efi esp=$WORK/esp.img root=$WORK/root.img
    local esp_start=2048 esp_sectors=$((ESP_MIB * 2048)) root_start root_sectors=$((ROOT_MIB * 2048))
    root_start=$((esp_start + esp_sectors))
    [ -s "$efi/usr/lib/shim/shimx64.efi.signed" ] || die "no shimx64.efi.signed"
    [ -s "$efi/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ] || die "no grubx64.efi.signed"

    # Debian's signed grub is one image with prefix /EFI/debian on the boot
    # device; it sources $prefix/grub.cfg, else $cmdpath/grub.cfg: both.
    cat >"$WORK/grub.cfg" <<EOF
# $GUEST_DESC (tests/guest/build-efi-guest.sh)
set timeout=0
set default=0
search --no-floppy --fs-uuid --set=root $ROOT_UUID
echo "HS-EFI-GRUB linux $kver"
menuentry "Debian GNU/Linux ($HOSTNAME_BASE)" {
    linux /boot/vmlinuz-$kver root=UUID=$ROOT_UUID ro console=ttyS0 mitigations=off
    initrd /boot/initrd.img-$kver
}
EOF
    log "making the ESP (FAT32, $ESP_MIB MiB)"
    mkfs.vfat -F 32 -S 512 -s 1 -n HS-ESP -C "$esp" $((ESP_MIB * 1024)) >&2
    export MTOOLS_SKIP_CHECK=1
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
    mcopy -i "$esp" "$efi/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$esp" "$efi/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
    mcopy -i "$esp" "$WORK/grub.cfg" ::/EFI/BOOT/grub.cfg
    mcopy -i "$esp" "$WORK/grub.cfg" ::/EFI/debian/grub.cfg

    log "making the ext4 root ($ROOT_MIB MiB)"
    mkfs.ext4 -q -F -L hs-efi-root -U "$ROOT_UUID" -d "$R" \
        -E lazy_itable_init=0,lazy_journal_init=0 "$root" "${ROOT_MIB}M"

    log "assembling the GPT disk"
    truncate -s $(((root_start + root_sectors + 2048) * 512)) "$WORK/disk.raw"
    sfdisk -q --no-reread --no-tell-kernel "$WORK/disk.raw" <<EOF
label: gpt
unit: sectors
first-lba: 2048
start=$esp_start, size=$esp_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"
start=$root_start, size=$root_sectors, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="$GUEST_TAG root"
EOF
    dd if="$esp" of="$WORK/disk.raw" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
    dd if="$root" of="$WORK/disk.raw" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
    rm -f "$esp" "$root"
}

# build: everything, into $WORK; publish into $CACHE at the end.
build() {
    need debootstrap debootstrap
    need mkfs.ext4 e2fsprogs
    need mkfs.vfat dosfstools
    need mcopy mtools
    need sfdisk fdisk
    need qemu-img qemu-utils
    need chroot coreutils
    need dpkg-deb dpkg

    start_build
    bootstrap_root
    log "configuring"
    configure_guest
    record_packages
    fetch_efi_binaries "$WORK/efi"
    umount_under "$WORK"
    finish_root

    local k kver
    k=$(printf '%s\n' "$R"/boot/vmlinuz-* | sort -V | tail -n1)
    kver=${k##*/vmlinuz-}
    if [ ! -s "$k" ] || [ ! -s "$R/boot/initrd.img-$kver" ]; then die "no kernel / initramfs in $R/boot"; fi
    make_disk "$kver"
    log "converting to a compressed qcow2"
    qemu-img convert -c -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"
    rm -f "$WORK/disk.raw"
    chmod 0644 "$WORK/disk.qcow2" "$WORK/grub.cfg"

    publish
    prune_debs
    log "done: disk.qcow2 $(du -m --apparent-size "$CACHE/disk.qcow2" | cut -f1) MiB, kernel $kver"
}

# --------------------------------------------------------------- main ----
need flock util-linux
need sha256sum coreutils
need apt-cache apt
need_file "$OVMF_CODE" ovmf
need_file "$OVMF_VARS" ovmf

# Builds mount things: do everything in a private mount namespace.
enter_namespace "$@"
lock_cache
resolve_versions

if [ "${HS_EFI_GUEST_FORCE:-}" != 1 ] && cache_usable; then
    emit
    exit 0
fi
[ "$OFFLINE" != 1 ] || log "offline, and no cached guest from this script: building needs the mirror"

set_mirrors "${HS_EFI_GUEST_MIRROR:-}"
START=$SECONDS
build
log "built in $((SECONDS - START)) s"
emit
