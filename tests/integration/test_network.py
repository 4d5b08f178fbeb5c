# SPDX-License-Identifier: Apache-2.0
"""Networking on this host's kernel (docs/networking-spec.md): networks
(hsd-made and existing bridges, macvtap), NICs with ids, stable MACs,
multiqueue taps, link state, hot-plug and unplug, the refusals, and the
CLI. Each test runs its hsd inside a network namespace of its own
(netlib.py), so bridges, taps and addresses exist only there.

This kernel has no bridge VLAN filtering, no 8021q and no vhost-net:
here their refusals are tested; VLANs and vhost-net working are
test_net_guest.py's (inside a guest whose kernel has them)."""
import json
import re

import pytest

import netlib as nl
from conftest import wait_for

# The namespaces' own subnet: nothing of it leaves them.
NET = "10.77.0"
HOST_ADDR = f"{NET}.1"


@pytest.fixture
def namespaces():
    ns = nl.Namespaces()
    yield ns
    ns.cleanup()


@pytest.fixture
def host(namespaces, hsd_factory):
    """An hsd inside a fresh namespace (.ns). Fixture order: the namespace
    is deleted after hsd_factory has killed hsd and its QEMUs."""
    ns = namespaces.make()
    h = nl.start_hsd_in(hsd_factory, ns)
    yield h
    h.remember_qemu_pids()


def make_lan(h, name="lan"):
    """An hsd-made bridge network with HOST_ADDR on the bridge."""
    net = h.json("POST", "/v1/networks", {"name": name, "type": "bridge", "create": True},
                 expect=(201,))
    br = net["bridge"]
    assert br == f"hsbr-{name}"[:15], net
    assert nl.link_exists(h.ns, br)
    nl.ip("addr", "add", f"{HOST_ADDR}/24", "dev", br, ns=h.ns)
    return br


def link_lost(carrier_operstate):
    carrier, oper = carrier_operstate
    return carrier == "0" or oper == "down"


def legacy_bridge(h, name="br0"):
    nl.ip("link", "add", name, "type", "bridge", ns=h.ns)
    nl.ip("link", "set", name, "up", ns=h.ns)
    return name


# ---------------------------------------------------------------- today

def test_harness_legacy_bridge_nics(host, guest):
    """What works before the networking API: a NIC into an existing bridge
    (ip link add br0 type bridge, in the namespace). Two guests with
    static addresses ping each other and the bridge's own address."""
    br = legacy_bridge(host)
    nl.ip("addr", "add", f"{HOST_ADDR}/24", "dev", br, ns=host.ns)
    nic = [{"type": "bridge", "bridge": br}]
    nl.boot_many(host, guest, [("g1", nic), ("g2", nic)])
    assert len(nl.bridge_ports(host.ns, br)) == 2, nl.bridge_ports(host.ns, br)
    nl.guest_addr(host, "g1", f"{NET}.11")
    nl.guest_addr(host, "g2", f"{NET}.12")
    assert nl.guest_ping(host, "g1", f"{NET}.12")
    assert nl.guest_ping(host, "g2", HOST_ADDR)
    nl.ns_ping(host.ns, f"{NET}.11")
    # The guest's MAC is its spec's.
    mac = host.vm("g1")["spec"]["nics"][0]["mac"]
    assert nl.guest_mac(host, "g1") == mac
    # A stopped VM's taps are gone (the tap dies with QEMU's fd).
    nl.stop_vm(host, "g1")
    wait_for(lambda: len(nl.bridge_ports(host.ns, br)) == 1, 10, "g1's tap to go")


def test_harness_unknown_bridge(host, guest):
    nl.create_vm(host, guest, "nob", [{"type": "bridge", "bridge": "nosuchbr"}])
    st, code, msg = nl.api_error(host, "POST", "/v1/vms/nob/start")
    assert (st, code) == (409, "unknown-bridge"), (st, code, msg)
    assert "nosuchbr" in msg
    assert host.state("nob") in ("defined", "stopped")


# ------------------------------------------------- the networking API

def test_created_bridge_two_guests_and_host(host, guest):
    br = make_lan(host)
    net = host.json("GET", "/v1/networks/lan")
    assert net["type"] == "bridge" and net["create"] is True and net["present"] is True, net
    assert net["ports"] == [], net
    assert nl.sysfs(host.ns, f"/sys/class/net/{br}/operstate") in ("up", "unknown", "down")
    assert int(nl.sysfs(host.ns, f"/sys/class/net/{br}/flags"), 16) & 1, "bridge not up"
    assert [n["name"] for n in host.json("GET", "/v1/networks")["networks"]] == ["lan"]

    nl.boot_many(host, guest, [("g1", [{"network": "lan"}]), ("g2", [{"network": "lan"}])])
    n1, n2 = nl.nics_of(host, "g1"), nl.nics_of(host, "g2")
    assert [n["id"] for n in n1] == ["net0"] and n1[0]["network"] == "lan", n1
    taps = {n1[0]["interface"], n2[0]["interface"]}
    assert set(nl.bridge_ports(host.ns, br)) == taps
    ports = host.json("GET", "/v1/networks/lan")["ports"]
    assert sorted((p["vm"], p["nic"], p["interface"]) for p in ports) == sorted(
        [("g1", "net0", n1[0]["interface"]), ("g2", "net0", n2[0]["interface"])]), ports

    nl.guest_addr(host, "g1", f"{NET}.11")
    nl.guest_addr(host, "g2", f"{NET}.12")
    assert nl.guest_ping(host, "g1", f"{NET}.12")
    assert nl.guest_ping(host, "g2", f"{NET}.11")
    assert nl.guest_ping(host, "g1", HOST_ADDR)
    nl.ns_ping(host.ns, f"{NET}.12")


def test_multiqueue(host, guest):
    make_lan(host)
    nl.boot(host, guest, "mq", [{"network": "lan", "queues": 2}], cpus=2)
    nic = nl.nics_of(host, "mq")[0]
    assert nic["queues_active"] == 2, nic
    flags = nl.tun_flags(host.ns, nic["interface"])
    assert flags is not None and flags & nl.IFF_MULTI_QUEUE, hex(flags or 0)
    dev = nl.qemu_device(host, "mq", "net0")
    assert dev and str(dev.get("mq")) in ("on", "True") and str(dev.get("vectors")) == "6", dev
    assert dev.get("netdev") == "hs-net0", dev
    q = nl.guest_value(host, "mq", "ls /sys/class/net/eth0/queues").split()
    assert sorted(q) == ["rx-0", "rx-1", "tx-0", "tx-1"], q
    # queues absent: one per vCPU; 1: single queue, no IFF_MULTI_QUEUE needed.
    nl.boot(host, guest, "sq", [{"network": "lan", "queues": 1}], cpus=2)
    nic = nl.nics_of(host, "sq")[0]
    assert nic["queues_active"] == 1, nic
    q = nl.guest_value(host, "sq", "ls /sys/class/net/eth0/queues").split()
    assert sorted(q) == ["rx-0", "tx-0"], q
    nl.create_vm(host, guest, "dq", [{"network": "lan"}], cpus=2)
    nl.start_vm(host, "dq")
    assert nl.nics_of(host, "dq")[0]["queues_active"] == 2


def test_mac_stable_and_taps_gone(host, guest):
    br = make_lan(host)
    nl.create_vm(host, guest, "m1", [{"network": "lan"}])
    nl.create_vm(host, guest, "m2", [{"network": "lan"}, {"network": "lan"}])
    mac1 = host.vm("m1")["spec"]["nics"][0]["mac"]
    macs2 = [n["mac"] for n in host.vm("m2")["spec"]["nics"]]
    assert [n["id"] for n in host.vm("m2")["spec"]["nics"]] == ["net0", "net1"]
    for m in (mac1, *macs2):
        assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m), m
    assert len({mac1, *macs2}) == 3, (mac1, macs2)

    # The console ring still holds the last boot's lines: wait for new ones.
    nl.start_vm(host, "m1")
    host.console_wait("m1", "HS-GUEST-READY", timeout=120, replay=False)
    assert nl.guest_mac(host, "m1") == mac1
    tap = nl.nics_of(host, "m1")[0]["interface"]
    assert nl.link_exists(host.ns, tap)
    assert tap in nl.bridge_ports(host.ns, br)

    # A VM restart keeps the MAC; the tap of the old QEMU is gone.
    nl.stop_vm(host, "m1")
    wait_for(lambda: not nl.link_exists(host.ns, tap), 10, f"{tap} to go at stop")
    assert "interface" not in nl.nics_of(host, "m1")[0]
    assert host.json("GET", "/v1/networks/lan")["ports"] == []
    assert host.vm("m1")["spec"]["nics"][0]["mac"] == mac1
    # The console ring still holds the last boot's lines: wait for new ones.
    nl.start_vm(host, "m1")
    host.console_wait("m1", "HS-GUEST-READY", timeout=120, replay=False)
    assert nl.guest_mac(host, "m1") == mac1

    # An hsd restart keeps it too (the running VM's and the spec's).
    host.stop()
    host.start()
    wait_for(lambda: host.vm("m1").get("qmp_connected"), 15, "m1 re-adopted")
    nic = nl.nics_of(host, "m1")[0]
    assert (nic["id"], nic["mac"]) == ("net0", mac1), nic
    assert nl.link_exists(host.ns, nic["interface"])
    assert [n["mac"] for n in host.vm("m2")["spec"]["nics"]] == macs2
    nl.stop_vm(host, "m1")
    # The console ring still holds the last boot's lines: wait for new ones.
    nl.start_vm(host, "m1")
    host.console_wait("m1", "HS-GUEST-READY", timeout=120, replay=False)
    assert nl.guest_mac(host, "m1") == mac1


def test_link_down_up(host, guest):
    make_lan(host)
    nl.boot(host, guest, "ln", [{"network": "lan"}])
    nl.guest_addr(host, "ln", f"{NET}.21")
    assert nl.guest_ping(host, "ln", HOST_ADDR)

    nic = host.json("PATCH", "/v1/vms/ln/nics/net0", {"link": "down"})
    assert nic["link"] == "down", nic
    assert nl.nic_of(host, "ln", "net0")["link"] == "down"
    wait_for(lambda: link_lost(nl.guest_carrier(host, "ln")), 30, "the guest to lose carrier")
    assert not nl.guest_ping(host, "ln", HOST_ADDR, tries=2)
    assert not nl.ns_ping_once(host.ns, f"{NET}.21")

    host.json("PATCH", "/v1/vms/ln/nics/net0", {"link": "up"})
    wait_for(lambda: nl.guest_carrier(host, "ln") == ("1", "up"), 30, "carrier back")
    assert nl.guest_ping(host, "ln", HOST_ADDR)
    # The link state is the spec's: a stopped VM keeps it.
    host.json("PATCH", "/v1/vms/ln/nics/net0", {"link": "down"})
    nl.stop_vm(host, "ln")
    assert host.vm("ln")["spec"]["nics"][0].get("link") == "down"


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_hotplug_unplug(host, guest, machine):
    br = make_lan(host)
    extra = {"machine": machine}
    if machine == "q35":
        extra["hotplug_ports"] = 1
    # eth0 stays without an address: only the hot-plugged NIC has one.
    nl.boot(host, guest, "hp", [{"network": "lan"}], **extra)
    nic = host.json("POST", "/v1/vms/hp/nics", {"network": "lan"}, expect=(201,))
    assert nic["id"] == "net1" and nic.get("interface"), nic
    assert nic["interface"] in nl.bridge_ports(host.ns, br)
    assert [n["id"] for n in host.vm("hp")["spec"]["nics"]] == ["net0", "net1"]
    nl.guest_wait(host, "hp", "cat /sys/class/net/eth1/address", nic["mac"], timeout=60,
                  what="eth1 to appear")
    nl.guest_addr(host, "hp", f"{NET}.31", dev="eth1")
    assert nl.guest_ping(host, "hp", HOST_ADDR)

    if machine == "q35":
        st, code, msg = nl.api_error(host, "POST", "/v1/vms/hp/nics", {"network": "lan"})
        assert (st, code) == (507, "no-free-slot"), (st, code, msg)
        assert [n["id"] for n in host.vm("hp")["spec"]["nics"]] == ["net0", "net1"]

    st, _, text = host.request("DELETE", "/v1/vms/hp/nics/net1", timeout=30)
    assert st in (200, 202), (st, text)
    wait_for(lambda: nl.nic_of(host, "hp", "net1") is None, 30, "net1 to be detached")
    nl.guest_wait(host, "hp", "ls /sys/class/net/ | grep -c eth1", "0", timeout=60,
                  what="eth1 to go")
    wait_for(lambda: not nl.link_exists(host.ns, nic["interface"]), 10, "the tap to go")
    assert [n["id"] for n in host.vm("hp")["spec"]["nics"]] == ["net0"]
    assert host.state("hp") == "running"


def test_stopped_vm_nic_changes(host, guest):
    make_lan(host)
    nl.create_vm(host, guest, "st", [])
    nic = host.json("POST", "/v1/vms/st/nics", {"network": "lan"}, expect=(201,))
    assert nic["id"] == "net0" and "interface" not in nic, nic
    nic = host.json("POST", "/v1/vms/st/nics", {"id": "uplink", "network": "lan",
                                                "model": "e1000"}, expect=(201,))
    assert nic["id"] == "uplink" and nic["model"] == "e1000", nic
    st, code, msg = nl.api_error(host, "POST", "/v1/vms/st/nics", {"id": "uplink",
                                                                   "network": "lan"})
    assert st in (400, 409), (st, code, msg)
    host.json("PATCH", "/v1/vms/st/nics/uplink", {"link": "down"})
    assert [n.get("link", "up") for n in host.vm("st")["spec"]["nics"]] == ["up", "down"]
    st, _, _ = host.request("DELETE", "/v1/vms/st/nics/net0")
    assert st == 200
    assert [n["id"] for n in host.vm("st")["spec"]["nics"]] == ["uplink"]
    st, code, _ = nl.api_error(host, "DELETE", "/v1/vms/st/nics/net0")
    assert st == 404, (st, code)
    # A type that disagrees with the network's.
    st, code, msg = nl.api_error(host, "POST", "/v1/vms/st/nics",
                                 {"type": "macvtap", "network": "lan"})
    assert st == 400, (st, code, msg)


def test_macvtap_on_veth(host, guest, namespaces):
    """A macvtap network on a veth whose peer (with an address) is in
    another namespace: the guest reaches the peer."""
    other = namespaces.make()
    nl.add_veth_pair(host.ns, "hsmvp0", other, "hsmvq0", f"{NET}.1/24")
    st, code, msg = nl.api_error(host, "POST", "/v1/networks",
                                 {"name": "nope", "type": "macvtap", "parent": "nosuch0"})
    assert (st, code) == (404, "unknown-interface"), (st, code, msg)
    net = host.json("POST", "/v1/networks", {"name": "direct", "type": "macvtap",
                                             "parent": "hsmvp0"}, expect=(201,))
    assert net.get("mode", "bridge") == "bridge", net
    nl.boot_many(host, guest, [("mv1", [{"network": "direct"}]),
                               ("mv2", [{"network": "direct"}])])
    nic = nl.nics_of(host, "mv1")[0]
    assert nic.get("type", "macvtap") == "macvtap" and nic.get("interface"), nic
    assert nl.link_exists(host.ns, nic["interface"])
    ports = host.json("GET", "/v1/networks/direct")["ports"]
    assert sorted(p["vm"] for p in ports) == ["mv1", "mv2"], ports
    assert nl.guest_mac(host, "mv1") == nic["mac"]
    nl.guest_addr(host, "mv1", f"{NET}.41")
    nl.guest_addr(host, "mv2", f"{NET}.42")
    assert nl.guest_ping(host, "mv1", f"{NET}.1")      # the veth's peer
    assert nl.guest_ping(host, "mv2", f"{NET}.41")     # the bridge-mode neighbour
    nl.stop_vm(host, "mv1")
    wait_for(lambda: not nl.link_exists(host.ns, nic["interface"]), 10, "the macvtap to go")


def test_refusals(host, guest):
    br = legacy_bridge(host)
    st, code, msg = nl.api_error(host, "POST", "/v1/networks",
                                 {"name": "ghost", "type": "bridge", "bridge": "nosuchbr"})
    assert (st, code) == (404, "unknown-bridge"), (st, code, msg)
    host.json("POST", "/v1/networks", {"name": "plain", "type": "bridge", "bridge": br},
              expect=(201,))
    st, code, _ = nl.api_error(host, "POST", "/v1/networks",
                               {"name": "plain", "type": "bridge", "bridge": br})
    assert (st, code) == (409, "exists"), (st, code)
    st, code, _ = nl.api_error(host, "POST", "/v1/networks",
                               {"name": "mine", "type": "bridge", "bridge": br, "create": True})
    assert (st, code) == (409, "exists"), (st, code)
    st, code, _ = nl.api_error(host, "POST", "/v1/networks", {"name": "Bad!", "type": "bridge",
                                                              "create": True})
    assert st == 400, (st, code)
    net = host.json("GET", "/v1/networks/plain")
    assert net["present"] is True and net["create"] is False, net
    assert net["vlan_filtering"] is False, net  # this kernel has no VLAN filtering at all

    # VLAN on a bridge that does not filter.
    nl.create_vm(host, guest, "vl", [{"network": "plain", "vlan": 10}])
    st, code, msg = nl.api_error(host, "POST", "/v1/vms/vl/start")
    assert (st, code) == (409, "vlan-filtering-off"), (st, code, msg)
    assert f"ip link set {br} type bridge vlan_filtering 1" in msg, msg
    assert host.state("vl") in ("defined", "stopped")
    assert nl.bridge_ports(host.ns, br) == []

    # vhost required where there is no /dev/vhost-net.
    if not nl.host_has_vhost_net():
        nl.create_vm(host, guest, "vh", [{"network": "plain", "vhost": True}])
        st, code, msg = nl.api_error(host, "POST", "/v1/vms/vh/start")
        assert (st, code) == (409, "no-vhost"), (st, code, msg)
        assert "vhost" in msg
    # vhost absent: runs without, and says so.
    nl.create_vm(host, guest, "nv", [{"network": "plain"}])
    nl.start_vm(host, "nv")
    nic = nl.nics_of(host, "nv")[0]
    assert nic["vhost_active"] is nl.host_has_vhost_net(), nic
    state = host.vm("nv").get("nics_state")
    assert state and state[0]["vhost"] is nl.host_has_vhost_net(), host.vm("nv")
    if not nl.host_has_vhost_net():
        assert not any("vhost=on" in a for a in nl.qemu_argv(host, "nv"))

    # A MAC that another VM has.
    mac = "52:54:00:12:34:56"
    nl.create_vm(host, guest, "ma", [{"network": "plain", "mac": mac}])
    st, code, msg = nl.api_error(host, "POST", "/v1/vms",
                                 nl.vm_spec(guest, "mb", [{"network": "plain", "mac": mac}]))
    assert (st, code) == (409, "mac-in-use"), (st, code, msg)
    assert "ma" in msg, msg
    st, code, msg = nl.api_error(host, "POST", "/v1/vms/nv/nics",
                                 {"network": "plain", "mac": mac.upper()})
    assert (st, code) == (409, "mac-in-use"), (st, code, msg)

    # A network in use is not deleted; its VMs are named.
    st, code, msg = nl.api_error(host, "DELETE", "/v1/networks/plain")
    assert (st, code) == (409, "in-use"), (st, code, msg)
    for vm in ("nv", "ma"):
        assert vm in msg, msg
    st, code, _ = nl.api_error(host, "DELETE", "/v1/networks/nosuch")
    assert st == 404, (st, code)
    for vm in ("vl", "vh", "ma"):
        host.request("DELETE", f"/v1/vms/{vm}")
    nl.stop_vm(host, "nv")
    host.json("DELETE", "/v1/vms/nv", expect=(200, 204))
    st, _, text = host.request("DELETE", "/v1/networks/plain")
    assert st == 200, text
    assert nl.link_exists(host.ns, br), "an existing bridge is not hsd's to delete"


def test_vlan_filtering_bridge_refused_on_this_kernel(host):
    if nl.kernel_has_vlan_filtering(host.ns):
        pytest.skip("this kernel filters VLANs: test_net_guest.py's case")
    st, code, msg = nl.api_error(host, "POST", "/v1/networks",
                                 {"name": "vf", "type": "bridge", "create": True,
                                  "vlan_filtering": True})
    assert 400 <= st < 600 and st != 201, (st, code, msg)
    # It says what is missing: the kernel's VLAN filtering.
    assert re.search(r"vlan.?filtering", msg, re.I), msg
    assert re.search(r"kernel|not supported|unsupported", msg, re.I), msg
    assert not nl.link_exists(host.ns, "hsbr-vf"), "a half-made bridge was left"
    st, _, _ = nl.api_error(host, "GET", "/v1/networks/vf")
    assert st == 404
    # vlan_filtering without create is refused (an existing bridge's is read).
    br = legacy_bridge(host)
    st, code, msg = nl.api_error(host, "POST", "/v1/networks",
                                 {"name": "vf2", "type": "bridge", "bridge": br,
                                  "vlan_filtering": True})
    assert st == 400, (st, code, msg)


def test_created_bridge_lifecycle(host):
    br = make_lan(host)
    # Gone behind hsd's back (a host reboot): re-made when hsd starts.
    host.stop()
    nl.ip("link", "del", br, ns=host.ns)
    host.start()
    wait_for(lambda: nl.link_exists(host.ns, br), 10, f"{br} re-created")
    assert host.json("GET", "/v1/networks/lan")["present"] is True
    st, _, text = host.request("DELETE", "/v1/networks/lan")
    assert st == 200, text
    wait_for(lambda: not nl.link_exists(host.ns, br), 10, f"{br} deleted with its network")
    assert host.json("GET", "/v1/networks")["networks"] == []
    assert not (host.state_dir / "networks" / "lan.json").exists()


def test_cli_network_and_nic(host, guest):
    r = host.hsctl("network", "create", "lan", "--create")
    assert r.returncode == 0, r.stderr
    assert nl.link_exists(host.ns, "hsbr-lan")
    legacy_bridge(host, "br9")
    host.hsctl("network", "create", "up", "--bridge", "br9", check=True)
    out = host.hsctl("network", "list", check=True).stdout
    assert re.search(r"^lan\b.*hsbr-lan", out, re.M) and re.search(r"^up\b.*br9", out, re.M), out
    out = host.hsctl("network", "show", "lan", check=True).stdout
    assert "hsbr-lan" in out, out
    r = host.hsctl("network", "create", "bad", "--bridge", "nosuchbr")
    assert r.returncode != 0 and ("nosuchbr" in r.stderr or "unknown-bridge" in r.stderr), r.stderr

    r = host.hsctl("create", "c1", "--memory", "128", "--accel", "tcg", "--kernel",
                   guest["kernel"], "--initrd", guest["initrd"], "--append", "console=ttyS0",
                   "--nic", "network:lan,mac=52:54:00:aa:bb:01,queues=1")
    assert r.returncode == 0, r.stderr
    nics = host.vm("c1")["spec"]["nics"]
    assert len(nics) == 1 and nics[0]["network"] == "lan" and nics[0]["mac"] == "52:54:00:aa:bb:01"
    assert nics[0]["queues"] == 1, nics
    r = host.hsctl("nic", "add", "c1", "--network", "up", "--link-down", "--model", "e1000")
    assert r.returncode == 0, r.stderr
    out = host.hsctl("nic", "list", "c1", check=True).stdout
    assert "net0" in out and "net1" in out and "52:54:00:aa:bb:01" in out, out
    host.hsctl("nic", "set", "c1", "net1", "--link", "up", check=True)
    assert host.vm("c1")["spec"]["nics"][1].get("link", "up") == "up"
    r = host.hsctl("network", "delete", "up")
    assert r.returncode != 0 and "c1" in r.stderr, r.stderr
    host.hsctl("nic", "del", "c1", "net1", check=True)
    assert [n["id"] for n in host.vm("c1")["spec"]["nics"]] == ["net0"]
    host.hsctl("network", "delete", "up", check=True)

    # Running: nic list shows the tap.
    host.hsctl("start", "c1", check=True)
    out = host.hsctl("nic", "list", "c1", check=True).stdout
    tap = nl.nics_of(host, "c1")[0]["interface"]
    assert tap in out, out
    assert host.hsctl("network", "list", check=True).stdout.count("\n") >= 1
