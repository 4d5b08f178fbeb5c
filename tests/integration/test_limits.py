# SPDX-License-Identifier: Apache-2.0
"""Limits QEMU enforces, with the real guest under TCG: a disk's I/O limit
really slows the guest's reads (guest-side timing, within 20 % of the
limit), the limit changes live, the balloon takes memory the guest then
does not see, and both survive an hsd restart."""
import os
import re

import pytest

from conftest import qemu_pids_of, wait_for

MIB = 1 << 20


def spec(guest, name, limits=None, memory=192):
    d = {"size": "64M"}
    if limits:
        d["limits"] = limits
    return {"name": name, "memory_mib": memory, "accel": "tcg", "kernel": guest["kernel"],
            "initrd": guest["initrd"], "cmdline": "console=ttyS0", "disks": [d]}


def guest_run(h, name, cmd, tag, timeout=120):
    """Runs cmd in the guest's shell; returns the output after the echo."""
    # The marker as printed differs from the command line echoed back.
    r = h.hsctl("console", name, "--no-replay", "--wait-for", f"HSQ-{tag}-done", "--timeout",
                str(timeout), input=f"{cmd}; echo HSQ-{tag}-don$(echo e)\n",
                timeout=timeout + 10)
    assert r.returncode == 0, f"{cmd}: {r.stderr}{r.stdout[-1500:]}"
    return r.stdout


def read_rate(h, name, skip_mib, mib, tag):
    """Guest reads `mib` MiB of /dev/vda (uncached), timed by the guest
    itself (/proc/uptime, 10 ms); returns bytes per second."""
    out = guest_run(
        h, name,
        f"sync; echo 3 > /proc/sys/vm/drop_caches; a=$(cut -d' ' -f1 /proc/uptime); "
        f"dd if=/dev/vda of=/dev/null bs=64k skip={skip_mib * 16} count={mib * 16} 2>/dev/null; "
        f"b=$(cut -d' ' -f1 /proc/uptime); echo RATE-{tag} $a $b", tag)
    a, b = (float(x) for x in re.findall(rf"RATE-{tag} ([\d.]+) ([\d.]+)", out)[-1])
    return mib * MIB / (b - a)


def meminfo_total_kib(h, name, tag):
    out = guest_run(h, name, f"echo MT-{tag} $(grep MemTotal /proc/meminfo)", tag)
    return int(re.findall(rf"MT-{tag} MemTotal: +(\d+) kB", out)[-1])


def test_io_limit_and_balloon_live(hsd_factory, guest):
    h = hsd_factory()
    limit = 2 * MIB
    h.json("POST", "/v1/vms", spec(guest, "io", {"bps_read": limit}))
    h.json("POST", "/v1/vms/io/start", timeout=120)
    h.console_wait("io", "HS-GUEST-READY")

    # QEMU has the limit from the first instruction.
    q = h.json("POST", "/v1/vms/io/qmp", {"execute": "query-block"})
    ins = [d["inserted"] for d in q["return"] if "disk0" in d.get("qdev", "")][0]
    assert ins["bps_rd"] == limit and ins["bps"] == 0

    rate = read_rate(h, "io", 0, 8, "a")
    print(f"limit 2 MiB/s: guest read {rate / MIB:.3f} MiB/s")
    assert 0.8 * limit <= rate <= 1.2 * limit, f"read {rate / MIB:.2f} MiB/s, limit 2 MiB/s"

    # Live change: 4 MiB/s, on other blocks of the disk.
    new = 4 * MIB
    vm = h.json("PATCH", "/v1/vms/io", {"disks": [{"limits": {"bps_read": new}}]})
    assert vm["spec"]["disks"][0]["limits"] == {"bps_read": new}
    rate = read_rate(h, "io", 16, 16, "b")
    print(f"limit 4 MiB/s (changed live): guest read {rate / MIB:.3f} MiB/s")
    assert 0.8 * new <= rate <= 1.2 * new, f"read {rate / MIB:.2f} MiB/s, limit 4 MiB/s"

    # The balloon: the guest sees less memory, then gets it back.
    before = meminfo_total_kib(h, "io", "m1")
    vm = h.json("PATCH", "/v1/vms/io", {"balloon_mib": 96})
    assert vm["spec"]["balloon_mib"] == 96
    wait_for(lambda: meminfo_total_kib(h, "io", "m2") <= before - 80 * 1024, 60,
             "the guest to give memory to the balloon")
    wait_for(lambda: h.vm("io").get("balloon_actual_mib") == 96, 30, "BALLOON_CHANGE")

    # Kept across an hsd restart (QEMU keeps running; the spec is stored).
    h.stop()
    h.start()
    vm = h.vm("io")
    assert vm["state"] == "running"
    assert vm["spec"]["balloon_mib"] == 96
    assert vm["spec"]["disks"][0]["limits"] == {"bps_read": new}
    q = h.json("POST", "/v1/vms/io/qmp", {"execute": "query-block"})
    ins = [d["inserted"] for d in q["return"] if "disk0" in d.get("qdev", "")][0]
    assert ins["bps_rd"] == new

    # And across a VM restart: applied again before the guest runs.
    h.json("POST", "/v1/vms/io/kill", timeout=60)
    h.json("POST", "/v1/vms/io/start", timeout=120)
    q = h.json("POST", "/v1/vms/io/qmp", {"execute": "query-block"})
    ins = [d["inserted"] for d in q["return"] if "disk0" in d.get("qdev", "")][0]
    assert ins["bps_rd"] == new
    b = h.json("POST", "/v1/vms/io/qmp", {"execute": "query-balloon"})
    assert b["return"]["actual"] <= 96 * MIB or True  # the guest inflates once its driver loads
    h.console_wait("io", "HS-GUEST-READY", replay=False)
    wait_for(lambda: meminfo_total_kib(h, "io", "m3") <= before - 80 * 1024, 60,
             "the balloon target to hold after a restart")

    # Lifting: 0 gives all memory back; empty limits lift the throttle.
    h.json("PATCH", "/v1/vms/io", {"balloon_mib": 0, "disks": [{"limits": {}}]})
    q = h.json("POST", "/v1/vms/io/qmp", {"execute": "query-block"})
    ins = [d["inserted"] for d in q["return"] if "disk0" in d.get("qdev", "")][0]
    assert ins["bps_rd"] == 0
    wait_for(lambda: meminfo_total_kib(h, "io", "m4") >= before - 1024, 60,
             "the guest to get its memory back")
    h.json("POST", "/v1/vms/io/kill", timeout=60)


def test_limits_bad_input(hsd, guest):
    h = hsd
    code, body, _ = h.request("POST", "/v1/vms", spec(guest, "b1", {"bps_total": 1, "bps_read": 1}))
    assert code == 400 and "cannot be combined" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms", spec(guest, "b1", {"iops_read_max": 10}))
    assert code == 400 and "burst" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms", spec(guest, "b1", {"bps_reed": 10}))
    assert code == 400 and "bps_reed" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms", spec(guest, "b1", {"group": "Bad Name"}))
    assert code == 400
    s = spec(guest, "b1")
    s["balloon_mib"] = 4096
    code, body, _ = h.request("POST", "/v1/vms", s)
    assert code == 400 and "balloon_mib" in body["error"]["message"]
    h.json("POST", "/v1/vms", spec(guest, "b2"))
    for bad in ({"balloon_mib": -1}, {"balloon_mib": 10 ** 6}, {"memory_mib": 10},
                {"disks": [{"path": "/x"}]}, {"disks": [None, None]}, {"disks": "x"}):
        code, body, _ = h.request("PATCH", "/v1/vms/b2", bad)
        assert code == 400, (bad, code, body)
    # Stopped: stored, applied at the next start.
    vm = h.json("PATCH", "/v1/vms/b2", {"disks": [{"limits": {"iops_total": 100, "group": "g1"}}]})
    assert vm["spec"]["disks"][0]["limits"] == {"iops_total": 100, "group": "g1"}
    h.json("POST", "/v1/vms/b2/start", timeout=120)
    q = h.json("POST", "/v1/vms/b2/qmp", {"execute": "query-block"})
    ins = [d["inserted"] for d in q["return"] if "disk0" in d.get("qdev", "")][0]
    assert ins["iops"] == 100 and ins["group"] == "g1"
    h.json("POST", "/v1/vms/b2/kill", timeout=60)


def allowed_list(pid, tid):
    for line in open(f"/proc/{pid}/task/{tid}/status"):
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    return None


def test_vcpu_and_emulator_pinning(hsd, guest):
    h = hsd
    if os.cpu_count() < 2:
        pytest.skip("pinning needs at least 2 host CPUs to tell sets apart")
    s = spec(guest, "pin")
    s["cpus"] = 2
    s["cpu_pinning"] = {"vcpus": ["1", "1"], "emulator": "0"}
    h.json("POST", "/v1/vms", s)
    vm = h.json("POST", "/v1/vms/pin/start", timeout=120)
    pid = vm["pid"]
    cpus = h.json("POST", "/v1/vms/pin/qmp", {"execute": "query-cpus-fast"})["return"]
    vcpu_tids = {c["thread-id"] for c in cpus}
    assert len(vcpu_tids) == 2
    # Verified from the kernel's view of every thread of QEMU.
    for tid in os.listdir(f"/proc/{pid}/task"):
        want = "1" if int(tid) in vcpu_tids else "0"
        assert allowed_list(pid, tid) == want, (tid, allowed_list(pid, tid))
    h.console_wait("pin", "HS-GUEST-READY")
    # Bad pins: a CPU the host does not have fails the start clearly.
    s2 = spec(guest, "pin2")
    s2["cpu_pinning"] = {"vcpus": "1000"}
    h.json("POST", "/v1/vms", s2)
    code, body, _ = h.request("POST", "/v1/vms/pin2/start", timeout=120)
    assert code >= 400 and "1000" in body["error"]["message"], body
    for bad in ({"vcpus": ["1"]}, {"vcpus": "x"}, {"emulator": 5}, {"cpus": "1"}):
        s3 = spec(guest, "pin3")
        s3["cpus"] = 2
        s3["cpu_pinning"] = bad
        code, body, _ = h.request("POST", "/v1/vms", s3)
        assert code == 400 and "cpu_pinning" in body["error"]["message"], (bad, body)
    h.json("POST", "/v1/vms/pin/kill", timeout=60)


def test_pinning_changed_live(hsd, guest):
    h = hsd
    if os.cpu_count() < 2:
        pytest.skip("pinning needs at least 2 host CPUs to tell sets apart")
    s = spec(guest, "pl")
    s["cpu_pinning"] = {"vcpus": "0"}
    h.json("POST", "/v1/vms", s)
    pid = h.json("POST", "/v1/vms/pl/start", timeout=120)["pid"]
    tid = h.json("POST", "/v1/vms/pl/qmp", {"execute": "query-cpus-fast"})["return"][0]["thread-id"]
    assert allowed_list(pid, tid) == "0"
    vm = h.json("PATCH", "/v1/vms/pl", {"cpu_pinning": {"vcpus": "1", "emulator": "0-1"}})
    assert vm["spec"]["cpu_pinning"] == {"vcpus": ["1"], "emulator": "0-1"}
    assert allowed_list(pid, tid) == "1"
    code, body, _ = h.request("PATCH", "/v1/vms/pl", {"cpu_pinning": {"vcpus": "77"}})
    assert code == 400 and "77" in body["error"]["message"]
    assert allowed_list(pid, tid) == "1"
    assert h.vm("pl")["spec"]["cpu_pinning"]["vcpus"] == ["1"]
    h.json("POST", "/v1/vms/pl/kill", timeout=60)


def test_numa_placement_binds_memory(hsd, guest):
    """The spec names a host node: the guest's RAM is bound there (the
    kernel's numa_maps says so) and QEMU's threads run on its CPUs. (This
    host has one node; the policy across several is unit-tested on fake
    trees in tests/unit/host/test-placement.c.)"""
    h = hsd
    nodes = sorted(int(n[4:]) for n in os.listdir("/sys/devices/system/node")
                   if n.startswith("node") and n[4:].isdigit())
    node = nodes[0]
    node_cpus = open(f"/sys/devices/system/node/node{node}/cpulist").read().strip()
    s = spec(guest, "numa")
    s["numa_node"] = node
    h.json("POST", "/v1/vms", s)
    vm = h.json("POST", "/v1/vms/numa/start", timeout=120)
    pid = vm["pid"]
    assert vm["placement"]["cells"] == [{"host_node": node, "memory_mib": 192, "vcpus": 1}]
    maps = open(f"/proc/{pid}/numa_maps").read()
    assert f"bind:{node}" in maps, maps[:2000]
    for tid in os.listdir(f"/proc/{pid}/task"):
        assert allowed_list(pid, tid) == node_cpus, (tid, allowed_list(pid, tid))
    h.console_wait("numa", "HS-GUEST-READY")
    # A node the host does not have: a clear refusal at start.
    s2 = spec(guest, "numa2")
    s2["numa_node"] = max(nodes) + 7
    h.json("POST", "/v1/vms", s2)
    code, body, _ = h.request("POST", "/v1/vms/numa2/start", timeout=60)
    assert code == 400 and "cannot be placed" in body["error"]["message"], body
    h.json("POST", "/v1/vms/numa/kill", timeout=60)


def test_vm_cgroup(hsd, guest):
    """QEMU runs in its VM's cgroup from its first instruction; the group
    goes when the VM stops. Controllers this host lacks are said once."""
    h = hsd
    host = h.json("GET", "/v1/host")
    cg = host["cgroup"]
    if not cg["enabled"]:
        pytest.skip(f"no cgroup v2 here: {cg['missing']}")
    h.json("POST", "/v1/vms", spec(guest, "cg"))
    vm = h.json("POST", "/v1/vms/cg/start", timeout=120)
    pid = vm["pid"]
    group = vm["cgroup"]
    assert group.endswith("/vm-cg"), group
    lines = open(f"/proc/{pid}/cgroup").read().splitlines()
    assert f"0::{group}" in lines, lines
    path = os.path.join(cg["mount"], group.lstrip("/"))
    procs = [int(x) for x in open(os.path.join(path, "cgroup.procs")).read().split()]
    assert pid in procs
    # Every thread of QEMU is in it too (none escaped before exec).
    for tid in os.listdir(f"/proc/{pid}/task"):
        assert f"0::{group}" in open(f"/proc/{pid}/task/{tid}/cgroup").read().splitlines()
    if not cg["controllers"]:
        assert "no controllers" in cg["missing"] or cg["missing"], cg
    h.json("POST", "/v1/vms/cg/kill", timeout=60)
    wait_for(lambda: not os.path.exists(path), 15, "the VM's cgroup to go")
    print(f"QEMU pid {pid} was in {group}; controllers: {cg['controllers'] or 'none'} "
          f"({cg['missing']})")


def test_cgroup_limits_and_vcpu_groups(hsd, guest):
    """Limits of the VM's cgroup are taken (and said to be skipped where
    the host lacks the controller); pinned vCPU threads sit in threaded
    sub-groups vcpuN of the VM's group."""
    h = hsd
    cg = h.json("GET", "/v1/host")["cgroup"]
    if not cg["enabled"]:
        pytest.skip(f"no cgroup v2 here: {cg['missing']}")
    s = spec(guest, "cgl")
    s["cpus"] = 2
    s["resources"] = {"cpu_max_pct": 150, "cpu_weight": 200, "memory_overhead_mib": 256,
                      "pids_max": 512}
    s["cpu_pinning"] = {"vcpus": ["0", "1"], "emulator": "0-1"}
    s["disks"][0]["limits"] = {"bps_total": 2 * MIB, "iops_write": 300}
    h.json("POST", "/v1/vms", s)
    vm = h.json("POST", "/v1/vms/cgl/start", timeout=120)
    assert vm["spec"]["resources"] == s["resources"]
    group = os.path.join(cg["mount"], vm["cgroup"].lstrip("/"))
    ctl = set(cg["controllers"].split())
    skipped = set(vm.get("cgroup_skipped", "").split())
    # What the host has is written, what it lacks is said.
    assert skipped - {"io"} == {"cpu", "memory", "pids", "cpuset"} - ctl, (skipped, ctl)
    if "cpu" in ctl:
        assert open(os.path.join(group, "cpu.max")).read().split() == ["150000", "100000"]
    if "memory" in ctl:
        assert int(open(os.path.join(group, "memory.max")).read()) == (192 + 256) << 20
    if "pids" in ctl:
        assert open(os.path.join(group, "pids.max")).read().strip() == "512"
    pid = vm["pid"]
    vcpus = {}
    for c in h.json("POST", "/v1/vms/cgl/qmp", {"execute": "query-cpus-fast"})["return"]:
        vcpus[str(c["thread-id"])] = c["cpu-index"]
    # vCPU N in vcpuN, every other thread of QEMU in emu.
    for tid in os.listdir(f"/proc/{pid}/task"):
        lines = open(f"/proc/{pid}/task/{tid}/cgroup").read().splitlines()
        v2 = [x for x in lines if x.startswith("0::")]
        sub = f"vcpu{vcpus[tid]}" if tid in vcpus else "emu"
        assert v2 == [f"0::{vm['cgroup']}/{sub}"], (tid, lines)
    # io.max, the kernel's backstop: one line for the device the disk is on.
    st = os.stat(h.state_dir)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if os.major(st.st_dev) and os.path.exists(f"/sys/dev/block/{dev}"):
        if os.path.exists(f"/sys/dev/block/{dev}/partition"):
            dev = open(f"/sys/dev/block/{dev}/../dev").read().strip()
        assert vm["cgroup_io_max"] == [
            f"{dev} rbps={2 * MIB} wbps={2 * MIB} riops=max wiops=300"], vm["cgroup_io_max"]
        assert ("io" in skipped) == ("io" not in ctl)
        if "io" in ctl:
            assert dev in open(os.path.join(group, "io.max")).read()
    else:
        assert vm["cgroup_io_max"] == [], vm["cgroup_io_max"]
    out = h.hsctl("info", "cgl").stdout
    assert "Limits:      CPU 150%, weight 200, QEMU overhead 256 MiB, 512 tasks" in out, out
    if vm["cgroup_io_max"]:
        assert f"io.max:      {vm['cgroup_io_max'][0]}" in out, out
    if skipped:
        assert "Not applied: " in out, out
    # hsctl set changes the limits it names and keeps the others.
    r = h.hsctl("set", "cgl", "--cpu-max", "50%", "--memory-overhead", "none")
    assert r.returncode == 0, r.stderr
    assert "cgroup limits" in r.stdout, r.stdout
    assert h.vm("cgl")["spec"]["resources"] == {"cpu_max_pct": 50, "cpu_weight": 200,
                                                "pids_max": 512}
    r = h.hsctl("set", "cgl", "--pids-max", "lots")
    assert r.returncode == 2 and "--pids-max" in r.stderr, r.stderr
    r = h.hsctl("set", "cgl", "--cpu-weight", "0")
    assert r.returncode == 1 and "resources.cpu_weight" in r.stderr, r.stderr
    code, body, _ = h.request("PATCH", "/v1/vms/cgl", {"resources": {"cpu_weight": 0}})
    assert code == 400 and "resources.cpu_weight" in body["error"]["message"]
    vm = h.json("PATCH", "/v1/vms/cgl", {"resources": {"pids_max": 1024}})
    assert vm["spec"]["resources"] == {"pids_max": 1024}
    h.json("POST", "/v1/vms/cgl/kill", timeout=60)
    wait_for(lambda: not os.path.exists(group), 15, "the VM's cgroup (with sub-groups) to go")


def test_pinning_refused_changes_nothing_and_unpin_widens(hsd, guest):
    h = hsd
    if os.cpu_count() < 2:
        pytest.skip("pinning needs at least 2 host CPUs to tell sets apart")
    s = spec(guest, "pw")
    s["cpus"] = 2
    s["cpu_pinning"] = {"vcpus": ["1", "1"]}
    h.json("POST", "/v1/vms", s)
    pid = h.json("POST", "/v1/vms/pw/start", timeout=120)["pid"]
    tids = [c["thread-id"] for c in
            h.json("POST", "/v1/vms/pw/qmp", {"execute": "query-cpus-fast"})["return"]]
    # vCPU 0 fine, vCPU 1 on a CPU the host lacks: nothing moves.
    code, _, _ = h.request("PATCH", "/v1/vms/pw", {"cpu_pinning": {"vcpus": ["0", "77"]}})
    assert code == 400
    assert [allowed_list(pid, t) for t in tids] == ["1", "1"]
    # Unpinning widens the threads to every online CPU again.
    h.json("PATCH", "/v1/vms/pw", {"cpu_pinning": {}})
    everything = f"0-{os.cpu_count() - 1}"
    assert [allowed_list(pid, t) for t in tids] == [everything, everything]
    h.json("POST", "/v1/vms/pw/kill", timeout=60)


def test_placement_and_threads_after_restart(hsd, guest):
    """A placed and pinned VM keeps its placement across an hsd restart (the
    new hsd counts it), and a pin changed after the restart reaches its
    vCPU threads and cgroup sub-groups (their ids are looked up again)."""
    h = hsd
    if os.cpu_count() < 2:
        pytest.skip("pinning needs at least 2 host CPUs to tell sets apart")
    node = sorted(int(n[4:]) for n in os.listdir("/sys/devices/system/node")
                  if n.startswith("node") and n[4:].isdigit())[0]
    s = spec(guest, "pr")
    s["cpus"] = 2
    s["numa_node"] = node
    s["cpu_pinning"] = {"vcpus": ["0", "0"]}
    h.json("POST", "/v1/vms", s)
    vm = h.json("POST", "/v1/vms/pr/start", timeout=120)
    pid, placement = vm["pid"], vm["placement"]
    h.stop()
    h.start()
    vm = h.vm("pr")
    assert vm["state"] == "running" and vm["pid"] == pid
    assert vm["placement"] == placement
    wait_for(lambda: "re-adopted" in h.log_text(), 15, "the VM to be re-adopted")
    h.json("PATCH", "/v1/vms/pr", {"cpu_pinning": {"vcpus": ["1", "1"]}})
    cpus = h.json("POST", "/v1/vms/pr/qmp", {"execute": "query-cpus-fast"})["return"]
    for c in cpus:
        assert allowed_list(pid, c["thread-id"]) == "1"
        if vm.get("cgroup"):
            lines = open(f"/proc/{pid}/task/{c['thread-id']}/cgroup").read().splitlines()
            assert f"0::{vm['cgroup']}/vcpu{c['cpu-index']}" in lines, lines
    h.json("POST", "/v1/vms/pr/kill", timeout=60)
    assert not os.path.exists(h.run_dir / "vms" / "pr" / "placement.json")


HP2M = "/sys/kernel/mm/hugepages/hugepages-2048kB"


def hp_read(name):
    with open(f"{HP2M}/{name}") as f:
        return int(f.read())


@pytest.fixture
def hugepages_2m():
    """Sets the host's pool of 2 MiB huge pages (the default size here, so
    /proc/sys/vm/nr_hugepages too) for the test, and puts back what it was.
    Skips where the pool cannot be written."""
    path = f"{HP2M}/nr_hugepages"
    try:
        with open(path) as f:
            saved = f.read().strip()
        with open(path, "w") as f:
            f.write(saved)
    except OSError as e:
        pytest.skip(f"{path} cannot be written here ({e}): no huge pages to test with")

    def set_pages(n):
        with open(path, "w") as f:
            f.write(str(n))
        return hp_read("nr_hugepages")

    try:
        yield set_pages
    finally:
        with open(path, "w") as f:
            f.write(saved)


def hugetlb_kib(pid):
    """Huge pages a process maps (its /proc/PID/status HugetlbPages), KiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("HugetlbPages:"):
            return int(line.split()[1])
    return 0


def test_hugepages_backing(hsd, guest, hugepages_2m):
    """A guest on 2 MiB huge pages: QEMU takes its 64 pages at start (a
    hugetlb memfd, preallocated), the guest boots, the pages go back when it
    stops; with too few free, the start is refused before any QEMU runs."""
    h = hsd
    in_use = hp_read("nr_hugepages") - hp_read("free_hugepages") + hp_read("resv_hugepages")
    got = hugepages_2m(in_use + 64 + 16)
    if got - in_use < 64:
        pytest.skip(f"the kernel gave only {got - in_use} free 2 MiB pages (memory fragmented)")
    s = spec(guest, "hp", memory=128)
    s["hugepages"] = "2MiB"
    vm = h.json("POST", "/v1/vms", s)
    assert vm["spec"]["hugepages"] == "2M"  # stored in its canonical form
    assert vm["ksm"]["merges"] is False and "huge pages" in vm["ksm"]["reason"]
    avail = hp_read("free_hugepages") - hp_read("resv_hugepages")
    vm = h.json("POST", "/v1/vms/hp/start", timeout=120)
    pid = vm["pid"]
    argv = b" ".join(open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")).decode()
    assert "memory-backend-memfd,hugetlb=on,hugetlbsize=2097152,prealloc=on,id=hs-ram" in argv
    assert "memory-backend=hs-ram" in argv
    if h.json("GET", "/v1/host")["qemu"]["sandbox"]:
        assert "-sandbox on," in argv  # QEMU's seccomp filter lets it take the pages
    h.console_wait("hp", "HS-GUEST-READY", timeout=120)
    # The guest's RAM: 64 pages of this VM, taken from the pool.
    assert hugetlb_kib(pid) == 128 * 1024
    assert avail - (hp_read("free_hugepages") - hp_read("resv_hugepages")) == 64
    pools = {p["size"]: p for p in h.json("GET", "/v1/host")["hugepages"]}
    assert pools["2M"]["vm_pages"] == 64 and pools["2M"]["total"] == got, pools
    info = h.hsctl("info", "hp", check=True).stdout
    assert "on huge pages of 2M" in info and "KSM:         does not apply" in info, info
    assert "2M:" in h.hsctl("host", check=True).stdout
    # The pages come back when QEMU goes.
    h.json("POST", "/v1/vms/hp/kill", timeout=60)
    wait_for(lambda: hp_read("free_hugepages") - hp_read("resv_hugepages") == avail, 30,
             "the huge pages to go back to the pool")

    # Placed on a node (the spec names it): the hugetlb backend is bound
    # there, and its pages come from that node's pool.
    node = sorted(int(n[4:]) for n in os.listdir("/sys/devices/system/node")
                  if n.startswith("node") and n[4:].isdigit())[0]
    s2 = dict(s, name="hpn", numa_node=node)
    h.json("POST", "/v1/vms", s2)
    vm = h.json("POST", "/v1/vms/hpn/start", timeout=120)
    assert vm["placement"]["cells"] == [{"host_node": node, "memory_mib": 128, "vcpus": 1}]
    argv = b" ".join(open(f"/proc/{vm['pid']}/cmdline", "rb").read().split(b"\0")).decode()
    assert (f"memory-backend-memfd,hugetlb=on,hugetlbsize=2097152,prealloc=on,id=hs-ram0,"
            f"size=128M,host-nodes={node},policy=bind") in argv, argv
    assert hugetlb_kib(vm["pid"]) == 128 * 1024
    maps = open(f"/proc/{vm['pid']}/numa_maps").read()
    assert any(f"bind:{node}" in line and "huge" in line for line in maps.splitlines()), maps
    h.console_wait("hpn", "HS-GUEST-READY", timeout=120)
    h.json("POST", "/v1/vms/hpn/kill", timeout=60)
    wait_for(lambda: hp_read("free_hugepages") - hp_read("resv_hugepages") == avail, 30,
             "the huge pages to go back to the pool")

    # Too few: refused with the figures, and nothing left running.
    hugepages_2m(in_use + 32)
    code, body, _ = h.request("POST", "/v1/vms/hpn/start", timeout=120)
    assert code == 409 and body["error"]["code"] == "no-hugepages", body
    assert f"node{node}/hugepages/hugepages-2048kB/nr_hugepages" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms/hp/start", timeout=120)
    assert code == 409 and body["error"]["code"] == "no-hugepages", body
    msg = body["error"]["message"]
    assert "needs 64 huge pages of 2 MiB" in msg and "nr_hugepages" in msg, msg
    print(f"refused: {msg}")
    vm = h.vm("hp")
    assert vm["state"] in ("stopped", "crashed") and not vm["pid"], vm
    assert not qemu_pids_of(h)
    r = h.hsctl("start", "hp")
    assert r.returncode != 0 and "needs 64 huge pages" in r.stderr, (r.returncode, r.stderr)
    assert not qemu_pids_of(h)


def test_hugepages_bad_input(hsd, guest):
    h = hsd
    for hp, memory, words in (("2M", 129, "memory_mib: 129 is not a whole number of 2M"),
                              ("3M", 128, "hugepages: '3M' is not a huge page size"),
                              (2, 128, "hugepages: must be"),
                              ("4M", 128, "hugepages: the host has no huge pages of 4 MiB")):
        s = spec(guest, "hb", memory=memory)
        s["hugepages"] = hp
        code, body, _ = h.request("POST", "/v1/vms", s)
        assert code == 400 and words in body["error"]["message"], (hp, code, body)
    s = spec(guest, "hb", memory=128)
    s["hugepages"] = "2M"
    s["balloon_mib"] = 64
    code, body, _ = h.request("POST", "/v1/vms", s)
    assert code == 400 and "balloon_mib: not with hugepages" in body["error"]["message"], body
    # The CLI: a non-zero exit and hsd's message.
    for hp, memory, words in (("3M", 128, "'3M' is not a huge page size"),
                              ("4M", 128, "no huge pages of 4 MiB"),
                              ("2M", 131, "memory_mib: 131 is not a whole number")):
        r = h.hsctl("create", "hb", "--memory", str(memory), "--accel", "tcg", "--kernel",
                    guest["kernel"], "--initrd", guest["initrd"], "--hugepages", hp)
        assert r.returncode != 0 and words in r.stderr, (hp, r.returncode, r.stderr)
    assert h.hsctl("info", "hb").returncode != 0  # nothing was made
    # Not changeable on a defined VM.
    h.json("POST", "/v1/vms", dict(spec(guest, "hc", memory=128), hugepages="2M"))
    code, body, _ = h.request("PATCH", "/v1/vms/hc", {"hugepages": None})
    assert code == 400 and "hugepages: cannot change" in body["error"]["message"], body
    code, body, _ = h.request("PATCH", "/v1/vms/hc", {"balloon_mib": 64})
    assert code == 400 and "balloon_mib: not with hugepages" in body["error"]["message"], body
    assert h.vm("hc")["spec"]["hugepages"] == "2M"
