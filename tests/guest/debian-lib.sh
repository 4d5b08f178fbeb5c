# SPDX-License-Identifier: Apache-2.0
# Sourced (after lib.sh) by the debootstrap-based guest builders,
# build-cloud-guest.sh and build-efi-guest.sh: host mirrors, the cache stamp,
# debootstrap + chroot mounts, package installation through the shared .deb
# cache, boot speed-ups, publishing into the cache. This file is part of both
# scripts' inputs: their cache stamps hash it too.
#
# The sourcing script defines log and die and sets, before calling anything:
#   CACHE SUITE          cache directory, Debian suite
#   GUEST_TAG            e.g. hs-cloud-guest: names the config files it adds
#                        (/etc/dpkg/dpkg.cfg.d/90-TAG, initramfs conf.d/hook)
#   GUEST_DESC           e.g. "Hypervisor Scale cloud test guest" (comments)
#   GUEST_WHAT           e.g. "cloud guest" (messages)
#   INITRD_DESC          what the initramfs hook adds (its comment)
#   PACKAGES             installed on top of debootstrap's minbase
#   STAMP_PACKAGES       whose host apt candidates make up the stamp
#   INITRD_MODULES       modules forced into the initramfs (MODULES=list)
#   PRUNE_MODULES        kernel module trees left out of the image
#   MASK_UNITS           systemd units masked for boot speed
#   HOSTNAME_BASE        /etc/hostname
#   OUTPUTS              files in CACHE that make a complete build
#   NS_VAR               name of the env var marking "already in our own
#                        mount namespace"
#   OFFLINE              1: never `apt-get update`, reuse any build of this
#                        script (optional)
# and, before build: MIRROR SECURITY_MIRROR; inputs_hash (a function).
# Set here: WORK R ROOT_UUID HASH VERSIONS INSTALLED.
# shellcheck shell=bash

WORK=
R=

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

# set_mirrors OVERRIDE: MIRROR and SECURITY_MIRROR (OVERRIDE: the script's
# *_MIRROR variable; with it and no host security source, Debian's).
set_mirrors() {
    MIRROR=${1:-$(mirror_for "$SUITE" http://deb.debian.org/debian)}
    SECURITY_MIRROR=$(mirror_for "$SUITE-security" "")
    if [ -z "$SECURITY_MIRROR" ] && [ -n "${1:-}" ]; then
        SECURITY_MIRROR=http://deb.debian.org/debian-security
    fi
}

# ------------------------------------------------------------ versions ----
# stamp_text: the expected stamp (minus output sizes) for the current inputs.
stamp_text() {
    printf 'inputs %s\n' "$HASH"
    printf 'debootstrap %s\n' "$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo none)"
    printf '%s\n' "$VERSIONS"
}

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

# versions_incomplete: apt could not resolve every STAMP_PACKAGES candidate.
versions_incomplete() {
    [ "$(wc -l <<<"$VERSIONS")" -lt "$(wc -w <<<"$STAMP_PACKAGES")" ]
}

# resolve_versions: VERSIONS (host apt candidates of STAMP_PACKAGES; one
# `apt-get update` if they are missing and the lists are empty, unless
# OFFLINE=1) and HASH.
resolve_versions() {
    # shellcheck disable=SC2086  # word splitting intended
    VERSIONS=$(candidates $STAMP_PACKAGES | sort)
    if [ "${OFFLINE:-}" != 1 ] && versions_incomplete && apt_lists_empty && apt_update; then
        # shellcheck disable=SC2086
        VERSIONS=$(candidates $STAMP_PACKAGES | sort)
    fi
    HASH=$(inputs_hash)
}

# cache_usable: the cache may be used as it is (complete build for these
# inputs; or, when the versions cannot be resolved or OFFLINE=1, a complete
# build made by this very script).
cache_usable() {
    stamp_valid "$(stamp_text)" && return 0
    if { [ "${OFFLINE:-}" = 1 ] || versions_incomplete; } && stamp_inputs_match; then
        log "warning: apt cannot resolve the package versions; reusing the cached guest"
        return 0
    fi
    return 1
}

# ----------------------------------------------------------- process ----
# enter_namespace ARGS...: re-exec the script (SELF) in a private mount
# namespace, so that no mount outlives it whatever happens (root only; a
# no-op when already there or when unshare cannot). fd 3 is the real stdout.
enter_namespace() {
    if [ "$(id -u)" = 0 ] && [ -z "${!NS_VAR:-}" ] && command -v unshare >/dev/null &&
        unshare --mount --propagation private true 2>/dev/null; then
        export "$NS_VAR=1"
        exec 1>&3 3>&-
        exec unshare --mount --propagation private -- bash "$SELF" "$@"
    fi
}

# lock_cache: serialise runs on CACHE/.lock (fd 9); export the host's apt
# proxy for debootstrap (wget only follows the environment).
lock_cache() {
    mkdir -p "$CACHE/apt"
    exec 9>"$CACHE/.lock"
    flock 9 || die "cannot lock $CACHE/.lock"
    if [ -z "${http_proxy:-}" ]; then
        local p
        if p=$(apt-config shell p Acquire::http::Proxy 2>/dev/null) && eval "$p" && [ -n "${p:-}" ]; then
            export http_proxy=$p
        fi
    fi
    return 0
}

# ------------------------------------------------------------- build ----
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

# mount_root: /proc, /sys (read-only), a /dev of its own, /dev/pts in the
# chroot and the shared .deb cache as its apt archive (all in our private
# mount namespace). Never the host's /dev: package scripts in the chroot
# would change the host's device nodes (systemd's postinst gave the host's
# /dev/kvm the guest's kvm group id).
mount_root() {
    local n ma mi
    mount -t proc proc "$R/proc"
    mount -t sysfs -o ro sysfs "$R/sys"
    mount -t tmpfs -o mode=0755,nosuid,size=16m hs-dev "$R/dev"
    for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
        read -r n ma mi <<<"$n"
        mknod -m 0666 "$R/dev/$n" c "$ma" "$mi"
    done
    mkdir -p "$R/dev/pts" "$R/dev/shm"
    ln -s pts/ptmx "$R/dev/ptmx"
    ln -s /proc/self/fd "$R/dev/fd"
    ln -s /proc/self/fd/0 "$R/dev/stdin"
    ln -s /proc/self/fd/1 "$R/dev/stdout"
    ln -s /proc/self/fd/2 "$R/dev/stderr"
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
        echo "# $GUEST_DESC: keep the image small."
        for d in /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian; do
            echo "path-exclude=$d/*"
        done
        echo "path-include=/usr/share/doc/*/copyright"
        echo "path-include=/usr/share/locale/locale.alias"
        for p in $PRUNE_MODULES; do
            echo "path-exclude=/lib/modules/*/kernel/$p/*"
            echo "path-exclude=/usr/lib/modules/*/kernel/$p/*"
        done
    } >"$R/etc/dpkg/dpkg.cfg.d/90-$GUEST_TAG"
    find "$R/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* "$R"/usr/share/lintian/*
    # Initramfs (generated by the kernel's postinst): only the drivers we
    # need, gzip (zstd is not installed).
    mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/etc/initramfs-tools/hooks"
    printf 'MODULES=list\nCOMPRESS=gzip\n' >"$R/etc/initramfs-tools/conf.d/90-$GUEST_TAG.conf"
    cat >"$R/etc/initramfs-tools/hooks/$GUEST_TAG" <<EOF
#!/bin/sh
# $GUEST_DESC: $INITRD_DESC.
PREREQ=""
prereqs() { echo "\$PREREQ"; }
case "\$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in $INITRD_MODULES; do
    manual_add_modules "\$m"
done
EOF
    chmod 0755 "$R/etc/initramfs-tools/hooks/$GUEST_TAG"
    # Identity.
    echo "$HOSTNAME_BASE" >"$R/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        "$HOSTNAME_BASE" >"$R/etc/hosts"
    # Root: no fsck (pass 0; a fresh overlay).
    printf 'UUID=%s\t/\text4\tdefaults,errors=remount-ro\t0\t0\n' "$ROOT_UUID" >"$R/etc/fstab"
}

# install_packages: the guest's packages, from the shared .deb cache.
install_packages() {
    in_root apt-get "${APT_OPTS[@]}" update
    # shellcheck disable=SC2086  # word splitting intended
    in_root apt-get "${APT_OPTS[@]}" install -y --no-install-recommends $PACKAGES
    in_root apt-get "${APT_OPTS[@]}" -y --no-install-recommends dist-upgrade
}

# mask_units: MASK_UNITS masked, no getty on tty1 (serial console only).
mask_units() {
    local u
    # shellcheck disable=SC2086  # word splitting intended
    for u in $MASK_UNITS; do ln -sfn /dev/null "$R/etc/systemd/system/$u"; done
    in_root systemctl disable getty@tty1.service 2>/dev/null || true
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

# start_build: root check, WORK (a tmp.* dir in the cache, removed on exit),
# R, ROOT_UUID.
start_build() {
    [ "$(id -u)" = 0 ] || die "building the $GUEST_WHAT needs root (debootstrap, chroot)"
    rm -rf --one-file-system "$CACHE"/tmp.* 2>/dev/null || true
    WORK=$(mktemp -d "$CACHE/tmp.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    R=$WORK/root
    ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)
    mkdir -p "$CACHE/debs"
}

# bootstrap_root: debootstrap (minbase), preconfigure, mounts, PACKAGES.
bootstrap_root() {
    log "debootstrap $SUITE (minbase) from $MIRROR"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$R" "$MIRROR" ||
        die "debootstrap failed (see $R/debootstrap/debootstrap.log)"
    preconfigure
    mount_root
    log "installing: $PACKAGES"
    install_packages || die "package installation failed"
}

# record_packages: WORK/packages (every package and version in the image)
# and INSTALLED (their .deb file names, for prune_debs).
record_packages() {
    # shellcheck disable=SC2016  # dpkg-query formats, not shell expansions
    in_root dpkg-query -W -f '${Package} ${Version}\n' >"$WORK/packages"
    # shellcheck disable=SC2016
    INSTALLED=$(in_root dpkg-query -W -f '${Package}_${Version}_${Architecture}.deb\n' | sed 's/:/%3a/g')
}

# publish: move OUTPUTS and `packages` from WORK into CACHE. The stamp goes
# first out and last in, so a half-published guest is never valid.
publish() {
    local f
    { printf '%s\n' "$(stamp_text)"
        for f in $OUTPUTS; do printf 'size %s %s\n' "$f" "$(stat -c %s "$WORK/$f")"; done
    } >"$WORK/stamp"
    sync -f "$WORK/disk.qcow2" 2>/dev/null || true
    rm -f "$CACHE/stamp"
    for f in $OUTPUTS packages; do mv -f "$WORK/$f" "$CACHE/$f"; done
    mv -f "$WORK/stamp" "$CACHE/stamp"
}

# prune_debs: keep only the .debs of this build (INSTALLED) in the shared cache.
prune_debs() {
    local f keep=$WORK/keep
    printf '%s\n' "$INSTALLED" >"$keep"
    for f in "$CACHE"/debs/*.deb; do
        [ -e "$f" ] || continue
        grep -qxF "${f##*/}" "$keep" || rm -f "$f"
    done
}
