#!/usr/bin/env bash
# Build (or reuse from cache) the IOMMU test guest: the same Debian cloud
# kernel and busybox initramfs as the ordinary test guest (build-guest.sh
# does the work), but with ./iommu-init as /init and the modules it needs:
# fuse + virtiofs (the host's root file system arrives as a virtiofs share),
# overlay (a writable view of it) and the vfio set (vfio-pci, type1 IOMMU).
# The guest runs one command in a chroot into the host's file system and
# powers off; tests/integration/iommu_guest.py starts it. See README.md.
#
# Cache: ${HS_IOMMU_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/iommu-guest}
# HS_IOMMU_GUEST_EXTRA_MODULES: more modules for /init to load (e.g. the
# networking tests' tun, bridge, vhost_net); give such a guest its own
# HS_IOMMU_GUEST_CACHE (the module list is part of the cache's stamp).
# Output (stdout, last two lines): KERNEL=<cache>/vmlinuz  INITRD=<cache>/initrd.img
# HS_GUEST_FORCE / HS_GUEST_OFFLINE work as for build-guest.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale
CACHE=${HS_IOMMU_GUEST_CACHE:-$BASE/iommu-guest}

# The kernel .deb is ~30 MiB: reuse the ordinary guest's download when this
# cache has none yet (a hard link when possible).
mkdir -p "$CACHE/debs"
if ! compgen -G "$CACHE/debs/*.deb" >/dev/null; then
    for f in "${HS_GUEST_CACHE:-$BASE/guest}"/debs/*.deb; do
        [ -f "$f" ] || continue
        ln -f "$f" "$CACHE/debs/" 2>/dev/null || cp -f "$f" "$CACHE/debs/"
    done
fi

export HS_GUEST_CACHE=$CACHE
export HS_GUEST_INIT=$HERE/iommu-init
# vfio_pci pulls in vfio_pci_core, vfio, irqbypass and vfio_virqfd through
# modules.dep; vfio_iommu_type1 (the IOMMU backend /dev/vfio/N needs) is not
# a dependency of anything, so it is named.
export HS_GUEST_EXTRA_MODULES="fuse virtiofs overlay irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio_pci_core vfio_pci${HS_IOMMU_GUEST_EXTRA_MODULES:+ $HS_IOMMU_GUEST_EXTRA_MODULES}"
exec bash "$HERE/build-guest.sh"
