# SPDX-License-Identifier: Apache-2.0
"""PCI passthrough end to end on a real kernel with a real IOMMU: the
tests in tests/iommu/test_vfio_real.py (the real hsd, hsctl, hs-vfio and
QEMU binding, passing through, hot-plugging and giving back the guest's
PCI devices) run inside the IOMMU guest (iommu_guest.py: q35 +
intel-iommu under TCG, vfio modules loaded, the host's file system
visible). Each in-guest test is reported here by name; any failure, error
or skip fails this test."""
import pytest

import iommu_guest as ig
from conftest import BUILD, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iommu_image():
    return ig.image_or_skip()


def test_vfio_in_iommu_guest(iommu_image, tmp_path, guest):
    kernel, initrd = iommu_image
    r, cases, bad = ig.run_pytest([ROOT / "tests" / "iommu" / "test_vfio_real.py"], tmp_path,
                                  1500, kernel, initrd, smp=2,
                                  env={"HS_BUILD_DIR": str(BUILD), "HS_TEST_TMP": "/tmp"})
    assert cases is not None, f"pytest in the guest wrote no report (rc {r.rc})"
    assert len(cases) >= 10, f"only {len(cases)} tests ran in the guest"
    assert not bad, "\n".join(bad)
    assert r.rc == 0
