# SPDX-License-Identifier: Apache-2.0
"""Networking on a kernel that has bridge VLAN filtering and vhost-net
(this host's has neither): tests/iommu/test_net_real.py runs inside the
IOMMU guest (iommu_guest.py), built here with tun, bridge, vhost_net,
macvtap and veth loaded, in a cache of its own. Each in-guest test is
reported by name; any failure, error or skip fails this test.

Budget: the whole file within 8 minutes; no nested guest boots (each
takes ~6 minutes under nested TCG), except with HS_NET_NESTED_BOOT=1,
which adds test_booted_guests_vlan_ping (two guests side by side, ~20
minutes more)."""
import os
from pathlib import Path

import pytest

import iommu_guest as ig
from conftest import BUILD, ROOT

pytestmark = pytest.mark.slow

NET_MODULES = "tun vhost_net bridge macvtap veth"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
    "hypervisor-scale" / "iommu-net-guest"
BUDGET = 8 * 60


def net_guest_env():
    return {"HS_IOMMU_GUEST_CACHE": os.environ.get("HS_IOMMU_NET_GUEST_CACHE", str(CACHE)),
            "HS_IOMMU_GUEST_EXTRA_MODULES": NET_MODULES}


def inner_env():
    """The in-guest pytest's environment: the build, and the test guest's
    cache as this run has it (the host's root is the guest's)."""
    env = {"HS_BUILD_DIR": str(BUILD), "HS_TEST_TMP": "/tmp"}
    for k in ("HS_GUEST_CACHE", "HS_GUEST_OFFLINE", "HS_NET_NESTED_BOOT"):
        if k in os.environ:
            env[k] = os.environ[k]
    return env


@pytest.fixture(scope="module")
def net_image():
    return ig.image_or_skip(env=net_guest_env())


def test_net_in_kernel_with_vlans_and_vhost(net_image, tmp_path, guest):
    kernel, initrd = net_image
    tests = [ROOT / "tests" / "iommu" / "test_net_real.py"]
    budget = BUDGET
    if os.environ.get("HS_NET_NESTED_BOOT") == "1":
        budget += 20 * 60  # two nested boots side by side, and pings
    else:
        tests += ["-k", "not booted"]
    r, cases, bad = ig.run_pytest(tests, tmp_path, budget, kernel, initrd, smp=2,
                                  env=inner_env())
    assert cases is not None, f"pytest in the guest wrote no report (rc {r.rc})"
    assert len(cases) >= 3, f"only {len(cases)} tests ran in the guest: {cases}"
    assert not bad, "\n".join(bad)
    assert r.rc == 0
