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
