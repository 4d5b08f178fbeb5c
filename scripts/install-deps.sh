#!/bin/bash
# Installs everything hsd needs to build, run and be tested, from Debian's
# packages. Idempotent: does nothing when all is there already.
set -euo pipefail

PKGS=(
	# build
	gcc meson ninja-build pkg-config
	libjansson-dev libev-dev libmicrohttpd-dev libhttp-parser-dev
	libseccomp-dev libcap-ng-dev libcmocka-dev
	libisofs-dev libyaml-dev nettle-dev libmnl-dev
	# run
	qemu-system-x86 qemu-utils
	# UEFI firmware and the vTPM (VMs with "firmware": "uefi", "tpm": true)
	ovmf swtpm swtpm-tools
	# test guests (built from Debian packages by tests/guest/build-*.sh; the
	# EFI guest's disk: a FAT ESP and an ext4 root put together by sfdisk)
	cpio gzip xz-utils zstd debootstrap e2fsprogs dosfstools mtools fdisk
	# tests and benchmarks
	python3 python3-pytest python3-pytest-xdist curl util-linux iproute2 valgrind
	genisoimage xorriso
	# migration tests: TLS certificates, ssh:// destinations
	openssl openssh-client openssh-server
	# SPICE tests: the link handshake's RSA-OAEP ticket, a native client
	# (remote-viewer) under Xvfb and a screenshot of it
	python3-cryptography virt-viewer xvfb xauth x11-utils imagemagick
	# static analysis and fuzzing
	cppcheck clang
	# metrics check (promtool)
	prometheus
	# man pages, completion
	scdoc man-db bash-completion
	# the web console: spice-html5 (served by hsd), a browser for its tests,
	# node for xterm.js and playwright-core (scripts/install-web.sh)
	spice-html5 chromium nodejs
)

# /dev/kvm as Debian's udev rule sets it (0660 root:kvm), so that QEMU can
# run as an unprivileged user in group kvm. Containers without udev leave
# it 0600 root.
kvm_perms() {
	[ -c /dev/kvm ] && [ "$(id -u)" -eq 0 ] || return 0
	getent group kvm >/dev/null || groupadd --system kvm
	if [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
		echo "install-deps: /dev/kvm -> root:kvm 0660 (as udev's rule would)" >&2
		chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
	fi
}
trap kvm_perms EXIT

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# npm's parts of the web console, into a cache dir (not the tree).
bash "$(dirname "$0")/install-web.sh" >/dev/null
