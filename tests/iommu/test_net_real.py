# SPDX-License-Identifier: Apache-2.0
"""Networking where the kernel has what this host's lacks: bridge VLAN
filtering and vhost-net (docs/networking-spec.md).

These tests run INSIDE the IOMMU guest (Debian's cloud kernel, with tun,
bridge, vhost_net and macvtap loaded by its /init), started by
tests/integration/test_net_guest.py, which builds that guest with the
extra modules in a cache of its own. The real hsd, hsctl and QEMU run
there. Test guests boot nested (TCG in TCG: about 6 minutes each on a
loaded 2-core host), so the tests check the data path without booting
them (a frame sent into the bridge, seen leaving or not through each
VM's tap); test_booted_guests_vlan_ping, the same with two booted
guests pinging, runs only with HS_NET_NESTED_BOOT=1. On a machine
without /dev/vhost-net or VLAN filtering they skip.

Each test runs its hsd in a network namespace of its own (netlib.py)."""
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import netlib as nl  # noqa: E402
from conftest import guest, hsd_factory, wait_for, _binaries  # noqa: E402,F401

NET = "10.77.0"
# Nested TCG: a guest's boot and each console round trip are slow.
BOOT_TIMEOUT = 900
CMDLINE = "quiet"


@pytest.fixture(scope="module")
def kernel_ok():
    if not nl.host_has_vhost_net():
        pytest.skip("no /dev/vhost-net (modprobe vhost_net): run through "
                    "tests/integration/test_net_guest.py")
    ns = nl.Namespaces()
    try:
        ok = nl.kernel_has_vlan_filtering(ns.make())
    finally:
        ns.cleanup()
    if not ok:
        pytest.skip("this kernel's bridges cannot filter VLANs: run through "
                    "tests/integration/test_net_guest.py")


@pytest.fixture
def host(kernel_ok, hsd_factory):
    ns = nl.Namespaces()
    h = nl.start_hsd_in(hsd_factory, ns.make())
    yield h
    h.remember_qemu_pids()
    # hsd_factory kills hsd and the QEMUs after this: the namespace goes
    # when its last process does; its name now.
    ns.cleanup()


def vlan_of(ns, tap):
    """(pvid, [vlans]) of a bridge port, from `bridge -j vlan show`."""
    r = nl.nsexec(ns, "bridge", "-j", "vlan", "show", "dev", tap, check=True)
    pvid, vlans = None, []
    for port in json.loads(r.stdout or "[]"):
        if port.get("ifname") != tap:
            continue
        for v in port.get("vlans", []):
            vlans.append(v["vlan"])
            if "PVID" in v.get("flags", []):
                pvid = v["vlan"]
    return pvid, sorted(vlans)


def fd_targets(pid):
    """What the process's descriptors are (for failure messages)."""
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd}->{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return " ".join(out) + "\nargv: " + cmd


def vhost_fds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            # The IOMMU guest's root is a pivot: "/newroot/dev/vhost-net".
            n += os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/dev/vhost-net")
        except OSError:
            pass
    return n


def vlan_network(h):
    net = h.json("POST", "/v1/networks", {"name": "vl", "type": "bridge", "create": True,
                                          "vlan_filtering": True}, expect=(201,))
    br = net["bridge"]
    assert nl.sysfs(h.ns, f"/sys/class/net/{br}/bridge/vlan_filtering") == "1"
    assert h.json("GET", "/v1/networks/vl")["vlan_filtering"] is True
    return br


def test_vlan_ports_live_change_and_vhost(host, guest):
    """Two VMs on a VLAN-filtering bridge hsd made, VLANs 10 and 20: the
    taps' PVIDs; a frame from VLAN 10 leaves only through VLAN 10's tap;
    one VM moved to 10 live, it leaves through both. vhost-net is used
    (absent "vhost" = when /dev/vhost-net exists). The guests need not
    boot: the bridge forwards to a tap whether or not its guest reads."""
    br = vlan_network(host)
    for vm, vlan in (("a", 10), ("b", 20)):
        nl.create_vm(host, guest, vm, [{"network": "vl", "vlan": vlan}], append=CMDLINE)
        nl.start_vm(host, vm)
    ta, tb = nl.nics_of(host, "a")[0], nl.nics_of(host, "b")[0]
    assert (ta["vlan"], tb["vlan"]) == (10, 20)
    assert vlan_of(host.ns, ta["interface"]) == (10, [10])
    assert vlan_of(host.ns, tb["interface"]) == (20, [20])
    ports = {p["vm"]: p["vlan"] for p in host.json("GET", "/v1/networks/vl")["ports"]}
    assert ports == {"a": 10, "b": 20}, ports

    # vhost-net: the NIC says so and QEMU holds /dev/vhost-net.
    for vm, nic in (("a", ta), ("b", tb)):
        assert nic["vhost_active"] is True, nic
        pid = host.vm(vm)["pid"]
        assert vhost_fds(pid) >= 1, \
            f"{vm}'s QEMU has no /dev/vhost-net open: {fd_targets(pid)}"
        assert host.vm(vm)["nics_state"][0]["vhost"] is True

    # A probe port of the test's in VLAN 10.
    nl.ip("link", "add", "hsprobe0", "type", "veth", "peer", "name", "hsprobe1", ns=host.ns)
    nl.ip("link", "set", "hsprobe0", "master", br, ns=host.ns)
    for dev in ("hsprobe0", "hsprobe1"):
        nl.ip("link", "set", dev, "up", ns=host.ns)
    nl.nsexec(host.ns, "bridge", "vlan", "del", "dev", "hsprobe0", "vid", "1", check=True)
    nl.nsexec(host.ns, "bridge", "vlan", "add", "dev", "hsprobe0", "vid", "10", "pvid",
              "untagged", check=True)
    taps = [ta["interface"], tb["interface"]]
    seen = nl.frame_reaches(host.ns, "hsprobe1", taps)
    assert seen == {ta["interface"]: True, tb["interface"]: False}, seen

    nic = host.json("PATCH", "/v1/vms/b/nics/net0", {"vlan": 10})
    assert nic["vlan"] == 10, nic
    assert vlan_of(host.ns, tb["interface"]) == (10, [10])
    assert host.vm("b")["spec"]["nics"][0]["vlan"] == 10
    seen = nl.frame_reaches(host.ns, "hsprobe1", taps)
    assert seen == {ta["interface"]: True, tb["interface"]: True}, seen

    # 0 removes the VLAN: the bridge's default PVID (1), away from 10.
    host.json("PATCH", "/v1/vms/b/nics/net0", {"vlan": 0})
    assert host.vm("b")["spec"]["nics"][0].get("vlan") in (None, 0)
    assert vlan_of(host.ns, tb["interface"])[0] in (None, 1)
    seen = nl.frame_reaches(host.ns, "hsprobe1", taps)
    assert seen == {ta["interface"]: True, tb["interface"]: False}, seen
    for vm in ("a", "b"):
        nl.stop_vm(host, vm)


@pytest.mark.skipif(os.environ.get("HS_NET_NESTED_BOOT") != "1",
                    reason="nested boots take minutes: HS_NET_NESTED_BOOT=1 (test_net_guest.py "
                    "deselects this test unless it is set)")
def test_booted_guests_vlan_ping(host, guest):
    """The same with two booted guests (nested TCG: ~6 minutes each on a
    loaded 2-core host): VLANs 10 and 20 cannot ping; moved to 10 live,
    they can."""
    vlan_network(host)
    nl.boot_many(host, guest, [("a", [{"network": "vl", "vlan": 10}]),
                               ("b", [{"network": "vl", "vlan": 20}])],
                 ready_timeout=BOOT_TIMEOUT, append=CMDLINE, memory=128)
    nl.guest_addr(host, "a", f"{NET}.11")
    nl.guest_addr(host, "b", f"{NET}.12")
    assert not nl.guest_ping(host, "a", f"{NET}.12", tries=2), "VLAN 10 reached VLAN 20"
    host.json("PATCH", "/v1/vms/b/nics/net0", {"vlan": 10})
    assert nl.guest_ping(host, "a", f"{NET}.12", tries=15)


def test_vhost_choices(host, guest):
    """vhost false: QEMU has no /dev/vhost-net; true: it has, and starts.
    (The guests need not boot: QEMU opens vhost-net when it makes the
    netdev.)"""
    host.json("POST", "/v1/networks", {"name": "lan", "type": "bridge", "create": True},
              expect=(201,))
    nl.create_vm(host, guest, "off", [{"network": "lan", "vhost": False}], append=CMDLINE)
    nl.create_vm(host, guest, "on", [{"network": "lan", "vhost": True, "queues": 2}], cpus=2,
                 append=CMDLINE)
    try:
        nl.start_vm(host, "off")
        assert nl.nics_of(host, "off")[0]["vhost_active"] is False
        assert vhost_fds(host.vm("off")["pid"]) == 0
        nl.stop_vm(host, "off")
        nl.start_vm(host, "on")
        nic = nl.nics_of(host, "on")[0]
        assert nic["vhost_active"] is True and nic["queues_active"] == 2, nic
        # One vhost-net descriptor per queue pair.
        assert vhost_fds(host.vm("on")["pid"]) == 2
        flags = nl.tun_flags(host.ns, nic["interface"])
        assert flags is not None and flags & nl.IFF_MULTI_QUEUE, hex(flags or 0)
    finally:
        for vm in ("off", "on"):
            if host.state(vm) == "running":
                nl.stop_vm(host, vm)


def test_vlan_on_plain_bridge_refused(host, guest):
    """An existing bridge without filtering, on a kernel that could: the
    NIC's VLAN is refused, with the command that turns filtering on."""
    nl.ip("link", "add", "br0", "type", "bridge", ns=host.ns)
    nl.ip("link", "set", "br0", "up", ns=host.ns)
    host.json("POST", "/v1/networks", {"name": "plain", "type": "bridge", "bridge": "br0"},
              expect=(201,))
    assert host.json("GET", "/v1/networks/plain")["vlan_filtering"] is False
    nl.create_vm(host, guest, "v", [{"network": "plain", "vlan": 30}], append=CMDLINE)
    st, code, msg = nl.api_error(host, "POST", "/v1/vms/v/start")
    assert (st, code) == (409, "vlan-filtering-off"), (st, code, msg)
    assert "ip link set br0 type bridge vlan_filtering 1" in msg, msg
    # Turned on by hand, it works.
    nl.ip("link", "set", "br0", "type", "bridge", "vlan_filtering", "1", ns=host.ns)
    assert host.json("GET", "/v1/networks/plain")["vlan_filtering"] is True
    nl.start_vm(host, "v")
    tap = nl.nics_of(host, "v")[0]["interface"]
    assert vlan_of(host.ns, tap) == (30, [30])
    nl.stop_vm(host, "v")
