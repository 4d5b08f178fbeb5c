# SPDX-License-Identifier: Apache-2.0
"""SR-IOV on a fake sysfs tree (this machine has no SR-IOV NIC, and QEMU 7.2
emulates none): hsd with --sysfs-root lists physical functions and their
virtual functions, sets sriov_numvfs, makes sriov networks, and at a VM's
start picks a free VF for each VF NIC; binding it needs an IOMMU, which the
fake tree lacks, so the start ends in the no-iommu refusal with nothing
claimed. The VF's MAC and VLAN through netlink are net/nl.c's (unit tests);
VFIO binding on a real IOMMU is test_vfio.py's."""
import os

import pytest

PF = "0000:01:00.0"
VFS = ["0000:01:10.0", "0000:01:10.1", "0000:01:10.2"]


def link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def pci_dev(root, addr, driver=None, netdev=None):
    d = root / "sys/bus/pci/devices" / addr
    d.mkdir(parents=True, exist_ok=True)
    (d / "vendor").write_text("0x8086\n")
    (d / "device").write_text("0x1592\n")
    (d / "class").write_text("0x020000\n")
    if driver:
        (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        link(d / "driver", f"../../../../bus/pci/drivers/{driver}")
    if netdev:
        (d / "net" / netdev).mkdir(parents=True)
        link(root / "sys/class/net" / netdev / "device", f"../../../bus/pci/devices/{addr}")
    return d


@pytest.fixture
def sysroot(tmp_path):
    root = tmp_path / "sysroot"
    (root / "proc").mkdir(parents=True)
    (root / "proc/meminfo").write_text(f"MemTotal: {8 << 20} kB\nMemFree: {6 << 20} kB\n"
                                       f"MemAvailable: {6 << 20} kB\n")
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text("0-1\n")
    pf = pci_dev(root, PF, "ice", "eth1")
    (pf / "sriov_totalvfs").write_text("4\n")
    (pf / "sriov_numvfs").write_text("3\n")
    for i, (a, drv) in enumerate(zip(VFS, ["iavf", None, "vfio-pci"])):
        pci_dev(root, a, drv, "eth5" if drv == "iavf" else None)
        link(root / "sys/bus/pci/devices" / a / "physfn", f"../{PF}")
        link(pf / f"virtfn{i}", f"../{a}")
    pci_dev(root, "0000:00:19.0", "e1000e", "eth0")
    return root


@pytest.fixture
def h(hsd_factory, sysroot):
    return hsd_factory(extra_args=["--sysfs-root", str(sysroot)])


def test_list_and_numvfs(h, sysroot):
    js = h.json("GET", "/v1/sriov")
    assert [p["name"] for p in js["pfs"]] == ["eth1"]  # eth0 has no SR-IOV
    pf = js["pfs"][0]
    assert (pf["address"], pf["totalvfs"], pf["numvfs"]) == (PF, 4, 3)
    assert [(v["index"], v["address"], v.get("driver")) for v in pf["vfs"]] == [
        (0, VFS[0], "iavf"), (1, VFS[1], None), (2, VFS[2], "vfio-pci")]
    assert pf["vfs"][0]["netdev"] == "eth5"
    assert h.json("GET", "/v1/sriov/eth1")["numvfs"] == 3

    js = h.json("PUT", "/v1/sriov/eth1", {"numvfs": 2})
    assert (sysroot / f"sys/bus/pci/devices/{PF}/sriov_numvfs").read_text().strip() == "2"
    assert js["numvfs"] == 2
    st, js, _ = h.request("PUT", "/v1/sriov/eth1", {"numvfs": 5})
    assert st == 400 and js["error"]["code"] == "invalid", js
    assert "4" in js["error"]["message"]
    st, js, _ = h.request("PUT", "/v1/sriov/eth1", {"numvfs": "2"})
    assert st == 400, js
    st, js, _ = h.request("PUT", "/v1/sriov/eth0", {"numvfs": 1})
    assert st == 409 and js["error"]["code"] == "not-sriov", js
    st, js, _ = h.request("GET", "/v1/sriov/eth9")
    assert st == 404, js

    out = h.hsctl("sriov", "list", check=True).stdout
    assert "eth1" in out and VFS[0] in out, out
    r = h.hsctl("sriov", "set", "eth1", "--numvfs", "3")
    assert r.returncode == 0, r.stderr
    assert (sysroot / f"sys/bus/pci/devices/{PF}/sriov_numvfs").read_text().strip() == "3"


def test_sriov_network_and_vf_nic(h, sysroot, guest):
    st, js, _ = h.request("POST", "/v1/networks", {"name": "fast", "type": "sriov", "pf": "eth0"})
    assert st == 409 and js["error"]["code"] == "not-sriov", js
    st, js, _ = h.request("POST", "/v1/networks", {"name": "fast", "type": "sriov", "pf": "eth7"})
    assert st == 404 and js["error"]["code"] == "unknown-interface", js
    js = h.json("POST", "/v1/networks", {"name": "fast", "type": "sriov", "pf": "eth1"})
    assert js["type"] == "sriov" and js["pf"] == "eth1" and js["present"] is True

    h.create_guest(guest, "v", extra=["--nic", "network:fast,vlan=7,mac=52:54:00:aa:00:01"])
    nics = h.json("GET", "/v1/vms/v/nics")["nics"]
    assert len(nics) == 1 and nics[0]["type"] == "vf" and nics[0]["vlan"] == 7, nics
    st, js, _ = h.request("POST", "/v1/vms", {"name": "w", "kernel": guest["kernel"],
                                               "nics": [{"network": "fast", "queues": 2}]})
    assert st == 400 and "queues" in js["error"]["message"], js

    # A VF is picked (the log says which), then the binding needs an IOMMU.
    st, js, _ = h.request("POST", "/v1/vms/v/start")
    assert st == 409 and js["error"]["code"] == "no-iommu", js
    assert h.state("v") == "defined"
    assert not list((h.state_dir / "pci").iterdir())  # nothing claimed
    # One the host's VF driver does not hold goes first.
    assert f"gets VF 1 of eth1 ({VFS[1]})" in h.log_text()

    # No VF enabled: the start says so (before anything else).
    pf = sysroot / f"sys/bus/pci/devices/{PF}"
    for i in range(3):
        (pf / f"virtfn{i}").unlink()
    (pf / "sriov_numvfs").write_text("0\n")
    st, js, _ = h.request("POST", "/v1/vms/v/start")
    assert st == 409 and js["error"]["code"] == "no-free-vf", js
    assert "hsctl sriov set eth1 --numvfs" in js["error"]["message"]

    # The network is in use while a VM's spec names it.
    st, js, _ = h.request("DELETE", "/v1/networks/fast")
    assert st == 409 and js["error"]["code"] == "in-use" and "v" in js["error"]["message"]
    h.json("DELETE", "/v1/vms/v")
    h.json("DELETE", "/v1/networks/fast")


def test_vf_hotplug_refused(h, guest):
    h.json("POST", "/v1/networks", {"name": "fast", "type": "sriov", "pf": "eth1"})
    h.create_guest(guest, "r", extra=["--nic", "none"])
    r = h.hsctl("start", "r")
    assert r.returncode == 0, r.stderr
    st, js, _ = h.request("POST", "/v1/vms/r/nics", {"network": "fast"})
    assert st == 501 and js["error"]["code"] == "unsupported", js
    assert h.json("GET", "/v1/vms/r/nics")["nics"] == []
    h.hsctl("kill", "r", check=True)
