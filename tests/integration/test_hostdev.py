# SPDX-License-Identifier: Apache-2.0
"""PCI passthrough on this host, which has no IOMMU: the clear refusals,
the device list, and host devices in a stopped VM's spec. Binding,
passthrough into QEMU, hot-plug and recovery on a real IOMMU are
test_vfio.py's (inside a guest that has one)."""
import json
from pathlib import Path

import pytest

from conftest import wait_for

NO_IOMMU = not any(Path("/sys/class/iommu").glob("*"))


@pytest.mark.skipif(not NO_IOMMU, reason="this host has an IOMMU: test_vfio.py covers it")
def test_start_refused_without_iommu(hsd, guest):
    r = hsd.hsctl("create", "g1", "--memory", "64", "--accel", "tcg", "--kernel",
                  guest["kernel"], "--nic", "none", "--hostdev", "0000:00:03.0")
    assert r.returncode == 0, r.stderr
    r = hsd.hsctl("start", "g1")
    assert r.returncode == 1
    assert "no-iommu" in r.stderr or "IOMMU" in r.stderr, r.stderr
    assert "intel_iommu=on" in r.stderr or "amd_iommu=on" in r.stderr, r.stderr
    st, js, _ = hsd.request("POST", "/v1/vms/g1/start")
    assert st == 409 and js["error"]["code"] == "no-iommu", js
    assert hsd.state("g1") == "defined"
    assert not list((hsd.state_dir / "pci").iterdir())  # nothing claimed


def test_pci_list(hsd):
    js = hsd.json("GET", "/v1/pci")
    devs = {d["address"]: d for d in js["devices"]}
    real = sorted(p.name for p in Path("/sys/bus/pci/devices").iterdir())
    assert sorted(devs) == real
    for a in real:
        d = devs[a]
        vendor = (Path("/sys/bus/pci/devices") / a / "vendor").read_text().strip()[2:]
        assert d["id"].startswith(vendor + ":")
        drv = Path("/sys/bus/pci/devices") / a / "driver"
        assert d.get("driver") == (drv.resolve().name if drv.exists() else None)
    assert js["iommu"] is (not NO_IOMMU)
    out = hsd.hsctl("pci", "list", "--all", check=True).stdout
    assert sum(1 for line in out.splitlines() if line.startswith("0000:")) == len(real), out
    if NO_IOMMU:
        assert out.startswith("IOMMU off: ")


def test_spec_attach_detach_stopped(hsd, guest):
    hsd.hsctl("create", "g2", "--memory", "64", "--accel", "tcg", "--kernel", guest["kernel"],
              "--nic", "none", check=True)
    r = hsd.hsctl("pci", "attach", "g2", "01:00.0", "--x-vga", "--no-rom-bar")
    assert r.returncode == 0, r.stderr
    assert "bound at its next start" in r.stdout
    r = hsd.hsctl("pci", "attach", "g2", "10de:1b80#1", "--one-function")
    assert r.returncode == 0, r.stderr
    spec = hsd.vm("g2")["spec"]
    assert spec["hostdevs"] == [
        {"address": "0000:01:00.0", "x_vga": True, "rom_bar": False},
        {"id": "10de:1b80", "index": 1, "all_functions": False},
    ]
    info = hsd.hsctl("info", "g2", check=True).stdout
    assert "Host PCI 0:  0000:01:00.0, x-vga" in info, info
    assert "Host PCI 1:  10de:1b80 #1, one function" in info, info
    # The same device twice, a second VGA, bad input: refused, spec kept.
    r = hsd.hsctl("pci", "attach", "g2", "0000:01:00.0")
    assert r.returncode == 1 and "already given" in r.stderr, r.stderr
    r = hsd.hsctl("pci", "attach", "g2", "02:00.0", "--x-vga")
    assert r.returncode == 1 and "only one" in r.stderr, r.stderr
    st, js, _ = hsd.request("POST", "/v1/vms/g2/hostdevs", {"address": "zz"})
    assert st == 400 and "address" in js["error"]["message"], js
    st, js, _ = hsd.request("POST", "/v1/vms/g2/hostdevs", {"address": "01:00.0", "foo": 1})
    assert st == 400 and "unknown field 'foo'" in js["error"]["message"], js
    r = hsd.hsctl("pci", "attach", "g2", "nonsense")
    assert r.returncode == 2
    assert len(hsd.vm("g2")["spec"]["hostdevs"]) == 2
    # Detach by address; unknown ones are 404.
    r = hsd.hsctl("pci", "detach", "g2", "01:00.0")
    assert r.returncode == 0, r.stderr
    assert hsd.vm("g2")["spec"]["hostdevs"] == [
        {"id": "10de:1b80", "index": 1, "all_functions": False}]
    st, js, _ = hsd.request("DELETE", "/v1/vms/g2/hostdevs/0000:05:00.0")
    assert st == 404, js
    st, js, _ = hsd.request("GET", "/v1/vms/g2/hostdevs")
    assert st == 405, js
    # Kept across an hsd restart (stored spec).
    hsd.stop()
    hsd.start()
    assert hsd.vm("g2")["spec"]["hostdevs"][0]["id"] == "10de:1b80"


def test_migration_refused_with_hostdevs(hsd, guest):
    """A VM with host devices never migrates (the incoming side refuses a
    spec with them too)."""
    spec = {"name": "g3", "memory_mib": 64, "accel": "tcg", "kernel": guest["kernel"],
            "hostdevs": [{"address": "0000:00:03.0"}]}
    st, js, _ = hsd.request("POST", "/v1/migrations/incoming", {"spec": spec, "address": "127.0.0.1"})
    assert st == 400 and "hostdevs" in js["error"]["message"], js


def test_release_unknown(hsd):
    st, js, _ = hsd.request("POST", "/v1/pci/0000:00:03.0/release")
    assert st == 404 and "not held" in js["error"]["message"], js
    st, js, _ = hsd.request("POST", "/v1/pci/bogus/release")
    assert st == 400, js
    r = hsd.hsctl("pci", "release", "0000:00:03.0")
    assert r.returncode == 1 and "not held by any VM" in r.stderr
