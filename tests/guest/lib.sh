# SPDX-License-Identifier: Apache-2.0
# Sourced by build-guest.sh and build-cloud-guest.sh: apt on the host, and
# `need`, which installs a missing tool. The script that sources it defines
# log and die and sets CACHE (its cache directory) first. This file is part
# of both scripts' inputs: their cache stamps hash it too.
# shellcheck shell=bash

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
APT_OPTS=(-q -o APT::Sandbox::User=root)
# This image's apt config keeps no binary package cache, which makes every
# apt-cache call parse all lists (~0.5 s); keep one in our cache dir instead
# (apt revalidates it against the lists itself).
APT_CACHE_OPTS=(-o "Dir::Cache::pkgcache=$CACHE/apt/pkgcache.bin")

apt_updated=
# apt_update: `apt-get update` on the host, at most once per run.
apt_update() {
    [ -n "$apt_updated" ] && return 0
    log "apt-get update"
    apt-get "${APT_OPTS[@]}" update >&2 || return 1
    apt_updated=1
}

apt_lists_empty() {
    ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

# need CMD PACKAGE: make sure CMD exists, installing PACKAGE if it does not.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" = 0 ] || die "'$1' is missing; install the Debian package '$2'"
    log "installing $2 (for $1)"
    if apt_lists_empty || ! apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "$2" >&2; then
        apt_update || die "apt-get update failed"
        apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "$2" >&2 ||
            die "could not install $2"
    fi
    command -v "$1" >/dev/null 2>&1 || die "$2 installed but '$1' still missing"
}

# candidates PKG...: "pkg version" lines for the versions apt would install.
candidates() {
    apt-cache "${APT_CACHE_OPTS[@]}" policy "$@" 2>/dev/null |
        awk '/^[^ ]/ { p = $1; sub(/:$/, "", p) }
             $1 == "Candidate:" && $2 != "(none)" { print p, $2 }' || true
}
