# SPDX-License-Identifier: Apache-2.0
"""PCI passthrough on a real kernel with a real IOMMU.

This host has no IOMMU, so these tests run INSIDE a TCG guest with an
emulated one (q35 + intel-iommu), which sees the host's file system: the
real hsd, hsctl, hs-vfio and QEMU run there against the guest's kernel,
its IOMMU groups, its vfio-pci driver and /dev/vfio. They are started by
tests/integration/test_vfio.py (through tests/integration/iommu_guest.py);
run directly on a machine without an IOMMU they skip.

The devices (placed by iommu_guest.py, checked by the layout fixture): a
virtio NIC alone in its IOMMU group (driver virtio-pci), a slot of two
virtio functions sharing one group (a GPU and its audio function, as far
as the host side is concerned), and an unbound device (an e1000e, which
the guest kernel has no driver for)."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import iommu_guest  # noqa: E402
from conftest import (BUILD, HSCTL, Hsd, guest, guest_run, hsd, hsd_factory, kill_pid,  # noqa: E402,F401
                      pid_alive, wait_for, _binaries)

SYS = Path("/sys/bus/pci/devices")
VFIO_TOOL = BUILD / "vfio" / "hs-vfio"

pytestmark = pytest.mark.skipif(
    not Path("/sys/class/iommu").is_dir() or not any(Path("/sys/class/iommu").iterdir()),
    reason="needs a real IOMMU: run through tests/integration/test_vfio.py, which boots a "
    "guest that has one")


def driver(addr):
    p = SYS / addr / "driver"
    return os.path.basename(os.readlink(p)) if p.exists() else None


def group(addr):
    return int(os.path.basename(os.readlink(SYS / addr / "iommu_group")))


def group_members(g):
    return sorted(os.listdir(f"/sys/kernel/iommu_groups/{g}/devices"))


def pci_class(addr):
    return int((SYS / addr / "class").read_text(), 16)


def devices():
    return sorted(os.listdir(SYS))


@pytest.fixture(scope="module")
def layout():
    """The guest's test devices (iommu_guest.py places them), checked."""
    lay = {"lone": iommu_guest.LONE_NIC, "slot": iommu_guest.MF_FN0, "slot1": iommu_guest.MF_FN1,
           "unbound": iommu_guest.E1000E}
    assert driver(lay["lone"]) == "virtio-pci"
    assert group_members(group(lay["lone"])) == [lay["lone"]]
    assert driver(lay["slot"]) == driver(lay["slot1"]) == "virtio-pci"
    assert group_members(group(lay["slot"])) == [lay["slot"], lay["slot1"]]
    assert driver(lay["unbound"]) is None
    return lay


def vfio_devices(h, vm):
    """{device id: (host address, guest devfn)} of the vfio-pci
    devices in the VM's QEMU (QOM: query-pci lists devices behind a root
    port only once the guest's firmware has numbered its bus, which takes
    a while under nested TCG)."""
    def qmp(cmd, **args):
        msg = json.dumps({"execute": cmd, "arguments": args})
        return json.loads(h.hsctl("qmp", vm, msg, check=True).stdout)["return"]
    out = {}
    for p in qmp("qom-list", path="/machine/peripheral"):
        if p["type"] == "child<vfio-pci>":
            path = "/machine/peripheral/" + p["name"]
            out[p["name"]] = (qmp("qom-get", path=path, property="host"),
                              qmp("qom-get", path=path, property="addr"))
    return out


@pytest.fixture(autouse=True)
def devices_restored(layout):
    """Each test starts with the devices on their drivers; one that leaves a
    device elsewhere (its hsd gone before giving it back) fails, and the
    device is put back by hand for the next."""
    yield
    wrong = []
    for key, want in (("lone", "virtio-pci"), ("slot", "virtio-pci"), ("slot1", "virtio-pci"),
                      ("unbound", None)):
        a = layout[key]
        if driver(a) != want:
            wrong.append(f"{a} on {driver(a)}")
            (SYS / a / "driver_override").write_text("\n")
            if driver(a):
                (SYS / a / "driver" / "unbind").write_text(a)
            if want:
                Path("/sys/bus/pci/drivers_probe").write_text(a)
    assert not wrong, "test left devices off their drivers: " + ", ".join(wrong)


def qemu_pid(h, name):
    return h.vm(name)["pid"]


def memlock(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            return int(line.split()[3])
    return None


def vfio_fds(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("/dev/vfio/"):
            out.append(t)
    return sorted(out)


def make_vm(h, guest, name, *hostdevs, machine="q35", extra=(), whole_slot=None):
    args = []
    for d in hostdevs:
        args += ["--hostdev", d]
    r = h.hsctl("create", name, "--memory", "128", "--accel", "tcg", "--machine", machine,
                "--kernel", guest["kernel"], "--initrd", guest["initrd"],
                "--append", "console=ttyS0", "--nic", "none", *args, *extra)
    assert r.returncode == 0, r.stderr
    if whole_slot:
        # A NIC's function 0 is not a GPU: its slot is asked for explicitly.
        r = h.hsctl("pci", "attach", name, whole_slot, "--all-functions")
        assert r.returncode == 0 and "next start" in r.stdout, r.stderr


def start(h, name, timeout=240):
    return h.hsctl("start", name, timeout=timeout)


def test_list_groups_drivers(hsd, layout):
    r = hsd.hsctl("pci", "list", "--json", check=True)
    devs = {d["address"]: d for d in json.loads(r.stdout)["devices"]}
    assert devs[layout["lone"]]["driver"] == "virtio-pci"
    assert devs[layout["lone"]]["iommu_group"] == group(layout["lone"])
    assert devs[layout["slot"]]["slot_functions"] == 2
    assert devs[layout["unbound"]].get("driver") is None
    assert json.loads(r.stdout)["iommu"] is True
    text = hsd.hsctl("pci", "list", check=True).stdout
    assert re.search(rf"^{re.escape(layout['lone'])} .* virtio-pci", text, re.M), text
    host = hsd.hsctl("host", check=True).stdout
    assert "IOMMU:      on" in host, host


def test_passthrough_whole_slot(hsd, guest, layout):
    """A VM takes both functions of a slot: bound to vfio-pci before QEMU
    starts, QEMU holds the group and may lock guest RAM + 1 GiB, the guest
    sees the devices; at stop both go back to virtio-pci."""
    a0, a1 = layout["slot"], layout["slot1"]
    make_vm(hsd, guest, "gpu", whole_slot=a0)
    assert hsd.vm("gpu")["spec"]["hostdevs"] == [{"address": a0, "all_functions": True}]
    r = start(hsd, "gpu")
    assert r.returncode == 0, r.stderr + hsd.log_text()[-3000:]
    assert driver(a0) == "vfio-pci" and driver(a1) == "vfio-pci"
    g = group(a0)
    pid = qemu_pid(hsd, "gpu")
    assert f"/dev/vfio/{g}" in vfio_fds(pid)
    assert memlock(pid) >= (128 << 20) + (1 << 30)
    # QEMU runs as the unprivileged QEMU user: the group node is its own.
    st = os.stat(f"/dev/vfio/{g}")
    assert st.st_uid == os.stat(f"/proc/{pid}").st_uid != 0
    info = hsd.vm("gpu")
    assert sorted(b["address"] for b in info["hostdevs_bound"]) == [a0, a1]
    assert {b["state"] for b in info["hostdevs_bound"]} == {"bound"}
    found = vfio_devices(hsd, "gpu")
    assert sorted(found) == ["hd-" + a0.replace(":", "-"), "hd-" + a1.replace(":", "-")], found
    assert found["hd-" + a0.replace(":", "-")][0] == a0, found
    assert found["hd-" + a1.replace(":", "-")][0] == a1, found
    # One slot in the guest too: functions 0 and 1 (QOM's addr is devfn).
    f0, f1 = found["hd-" + a0.replace(":", "-")][1], found["hd-" + a1.replace(":", "-")][1]
    assert (f0 & 7, f1 & 7) == (0, 1) and f0 >> 3 == f1 >> 3, found
    text = hsd.hsctl("pci", "list", check=True).stdout
    assert re.search(rf"^{re.escape(a0)} .*gpu \(bound, host driver virtio-pci\)", text, re.M), text

    # Another VM cannot take a function of it.
    make_vm(hsd, guest, "thief", a1, extra=())
    r = start(hsd, "thief")
    assert r.returncode == 1
    assert "device-busy" in r.stderr or "held by VM 'gpu'" in r.stderr, r.stderr
    assert "gpu" in r.stderr

    assert hsd.hsctl("stop", "gpu", "--force", timeout=60).returncode == 0
    wait_for(lambda: driver(a0) == "virtio-pci" and driver(a1) == "virtio-pci", 60,
             "the slot back on virtio-pci")
    wait_for(lambda: not hsd.vm("gpu").get("hostdevs_bound"), 30, "the claims to go")
    assert not (hsd.state_dir / "pci" / a0).exists()
    assert not Path(f"/dev/vfio/{g}").exists()
    assert (SYS / a0 / "driver_override").read_text().strip() == "(null)"


def test_refusals(hsd, guest, layout):
    # Half a group: function 1 alone (not function 0 of a display
    # controller, so not the whole slot) while function 0 keeps virtio-pci.
    make_vm(hsd, guest, "half", layout["slot1"])
    r = start(hsd, "half")
    assert r.returncode == 1
    assert "IOMMU group" in r.stderr, r.stderr
    assert f"{layout['slot']} (virtio-pci)" in r.stderr, r.stderr
    assert driver(layout["slot1"]) == "virtio-pci"  # nothing was touched
    assert not list((hsd.state_dir / "pci").iterdir())
    st, js, _ = hsd.request("POST", "/v1/vms/half/start")
    assert st == 409 and js["error"]["code"] == "group-not-viable", js

    make_vm(hsd, guest, "ghost", "0000:00:1e.7")
    r = start(hsd, "ghost")
    assert r.returncode == 1 and "0000:00:1e.7" in r.stderr, r.stderr

    r = hsd.hsctl("create", "bad", "--kernel", guest["kernel"], "--hostdev", "00:99.0")
    assert r.returncode == 1 and "hostdevs[0].address" in r.stderr, r.stderr
    r = hsd.hsctl("pci", "release", "0000:00:02.0")
    assert r.returncode == 1 and "not held by any VM" in r.stderr, r.stderr


def test_unbound_device_stays_unbound(hsd, guest, layout):
    a = layout["unbound"]
    make_vm(hsd, guest, "nic", a)
    r = start(hsd, "nic")
    assert r.returncode == 0, r.stderr + hsd.log_text()[-3000:]
    assert driver(a) == "vfio-pci"
    assert hsd.hsctl("kill", "nic", timeout=60).returncode == 0
    wait_for(lambda: driver(a) is None and not (hsd.state_dir / "pci" / a).exists(), 60,
             f"{a} unbound again")


def test_crash_recovery(hsd_factory, guest, layout):
    """kill -9 of hsd and of its QEMU: the next hsd gives the device back."""
    a = layout["lone"]
    h = hsd_factory("crash")
    make_vm(h, guest, "vm1", a)
    assert start(h, "vm1").returncode == 0, h.log_text()[-3000:]
    assert driver(a) == "vfio-pci"
    pid = qemu_pid(h, "vm1")
    h.remember_qemu_pids()
    h.kill9()
    kill_pid(pid)
    assert driver(a) == "vfio-pci"  # nobody gave it back yet
    h.start()
    wait_for(lambda: driver(a) == "virtio-pci", 60, f"{a} back on virtio-pci after restart")
    wait_for(lambda: not (h.state_dir / "pci" / a).exists(), 30, "the claim to go")
    assert "whose QEMU is gone" in h.log_text()


@pytest.mark.parametrize("step", ["claim", "override", "unbind", "probe", "bound"])
def test_tool_crash_halfway(hsd, layout, step):
    """hs-vfio dies at each step of a bind: hsd's recovery (at its next
    start) or a release puts the device back on its driver."""
    a = layout["lone"]
    claims = hsd.state_dir / "pci"
    r = subprocess.run([str(VFIO_TOOL), "--claims", str(claims), "bind", "--vm", "nobody", a],
                       env={**os.environ, "HS_VFIO_FAULT": step}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 99, (r.returncode, r.stderr)
    if step != "claim":
        assert (claims / a).exists()
    # 'nobody' is no VM of this hsd: release it through the API.
    if (claims / a).exists():
        r = hsd.hsctl("pci", "release", a, timeout=60)
        assert r.returncode == 0, r.stderr
    wait_for(lambda: driver(a) == "virtio-pci", 30, f"{a} back on virtio-pci")
    assert (SYS / a / "driver_override").read_text().strip() == "(null)"
    assert not (claims / a).exists()


def test_hotplug(hsd, guest, layout):
    """A host device hot-plugged into a running VM (onto a spare PCIe
    port), seen by QEMU, memlock raised; detached again."""
    a = layout["lone"]
    make_vm(hsd, guest, "hp", extra=("--hotplug-ports", "1"))
    assert start(hsd, "hp").returncode == 0, hsd.log_text()[-3000:]
    pid = qemu_pid(hsd, "hp")
    r = hsd.hsctl("pci", "attach", "hp", a, timeout=120)
    assert r.returncode == 0, r.stderr + hsd.log_text()[-3000:]
    assert "hot-plugged" in r.stdout
    assert driver(a) == "vfio-pci"
    assert memlock(pid) >= (128 << 20) + (1 << 30)
    found = vfio_devices(hsd, "hp")
    assert list(found) == ["hd-" + a.replace(":", "-")] and found["hd-" + a.replace(":", "-")][0] == a, found
    assert hsd.vm("hp")["spec"]["hostdevs"] == [{"address": a}]
    # A second attach of the same device is refused.
    r = hsd.hsctl("pci", "attach", "hp", a)
    assert r.returncode == 1 and "already" in r.stderr, r.stderr
    # Detach: the guest (no OS has come up under nested TCG) may or may
    # not let go in time; either way the device is out of the spec, and it
    # is back on its driver at the latest when the VM stops.
    r = hsd.hsctl("pci", "detach", "hp", a, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "hostdevs" not in hsd.vm("hp")["spec"]
    assert hsd.hsctl("kill", "hp", timeout=60).returncode == 0
    wait_for(lambda: driver(a) == "virtio-pci", 60, f"{a} back on virtio-pci")
    assert pid_alive(pid) is False


def test_hotplug_guest_drives_it_and_lets_go(hsd, guest, layout):
    """Into a booted Linux guest (nested TCG: minutes): the guest's own
    virtio-net driver takes the hot-plugged host NIC (it reads the
    device's MAC), and on detach the guest lets it go, so hsd gives it
    back at once (DEVICE_DELETED)."""
    a = layout["lone"]
    make_vm(hsd, guest, "live", extra=("--hotplug-ports", "1"))
    assert start(hsd, "live").returncode == 0, hsd.log_text()[-3000:]
    hsd.console_wait("live", "HS-GUEST-READY", timeout=900)
    r = hsd.hsctl("pci", "attach", "live", a, timeout=120)
    assert r.returncode == 0 and "hot-plugged" in r.stdout, r.stderr
    mac = iommu_guest.MACS[a]
    deadline = time.monotonic() + 300
    while True:
        out = guest_run(hsd, "live", "cat /sys/class/net/*/address", "mac", timeout=300)
        if mac in out:
            break
        assert time.monotonic() < deadline, f"the guest never showed {mac}: {out[-1000:]}"
        time.sleep(5)
    r = hsd.hsctl("pci", "detach", "live", a, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "given back to the host" in r.stdout, r.stdout
    assert driver(a) == "virtio-pci"
    assert not (hsd.state_dir / "pci" / a).exists()
    assert hsd.state("live") == "running"
    out = guest_run(hsd, "live", "cat /sys/class/net/*/address", "gone", timeout=300)
    assert mac not in out, out
    assert hsd.hsctl("kill", "live", timeout=60).returncode == 0
