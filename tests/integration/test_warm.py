# SPDX-License-Identifier: Apache-2.0
"""Warm templates with the real test guest under TCG: a template taken from
a booted guest that wrote a marker into its RAM (a tmpfs file), clones that
resume it (no reboot: same boot_id, uptime goes on) with their own MACs and
vmgenid, isolation between clones, deletion refused while clones exist,
and kill -9 of a clone's QEMU or of hsd during a clone's start."""
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import guest_run, wait_for

N_CLONES = int(os.environ.get("HS_WARM_CLONES", "10"))
MEMORY = 128


@pytest.fixture
def memdir():
    d = f"/dev/shm/hs-warm-{os.getpid()}-{time.monotonic_ns() % 100000}"
    yield d
    shutil.rmtree(d, ignore_errors=True)


def src_spec(guest, name):
    return {"name": name, "memory_mib": MEMORY, "accel": "tcg", "kernel": guest["kernel"],
            "initrd": guest["initrd"], "cmdline": "console=ttyS0", "memory_file": True,
            "nics": [{"type": "user"}]}


def facts(h, name, tag):
    """marker, boot_id, uptime, eth0's MAC as the guest sees them."""
    out = guest_run(h, name,
                    f"echo F-{tag} $(cat /tmp/marker 2>/dev/null || echo none) "
                    f"$(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f1 /proc/uptime) "
                    f"$(cat /sys/class/net/eth0/address)", tag)
    m = re.findall(rf"F-{tag} (\S+) ([0-9a-f-]{{36}}) ([\d.]+) ([0-9a-f:]{{17}})", out)
    assert m, out[-1500:]
    marker, boot_id, uptime, mac = m[-1]
    return marker, boot_id, float(uptime), mac


def qom_guid(h, name):
    r = h.json("POST", f"/v1/vms/{name}/qmp",
               {"execute": "qom-get",
                "arguments": {"path": "/machine/peripheral/vmgenid0", "property": "guid"}})
    return r["return"]


def make_template(h, guest, tpl="tpl", then="resume"):
    h.json("POST", "/v1/vms", src_spec(guest, "src"))
    h.json("POST", "/v1/vms/src/start", timeout=120)
    h.console_wait("src", "HS-IDENTITY", timeout=120)
    time.sleep(1)
    guest_run(h, "src", "echo warm-marker-42 > /tmp/marker", "mk")
    marker, boot_id, uptime, mac = facts(h, "src", "src")
    assert marker == "warm-marker-42"
    t0 = time.monotonic()
    r = h.json("POST", "/v1/templates", {"name": tpl, "vm": "src", "warm": True, "then": then},
               timeout=300)
    assert r["kind"] == "warm" and r["then"] == then, r
    return boot_id, uptime, t0, r


def test_warm_clones(hsd_factory, guest, memdir):
    h = hsd_factory(extra_args=["--memory-dir", memdir])
    boot_id, up0, t_capture, cap = make_template(h, guest)
    print(f"capture: state {cap['state_size'] / 1024:.0f} KiB, guest paused "
          f"{cap['paused_ms']:.0f} ms, RAM copy {cap['copy_ms']:.0f} ms")
    tdir = h.state_dir / "templates" / "tpl"
    for f in ("ram", "state", "template.json"):
        assert stat.S_IMODE(os.stat(tdir / f).st_mode) == 0o444, f
    assert os.path.getsize(tdir / "ram") == MEMORY << 20
    # The source goes on.
    assert h.state("src") == "running"
    assert facts(h, "src", "src2")[0] == "warm-marker-42"
    h.json("POST", "/v1/vms/src/stop", {"force": True}, timeout=60)

    names = [f"c{i}" for i in range(N_CLONES)]
    starts = []
    for n in names:
        r = h.hsctl("create", n, "--template", "tpl")
        assert r.returncode == 0, r.stderr
        t = time.monotonic()
        h.json("POST", f"/v1/vms/{n}/start", timeout=120)
        starts.append(time.monotonic() - t)
    print("clone starts (s):", " ".join(f"{s:.3f}" for s in starts))

    macs, guids = set(), set()
    for i, n in enumerate(names):
        vm = h.vm(n)
        spec = vm["spec"]
        mac, guid = spec["nics"][0]["mac"], spec["vmgenid"]
        # The guest's own view of its new identity (tests/guest/init).
        h.console_wait(n, f"HS-CLONE {n} {mac} {guid}", timeout=120)
        marker, bid, up, gmac = facts(h, n, f"c{i}")
        assert marker == "warm-marker-42"
        assert bid == boot_id, "the clone rebooted"
        # The uptime goes on from the capture (a reboot would start at 0).
        assert up > up0, (up, up0)
        assert up < up0 + (time.monotonic() - t_capture) + 30
        assert gmac == mac
        assert qom_guid(h, n) == guid
        macs.add(mac)
        guids.add(guid)
        assert vm["warm"]["template"] == "tpl" and not vm["warm"]["fresh_clone"]
        # A clone's start loads its template's device state: a step of its own.
        st = vm["start_timing_ms"]
        assert set(st) == {"spawn", "qemu_init", "load", "resume", "total"}, st
        assert abs(sum(v for k, v in st.items() if k != "total") - st["total"]) < 0.5, st
    assert len(macs) == N_CLONES and len(guids) == N_CLONES

    # RAM shared with the template, apart from KSM.
    w = h.vm(names[0])["warm"]
    print("clone 0 memory:", w)
    assert w["template_shared_kib"] > 0
    # Host-wide, apart from KSM's figures (GET /v1/ksm, hsctl ksm).
    k = h.json("GET", "/v1/ksm")
    wt = {t["name"]: t for t in k["warm_templates"]}["tpl"]
    print("GET /v1/ksm warm_templates:", wt)
    assert wt["clones"] == N_CLONES and wt["clones_running"] == N_CLONES, wt
    assert wt["ram_size"] == MEMORY << 20 and 0 < wt["held_bytes"] <= MEMORY << 20
    assert wt["clones_shared_bytes"] >= w["template_shared_kib"] << 10
    assert wt["saved_bytes"] == max(0, wt["clones_shared_bytes"] - wt["held_bytes"])
    assert k["warm_saved_bytes"] == wt["saved_bytes"]
    out = h.hsctl("ksm", check=True).stdout
    assert "Warm:" in out and re.search(rf"tpl\s.*{N_CLONES}/{N_CLONES}", out), out

    # A write in one clone is seen by no other, nor by a new clone.
    guest_run(h, "c0", "echo c0-only > /tmp/marker2", "w0")
    out = guest_run(h, names[-1], "echo M2 $(cat /tmp/marker2 2>/dev/null || echo none)", "w1")
    assert "M2 none" in out
    h.hsctl("create", "late", "--template", "tpl", check=True)
    h.json("POST", "/v1/vms/late/start", timeout=120)
    h.console_wait("late", "HS-CLONE late ", timeout=120)
    out = guest_run(h, "late", "echo M2 $(cat /tmp/marker2 2>/dev/null || echo none)", "w2")
    assert "M2 none" in out
    assert open(tdir / "ram", "rb").read(4096) is not None

    # Deletion is refused while clones use it, and names them.
    st, js, _ = h.request("DELETE", "/v1/templates/tpl")
    assert st == 409 and "c0" in js["error"]["message"], js

    # A clone that ran boots on its later starts.
    h.json("POST", "/v1/vms/c0/stop", {"force": True}, timeout=60)
    h.json("POST", "/v1/vms/c0/start", timeout=120)
    h.console_wait("c0", "HS-GUEST-READY", timeout=120, replay=False)
    marker, bid, _, _ = facts(h, "c0", "cold")
    assert marker == "none" and bid != boot_id

    for n in names + ["late", "src"]:
        h.json("POST", f"/v1/vms/{n}/stop", {"force": True}, timeout=60, expect=(200, 409))
        wait_for(lambda: h.state(n) in ("stopped", "crashed"), 30, f"{n} to stop")
        h.json("DELETE", f"/v1/vms/{n}")
    h.json("DELETE", "/v1/templates/tpl")
    assert not os.listdir(memdir), os.listdir(memdir)


class EventTap:
    """GET /v1/events in a thread: the lines hsd publishes, kept."""

    def __init__(self, h):
        import socket
        self.lines = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(h.socket)
        self.sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: hsd\r\n\r\n")
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        buf = b""
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                continue
            if not chunk:
                return
            buf += chunk
            *done, buf = buf.split(b"\n")
            for line in done:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # headers, chunk sizes, heartbeats
                if isinstance(e, dict):
                    self.lines.append(e)

    def migration(self, vm):
        return [e["data"]["status"] for e in self.lines
                if e.get("type") == "qmp" and e.get("vm") == vm and e.get("event") == "MIGRATION"]

    def close(self):
        self.stop.set()
        self.t.join(timeout=5)
        self.sock.close()


def test_warm_follows_migration_events(hsd_factory, guest, memdir):
    """The capture's save and a clone's load end at QEMU's MIGRATION event,
    not at a poll: both VMs publish it, and the guest is paused for less
    than the safety-net poll (500 ms) on top of its RAM copy."""
    h = hsd_factory(extra_args=["--memory-dir", memdir])
    tap = EventTap(h)
    try:
        _, _, _, cap = make_template(h, guest, then="stop")
        h.hsctl("create", "c0", "--template", "tpl", check=True)
        t = time.monotonic()
        h.json("POST", "/v1/vms/c0/start", timeout=120)
        start = time.monotonic() - t
        h.console_wait("c0", "HS-CLONE c0 ", timeout=120)
        wait_for(lambda: "completed" in tap.migration("c0"), 10, "c0's MIGRATION event")
        print(f"capture: paused {cap['paused_ms']:.0f} ms, RAM copy {cap['copy_ms']:.0f} ms; "
              f"clone start {start * 1e3:.0f} ms; events src {tap.migration('src')}, "
              f"c0 {tap.migration('c0')}")
        assert "completed" in tap.migration("src")
        assert cap["paused_ms"] - cap["copy_ms"] < 450, cap
    finally:
        tap.close()
    h.json("POST", "/v1/vms/c0/stop", {"force": True}, timeout=60)
    wait_for(lambda: h.state("c0") in ("stopped", "crashed"), 30, "c0 to stop")
    h.json("DELETE", "/v1/vms/c0")
    h.json("DELETE", "/v1/vms/src", expect=(200, 409))


def test_warm_template_making_is_listed(hsd_factory, guest, memdir):
    """While a warm template is captured, GET /v1/templates/NAME answers 200
    with "state": "making" (so does the list), clones of it are refused
    with 409; once whole, the normal object (no "state")."""
    h = hsd_factory(extra_args=["--memory-dir", memdir])
    h.json("POST", "/v1/vms", src_spec(guest, "src"))
    h.json("POST", "/v1/vms/src/start", timeout=120)
    h.console_wait("src", "HS-IDENTITY", timeout=120)
    result, seen, listed, clones = {}, [], [], []

    def capture():
        result["r"] = h.request("POST", "/v1/templates",
                                {"name": "tpl", "vm": "src", "warm": True}, timeout=300)

    t = threading.Thread(target=capture)
    t.start()
    deadline = time.monotonic() + 300
    while t.is_alive() and time.monotonic() < deadline:
        st, js, _ = h.request("GET", "/v1/templates/tpl")
        seen.append((st, (js or {}).get("state")))
        if st == 200 and js.get("state") == "making":
            assert js["kind"] == "warm" and js["source"] == "src", js
            lst = h.json("GET", "/v1/templates")["templates"]
            listed += [x.get("state") for x in lst if x["name"] == "tpl"]
            st, _, _ = h.request("POST", "/v1/vms", {"name": "c0", "warm_template": "tpl"})
            clones.append(st)
        time.sleep(0.005)
    t.join(timeout=300)
    st, cap, text = result["r"]
    assert st == 201, text
    print("GET during the capture:", sorted(set(seen), key=repr), "list:", set(listed), "clones:",
          set(clones))
    assert (200, "making") in seen, seen
    # 404 only before the capture's request reached hsd (the thread's POST
    # and the first GETs race); from the first "making" on, never.
    first = seen.index((200, "making"))
    assert 404 not in [c for c, _ in seen[first:]], seen
    # A clone got in only if the template was whole by then.
    assert all(c in (409, 201) for c in clones), clones
    if 201 in clones:
        h.json("DELETE", "/v1/vms/c0")
    assert "making" in listed or not clones
    js = h.json("GET", "/v1/templates/tpl")
    assert "state" not in js and js["ram_size"] == MEMORY << 20, js
    lst = h.json("GET", "/v1/templates")["templates"]
    assert [x.get("state") for x in lst if x["name"] == "tpl"] == [None], lst
    h.json("POST", "/v1/vms/src/stop", {"force": True}, timeout=60)


def start_and_kill(h, name, kill):
    """Starts `name` in the background and calls kill(pid) as soon as its
    QEMU exists."""
    res = {}

    def go():
        try:
            res["r"] = h.request("POST", f"/v1/vms/{name}/start", timeout=120)
        except OSError as e:  # hsd killed under the request
            res["r"] = e
    t = threading.Thread(target=go)
    t.start()
    pidfile = h.run_dir / "vms" / name / "qemu.pid"
    pid = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "QEMU's pid")
    kill(int(pid))
    t.join(130)
    return int(pid), res.get("r")


def test_warm_clone_start_faults(hsd_factory, guest, memdir):
    h = hsd_factory(extra_args=["--memory-dir", memdir])
    make_template(h, guest, then="stop")
    wait_for(lambda: h.state("src") == "stopped", 30, "src to stop")
    h.hsctl("create", "k1", "--template", "tpl", check=True)

    # kill -9 of the clone's QEMU during its start.
    pid, r = start_and_kill(h, "k1", lambda p: os.kill(p, signal.SIGKILL))
    wait_for(lambda: h.state("k1") in ("stopped", "crashed"), 30, "k1 to be down")
    assert h.vm("k1")["warm"]["fresh_clone"], "the clone must still start from the template"
    assert not os.listdir(memdir)
    h.json("POST", "/v1/vms/k1/start", timeout=120)
    h.console_wait("k1", "HS-CLONE k1 ", timeout=120)
    assert facts(h, "k1", "k1")[0] == "warm-marker-42"

    # kill -9 of hsd during a clone's start.
    h.hsctl("create", "k2", "--template", "tpl", check=True)
    pid, r = start_and_kill(h, "k2", lambda p: h.kill9())
    h.start()
    # Re-adopted: running (it got through), or killed and stopped.
    wait_for(lambda: h.state("k2") in ("running", "paused", "stopped", "crashed"), 30,
             "k2 to settle")
    print("k2 after hsd's restart:", h.state("k2"), h.vm("k2")["exit_reason"])
    if h.state("k2") == "paused":
        h.json("POST", "/v1/vms/k2/resume")
    elif h.state("k2") != "running":
        assert h.vm("k2")["warm"]["fresh_clone"]
        h.json("POST", "/v1/vms/k2/start", timeout=120)
    h.console_wait("k2", "HS-CLONE k2 ", timeout=120)
    assert facts(h, "k2", "k2")[0] == "warm-marker-42"
    leftovers = [n for n in os.listdir(h.state_dir / "templates") if n.startswith(".")]
    assert not leftovers
    for n in ("k1", "k2"):
        h.json("POST", f"/v1/vms/{n}/stop", {"force": True}, timeout=60)
    wait_for(lambda: not os.listdir(memdir), 30, "RAM files to go")


class LoopProbe:
    """Asks hsd for GET /v1 every 5 ms in a thread and keeps the slowest
    answer: hsd's loop must never block (the RAM copies run in tools)."""

    def __init__(self, h):
        self.h, self.worst, self.n = h, 0.0, 0
        self.done = threading.Event()
        self.t = threading.Thread(target=self.run)

    def run(self):
        while not self.done.is_set():
            t = time.monotonic()
            try:
                self.h.request("GET", "/v1", timeout=10)
            except OSError:
                pass
            self.worst = max(self.worst, time.monotonic() - t)
            self.n += 1
            time.sleep(0.005)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.t.join(15)


def test_warm_copies_off_the_loop(hsd_factory, guest, memdir):
    """The capture's RAM copies and a reload after hsd's restart run in a
    tool (cp --sparse=always): hsd keeps answering, pages the guest never
    touched stay holes, and clones started after the restart resume."""
    h = hsd_factory(extra_args=["--memory-dir", memdir])
    with LoopProbe(h) as p:
        _, _, _, cap = make_template(h, guest)
    print(f"capture: guest paused {cap['paused_ms']:.0f} ms (RAM into the memfd "
          f"{cap['copy_ms']:.0f} ms), RAM file written {cap['write_ms']:.0f} ms after the "
          f"resume; slowest GET /v1 meanwhile {p.worst * 1e3:.0f} ms of {p.n}")
    assert p.worst < 0.15, p.worst
    assert cap["paused_ms"] >= cap["copy_ms"]
    ram = h.state_dir / "templates" / "tpl" / "ram"
    st = os.stat(ram)
    assert st.st_size == MEMORY << 20
    # Every all-zero page is a hole: it costs nothing on disk nor in the
    # clones' memfd.
    with open(ram, "rb") as f:
        nonzero = sum(1 for _ in iter(lambda: f.read(4096), b"") if _.count(0) != 4096)
    print(f"template RAM file: {st.st_blocks * 512 >> 20} MiB allocated, "
          f"{nonzero * 4096 >> 20} MiB of non-zero pages, of {MEMORY} MiB")
    assert st.st_blocks * 512 <= nonzero * 4096 + (1 << 20)
    h.json("POST", "/v1/vms/src/stop", {"force": True}, timeout=60)
    wait_for(lambda: h.state("src") in ("stopped", "crashed"), 30, "src to stop")

    h.stop()
    h.start()
    h.hsctl("create", "r1", "--template", "tpl", check=True)
    h.hsctl("create", "r2", "--template", "tpl", check=True)
    res = {}

    def start(n):
        res[n] = h.request("POST", f"/v1/vms/{n}/start", timeout=120)[0]
    with LoopProbe(h) as p:
        ts = [threading.Thread(target=start, args=(n,)) for n in ("r1", "r2")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(130)
    # Both starts waited for the one load; neither got a half-made copy.
    assert res == {"r1": 200, "r2": 200}, res
    assert h.log_text().count("template tpl: RAM loaded") == 1, h.log_text()[-3000:]
    print(f"reload: slowest GET /v1 {p.worst * 1e3:.0f} ms of {p.n}")
    assert p.worst < 0.15, p.worst
    for n in ("r1", "r2"):
        h.console_wait(n, f"HS-CLONE {n} ", timeout=120)
        assert facts(h, n, n)[0] == "warm-marker-42"
        h.json("POST", f"/v1/vms/{n}/stop", {"force": True}, timeout=60)


def disk_src_spec(guest, name):
    s = src_spec(guest, name)
    s["cmdline"] = "console=ttyS0 hs.disk"
    s["disks"] = [{"size": "64M"}]
    return s


def disk_lines(h, name, tag):
    """The data file on the VM's disk as read from the disk (the guest's
    page cache dropped first)."""
    out = guest_run(h, name, f"sync; echo 3 > /proc/sys/vm/drop_caches; "
                    f"sed 's/^/L-{tag} /' /mnt/disk/data", tag)
    return re.findall(rf"^L-{tag} (\S+)", out.replace("\r", ""), re.M)


def disk_write(h, name, word):
    guest_run(h, name, f"echo {word} >> /mnt/disk/data; sync", f"w{word}")


def test_warm_managed_disk(hsd_factory, guest, memdir):
    """A source with a managed disk: the capture freezes its top layer by a
    live snapshot while paused, the frozen chain is flattened into the
    template's image after the source resumed (clones of the template are
    refused with 409 meanwhile), clones get a thin overlay on it."""
    h = hsd_factory(extra_args=["--memory-dir", memdir])
    h.json("POST", "/v1/vms", disk_src_spec(guest, "src"))
    h.json("POST", "/v1/vms/src/start", timeout=120)
    h.console_wait("src", "HS-DISK-READY", timeout=180)
    h.console_wait("src", "HS-IDENTITY", timeout=120)
    disk_write(h, "src", "before-capture")

    result, codes = {}, []

    def capture():
        result["r"] = h.request("POST", "/v1/templates",
                                {"name": "dtpl", "vm": "src", "warm": True}, timeout=300)

    whole = []
    t = threading.Thread(target=capture)
    t.start()
    while t.is_alive():
        st, js, _ = h.request("POST", "/v1/vms", {"name": "c0", "warm_template": "dtpl"},
                              timeout=60)
        codes.append((st, (js or {}).get("error", {}).get("message", "")
                      if isinstance((js or {}).get("error"), dict) else str(js)))
        if st == 201:
            # The capture's answer may still be on its way: the template
            # must be whole all the same.
            whole.append((h.state_dir / "templates" / "dtpl" / "template.json").exists())
            break
        time.sleep(0.02)
    t.join()
    st, cap, text = result["r"]
    assert st == 201, text
    print("capture:", {k: cap[k] for k in ("paused_ms", "freeze_ms", "copy_ms", "write_ms",
                                            "flatten_ms", "seconds")})
    print("clone creations during the capture:", sorted(set(c for c, _ in codes)))
    assert any(c == 409 for c, _ in codes), codes
    # Never a clone of a half-made template: refused until it is whole.
    assert all(c in (404, 409) for c, _ in codes[:-1]), codes
    assert codes[-1][0] in (404, 409) or whole == [True], (codes, whole)
    assert cap["disk_snapshot"] == "warm-dtpl"
    # The source keeps the snapshot that froze its disk.
    snaps = [s["name"] for s in h.json("GET", "/v1/vms/src/snapshots")["snapshots"]]
    assert "warm-dtpl" in snaps, snaps
    img = h.state_dir / "templates" / "dtpl" / "image"
    assert stat.S_IMODE(os.stat(img).st_mode) == 0o444
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(img)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info and info["virtual-size"] == 64 << 20
    tj = h.json("GET", "/v1/templates/dtpl")
    assert tj["kind"] == "warm" and tj["format"] == "qcow2", tj

    # The source goes on writing above the frozen layer.
    disk_write(h, "src", "after-capture")
    digest = hashlib.sha256(img.read_bytes()).hexdigest()

    for n in ("c0", "c1"):
        h.json("POST", "/v1/vms", {"name": n, "warm_template": "dtpl"}, expect=(201, 409))
    assert h.vm("c0")["spec"]["disks"][0]["template"] == "dtpl"
    for n in ("c0", "c1"):
        h.json("POST", f"/v1/vms/{n}/start", timeout=120)
        h.console_wait(n, f"HS-CLONE {n}", timeout=120)
    assert disk_lines(h, "c0", "a") == ["before-capture"]
    disk_write(h, "c0", "c0-only")
    assert disk_lines(h, "c0", "b") == ["before-capture", "c0-only"]
    assert disk_lines(h, "c1", "c") == ["before-capture"]
    assert disk_lines(h, "src", "d") == ["before-capture", "after-capture"]
    # The clone's disk is a thin overlay on the template's image.
    backings = []
    for f in (h.state_dir / "vms" / "c1" / "layers").iterdir():
        i = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(f)],
                                      capture_output=True, text=True, check=True).stdout)
        backings.append(i.get("backing-filename"))
    assert "../../../templates/dtpl/image" in backings, backings
    assert hashlib.sha256(img.read_bytes()).hexdigest() == digest
    # In use: the template stays.
    st, _, _ = h.request("DELETE", "/v1/templates/dtpl")
    assert st == 409


def test_warm_disk_crash_while_flattening(hsd_factory, guest, memdir, tmp_path):
    """hsd killed while the frozen disk is being flattened: at restart the
    half-made template is gone, and clones of it are refused (404)."""
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "qemu-img").write_text(
        "#!/bin/sh\ncase \"$1\" in convert) sleep 30;; esac\nexec /usr/bin/qemu-img \"$@\"\n")
    (slow / "qemu-img").chmod(0o755)
    prefix = ["env", f"PATH={slow}:{os.environ.get('PATH', '/usr/bin:/bin')}"]
    h = hsd_factory(extra_args=["--memory-dir", memdir], prefix=prefix)
    h.json("POST", "/v1/vms", disk_src_spec(guest, "src"))
    h.json("POST", "/v1/vms/src/start", timeout=120)
    h.console_wait("src", "HS-DISK-READY", timeout=180)
    def capture():
        try:  # cut by the kill
            h.request("POST", "/v1/templates", {"name": "dtpl", "vm": "src", "warm": True},
                      timeout=300)
        except OSError:
            pass

    t = threading.Thread(target=capture)
    t.start()
    wait_for(lambda: "flattening vm src" in h.log_text(), 120, "the flatten")
    st, js, _ = h.request("POST", "/v1/vms", {"name": "c0", "warm_template": "dtpl"})
    assert st == 409 and "flattened" in js["error"]["message"], js
    assert h.state("src") == "running"
    h.kill9()
    t.join()
    h.start()
    tdir = h.state_dir / "templates"
    assert not [p for p in os.listdir(tdir) if "dtpl" in p], os.listdir(tdir)
    st, _, _ = h.request("POST", "/v1/vms", {"name": "c0", "warm_template": "dtpl"})
    assert st == 404
    h.wait_state("src", "running", 60)


def test_warm_clone_migrates(hsd_factory, guest):
    """A running warm clone live-migrates to another hsd with its RAM sent
    in full (x-ignore-shared off: the destination has no template): the
    template's marker and the clone's own are in its RAM there, the uptime
    goes on, and there it is an ordinary memory_file VM (no warm_template)
    with a RAM file of its own. The source keeps a "migrated" record that
    uses the template no more."""
    from test_migration import drop_hosts, make_hosts, migrate
    hosts = make_hosts(hsd_factory)
    try:
        a, b = hosts["A"], hosts["B"]
        make_template(a, guest, then="stop")
        a.hsctl("create", "c0", "--template", "tpl", check=True)
        a.json("POST", "/v1/vms/c0/start", timeout=120)
        a.console_wait("c0", "HS-CLONE c0 ", timeout=120)
        guest_run(a, "c0", "echo c0-own > /tmp/marker2", "w")
        marker, boot_id, up0, mac = facts(a, "c0", "before")
        assert marker == "warm-marker-42"
        r = migrate(a, b, "c0")
        assert r.returncode == 0, r.stderr + r.stdout
        print(r.stdout.strip())
        assert a.vm("c0")["state"] == "migrated"
        vm = b.vm("c0")
        assert vm["state"] == "running", vm
        assert vm["spec"]["memory_file"] and "warm_template" not in vm["spec"], vm["spec"]
        assert vm["spec"]["nics"][0]["mac"] == mac
        m2, bid, up, gmac = facts(b, "c0", "after")
        assert (m2, bid, gmac) == (marker, boot_id, mac), "the guest's RAM or identity changed"
        assert up > up0, (up, up0)
        out = guest_run(b, "c0", "echo M2 $(cat /tmp/marker2)", "m2")
        assert "M2 c0-own" in out
        ram = b.run_dir / "memory" / "c0.ram"
        assert ram.stat().st_size == MEMORY << 20
        # The template on A has no user left: the record is no clone.
        assert a.json("GET", "/v1/templates/tpl")["users"] == []
        a.json("DELETE", "/v1/templates/tpl")
        b.json("POST", "/v1/vms/c0/kill", timeout=60)
        wait_for(lambda: b.state("c0") in ("stopped", "crashed"), 30, "c0 to stop on B")
        assert not list((b.run_dir / "memory").iterdir()), "the RAM file stayed"
    finally:
        drop_hosts(hosts)


def test_warm_clone_migrates_with_its_disk_and_postcopy(hsd_factory, guest):
    """A warm clone whose disk is a thin overlay on its template's image
    moves with storage "copy" (the destination has neither the template nor
    its image: it gets the whole disk), and a clone without disks moves by
    post-copy (the guest runs on B while the rest of its RAM, sent in full,
    follows; post-copy does not go with copied disks). Disk contents, RAM
    markers and the uptime all carry on."""
    from test_migration import drop_hosts, make_hosts, migrate
    uffd = "/proc/sys/vm/unprivileged_userfaultfd"
    try:
        saved_uffd = open(uffd).read().strip()
        open(uffd, "w").write("1")  # B's QEMU (not root) takes the post-copy faults
    except OSError as e:
        pytest.skip(f"{uffd} cannot be written here ({e})")
    hosts = None
    try:
        hosts = make_hosts(hsd_factory)
        a, b = hosts["A"], hosts["B"]
        a.json("POST", "/v1/vms", disk_src_spec(guest, "src"))
        a.json("POST", "/v1/vms/src/start", timeout=120)
        a.console_wait("src", "HS-DISK-READY", timeout=180)
        a.console_wait("src", "HS-IDENTITY", timeout=120)
        disk_write(a, "src", "in-template")
        guest_run(a, "src", "echo warm-marker-42 > /tmp/marker", "mk")
        a.json("POST", "/v1/templates", {"name": "dtpl", "vm": "src", "warm": True,
                                         "then": "stop"}, timeout=300)
        wait_for(lambda: a.request("POST", "/v1/vms", {"name": "d0", "warm_template": "dtpl"},
                                   timeout=60)[0] == 201, 120, "the template's image")
        a.json("POST", "/v1/vms", src_spec(guest, "src2"))
        a.json("POST", "/v1/vms/src2/start", timeout=120)
        a.console_wait("src2", "HS-IDENTITY", timeout=120)
        guest_run(a, "src2", "echo warm-marker-42 > /tmp/marker", "mk2")
        a.json("POST", "/v1/templates", {"name": "tpl", "vm": "src2", "warm": True,
                                         "then": "stop"}, timeout=300)
        a.json("POST", "/v1/vms", {"name": "p0", "warm_template": "tpl"})
        for n in ("d0", "p0"):
            a.json("POST", f"/v1/vms/{n}/start", timeout=120)
            a.console_wait(n, f"HS-CLONE {n} ", timeout=120)
        disk_write(a, "d0", "d0-own")
        guest_run(a, "p0", "echo p0-own > /tmp/marker2", "p")

        # The disk clone, with its disk copied.
        marker, boot_id, up0, mac = facts(a, "d0", "d-before")
        r = migrate(a, b, "d0", "--storage", "copy")
        assert r.returncode == 0, r.stderr + r.stdout
        assert a.vm("d0")["state"] == "migrated"
        vm = b.vm("d0")
        assert vm["state"] == "running" and "warm_template" not in vm["spec"], vm
        m2, bid, up, gmac = facts(b, "d0", "d-after")
        assert (m2, bid, gmac) == (marker, boot_id, mac) and up > up0, (m2, bid, up, up0)
        assert disk_lines(b, "d0", "x") == ["in-template", "d0-own"]
        # B's disk stands on its own: no backing file on A's template.
        for f in (b.state_dir / "vms" / "d0" / "layers").iterdir():
            i = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(f)],
                                          capture_output=True, text=True, check=True).stdout)
            assert "templates" not in (i.get("backing-filename") or ""), (f, i)

        # The other clone by post-copy.
        marker, boot_id, up0, mac = facts(a, "p0", "p-before")
        r = migrate(a, b, "p0", "--postcopy")
        assert r.returncode == 0, r.stderr + r.stdout
        vm = b.vm("p0")
        assert vm["state"] == "running" and vm["spec"]["memory_file"], vm
        m2, bid, up, gmac = facts(b, "p0", "p-after")
        assert (m2, bid, gmac) == (marker, boot_id, mac) and up > up0
        assert "M2 p0-own" in guest_run(b, "p0", "echo M2 $(cat /tmp/marker2)", "m2")
        # The records left on A: p0's holds its template no more; d0's keeps
        # its disk, which stands on dtpl's image, until the record goes.
        assert a.json("GET", "/v1/templates/tpl")["users"] == []
        assert a.json("GET", "/v1/templates/dtpl")["users"] == ["d0"]
        a.json("DELETE", "/v1/vms/d0")
        assert a.json("GET", "/v1/templates/dtpl")["users"] == []
        for n in ("d0", "p0"):
            b.json("POST", f"/v1/vms/{n}/kill", timeout=60)
    finally:
        if hosts:
            drop_hosts(hosts)
        open(uffd, "w").write(saved_uffd)
