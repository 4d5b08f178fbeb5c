# SPDX-License-Identifier: Apache-2.0
"""PCI passthrough end to end on a real kernel with a real IOMMU: the
tests in tests/iommu/ (the real hsd, hsctl, hs-vfio and QEMU binding,
passing through, hot-plugging and giving back the guest's PCI devices)
run inside the IOMMU guest (iommu_guest.py: q35 + intel-iommu under TCG,
vfio modules loaded, the host's file system visible). Each in-guest test
is reported here by name; any failure, error or skip fails this test."""
import os
import xml.etree.ElementTree as ET

import pytest

import iommu_guest as ig
from conftest import BUILD, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iommu_image():
    return ig.image_or_skip()


def test_vfio_in_iommu_guest(iommu_image, tmp_path, guest):
    kernel, initrd = iommu_image
    junit = tmp_path / "junit.xml"
    argv = ["/usr/bin/python3", "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rs",
            f"--junitxml={junit}", str(ROOT / "tests" / "iommu")]
    r = ig.run(argv, timeout=1500, out_dir=tmp_path, kernel=kernel, initrd=initrd, smp=2,
               env={"HS_BUILD_DIR": str(BUILD), "HS_TEST_TMP": "/tmp"}, cwd=str(ROOT))
    print(r.console[-20000:])
    print("timings:", r.timings)
    assert junit.exists(), f"pytest in the guest wrote no report (rc {r.rc})"
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = suite.findall("testcase")
    bad = []
    for c in cases:
        for kind in ("failure", "error", "skipped"):
            e = c.find(kind)
            if e is not None:
                bad.append(f"{c.get('name')}: {kind}: {(e.get('message') or '')[:300]}")
    print(f"in the IOMMU guest: {len(cases)} tests, {len(bad)} not passed")
    assert len(cases) >= 10, f"only {len(cases)} tests ran in the guest"
    assert not bad, "\n".join(bad)
    assert r.rc == 0
