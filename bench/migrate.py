#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Migration benchmark: live migration of a 512 MiB TCG test guest with
256 MiB of its RAM filled (hs.fill=256), between two network namespaces A
and B joined by a veth pair, through two hsd (hsctl migrate), against raw
QEMU driven by hand over QMP in the same run.

Two cases, each --rounds times (3; --quick 1), raw and hsd interleaved and
rotated (benchlib.rounds):
  idle   the guest does nothing once its fill is done;
  dirty  the guest keeps rewriting DIRTY_MIB (64) MiB of a tmpfs file in a
         shell loop during the migration (dd from /hsfill/fill, conv=notrunc);
         auto-converge on, on both sides (without it such a guest never fits
         a 50 ms downtime under TCG).

For each migration (downtime limit 50 ms on both sides):
  - QEMU's own figures from the source's query-migrate (raw) or hsd's
    GET /v1/vms/NAME/migration progress (hsd): downtime, total time,
    bytes sent, dirty syncs;
  - the switchover as the guest sees it: the source QEMU's STOP event to
    the destination QEMU's RESUME event (QMP event timestamps; both QEMUs
    run on this host, one clock). Raw: read on both QMP sockets. hsd: on
    both hsd's GET /v1/events streams ({"type":"qmp","event":...,"time"}).
  - the destination's share of it ("dest share"): the source's MIGRATION
    "completed" event to the destination's RESUME (raw: QEMU resumes on
    its own, 'cont' having been sent while it waited; hsd: B sees its own
    MIGRATION "completed", then query-migrate, migrate-set-capabilities,
    cont);
  - wall time: raw from 'migrate' to the destination's RESUME; hsd the
    whole `hsctl migrate` (incoming setup, stream, confirm);
  - dirty case: the highest CPU throttle auto-converge reached (raw:
    query-migrate every 0.2 s; hsd: query-migrate through hsd's QMP
    passthrough every 0.25 s, as hsd's progress does not carry it).

Raw QEMU: the argv hsd builds (benchlib.raw_argv) plus the options hsd's own
logged argv adds that change the guest (TCG tb-size, the balloon device),
started with `ip netns exec` like hsd's QEMUs; the destination gets
`-incoming tcp:B:PORT`. Targets (the issue): hsd's switchover within 10 ms of
raw QEMU's, and under 50 ms end to end.

Usage: /usr/bin/python3 bench/migrate.py [--quick] [--keep] [--base DIR]
See bench/README.md ("Migration benchmark"). Python 3 standard library only."""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    collect_hsd_logs, report_run_end,
    HSCTL, HSD, QEMU, RUN_ERRORS, BenchError, Hsd, LineReader, RawQemu, Registry, api,
    argv_option_diff, binary_info, build_guest, catch_signals, console_has, exit_status, git_rev,
    host_info, hsd_exec_line, hsd_extra_args, log, need_files, new_workdir, now, percentile,
    raw_argv, remove_workdir, rounds, run_error, uninterrupted, version_line, wait_for,
    write_results)

RESULTS = Path(__file__).resolve().parent / "results"
# The hsd and hsctl this run uses: copies made at its start (see main), so
# that a rebuild during the run cannot pair a new hsctl with the old hsd.
BIN = {"hsd": HSD, "hsctl": HSCTL}
IP = shutil.which("ip") or "/usr/sbin/ip"
MIB = 1 << 20
MEMORY_MIB = 512
FILL_MIB = 256
DOWNTIME_MS = 50
DIRTY_MIB = 64
# As the other benches: no_timer_check avoids the IO-APIC timer check
# failing on overcommitted TCG guests.
CMDLINE = f"console=ttyS0 no_timer_check hs.fill={FILL_MIB}"
RAW_PORT = 49400          # raw destinations; hsd's are in --migration-ports (49152-49215)
TARGET_DIFF_MS = 10.0     # hsd's switchover within 10 ms of raw QEMU's
TARGET_E2E_MS = 50.0      # hsd's switchover under 50 ms end to end
CASES = ("idle", "dirty")

FULL = dict(rounds=3, boot_timeout=240, migrate_timeout=300, budget=2400)
QUICK = dict(rounds=1, boot_timeout=240, migrate_timeout=300, budget=1200)


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def med(v):
    v = [x for x in v if x is not None]
    return percentile(v, 50) if v else None


def ip(*args):
    r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BenchError(f"ip {' '.join(args)}: {r.stderr.strip()}")


# ------------------------------------------------------------------ network

class Netns:
    """Two namespaces joined by a veth pair, addresses 10.O.9.1 (A) and
    10.O.9.2 (B); remove() deletes whatever was made."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.ns = {"A": f"hsmb{tag}a", "B": f"hsmb{tag}b"}
        self.veth = {"A": f"hmb{tag}a", "B": f"hmb{tag}b"}
        octet = os.getpid() % 200 + 20
        self.addr = {"A": f"10.{octet}.9.1", "B": f"10.{octet}.9.2"}
        self.made = []

    def create(self):
        for k in ("A", "B"):
            ip("netns", "add", self.ns[k])
            self.made.append(self.ns[k])
        ip("link", "add", self.veth["A"], "type", "veth", "peer", "name", self.veth["B"])
        self.made.append("veth")
        for k in ("A", "B"):
            ip("link", "set", self.veth[k], "netns", self.ns[k])
            ip("-n", self.ns[k], "addr", "add", f"{self.addr[k]}/24", "dev", self.veth[k])
            ip("-n", self.ns[k], "link", "set", self.veth[k], "up")
            ip("-n", self.ns[k], "link", "set", "lo", "up")

    def prefix(self, k):
        return [IP, "netns", "exec", self.ns[k]]

    def remove(self, log=print):
        if "veth" in self.made:
            # Gone with its namespace, or still in the root one if the move failed.
            subprocess.run([IP, "link", "del", self.veth["A"]], capture_output=True, timeout=30)
        for n in self.made:
            if n == "veth":
                continue
            r = subprocess.run([IP, "netns", "del", n], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                log(f"cleanup: ip netns del {n}: {r.stderr.strip()}")
        self.made = []


def ns_hsd(base, registry, extra_args, prefix):
    """An hsd started inside a network namespace (`ip netns exec NS hsd
    ...`: ip execs hsd, so the pid is hsd's), from the run's copy."""
    return Hsd(base, registry, extra_args, prefix=prefix, binary=BIN["hsd"])


# ------------------------------------------------------------------ hsd's event stream

class EventStream(threading.Thread):
    """GET /v1/events on one hsd, in the background: every JSON line about
    VM `vm`, with the time it arrived (time.time())."""

    def __init__(self, sock_path, vm):
        super().__init__(daemon=True)
        self.sock_path = sock_path
        self.vm = vm
        self.events = []
        self.error = None
        self.live = threading.Event()
        self.sock = None

    def run(self):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock = s
            s.settimeout(600)
            s.connect(self.sock_path)
            # Unfiltered, filtered here: in hsd builds before 5583f04 the
            # ?vm= filter delivered nothing (the event's "vm" read after
            # the event was freed).
            s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: hsd\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                c = s.recv(65536)
                if not c:
                    raise BenchError("events: closed before the headers")
                buf += c
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if int(lines[0].split()[1]) != 200:
                raise BenchError(f"events: {lines[0]}")
            chunked = any(ln.lower().startswith("transfer-encoding:") and "chunked" in ln.lower()
                          for ln in lines[1:])
            body = b""
            while True:
                if chunked:
                    # Whole chunks out of buf into body.
                    while b"\r\n" in buf:
                        size_s, _, rest = buf.partition(b"\r\n")
                        size = int(size_s.split(b";")[0], 16)
                        if len(rest) < size + 2:
                            break
                        if size == 0:
                            return
                        body += rest[:size]
                        buf = rest[size + 2:]
                else:
                    body, buf = body + buf, b""
                while b"\n" in body:
                    ln, _, body = body.partition(b"\n")
                    if ln.strip():
                        ev = json.loads(ln)
                        if ev.get("type") == "hello":
                            self.live.set()
                        elif ev.get("vm") == self.vm:
                            self.events.append((time.time(), ev))
                c = s.recv(65536)
                if not c:
                    return
                buf += c
        except Exception as e:  # reported by the caller
            if self.sock is not None:
                self.error = e
        finally:
            self.live.set()

    def stop(self):
        s, self.sock = self.sock, None
        if s:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.join(5)

    def qmp(self, name):
        """(QMP timestamp, data) of each QMP event `name`."""
        return [(e["time"], e.get("data")) for _, e in list(self.events)
                if e.get("type") == "qmp" and e.get("event") == name]


# ------------------------------------------------------------------ raw QMP

class Qmp:
    """Commands and events on a RawQemu's QMP socket (already past
    qmp_capabilities). Events are kept with QEMU's timestamps."""

    def __init__(self, rq):
        self.rd = LineReader(rq.qmp)
        self.sock = rq.qmp
        self.events = []

    def _take(self, m):
        if "event" in m:
            ts = m.get("timestamp", {})
            self.events.append((ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6,
                                m["event"], m.get("data")))
            return True
        return False

    def cmd(self, name, args=None, timeout=30.0):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.rd.line(deadline)
            except (TimeoutError, socket.timeout):
                raise BenchError(f"QMP {name}: no answer within {timeout:g}s") from None
            if self._take(m):
                continue
            if "error" in m:
                raise BenchError(f"QMP {name}: {m['error']}")
            if "return" in m:
                return m["return"]

    def wait_event(self, pred, timeout):
        """The first event (kept or new) for which pred(name, data) holds."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if pred(e[1], e[2]):
                    return e
            try:
                self._take(self.rd.line(deadline))
            except (TimeoutError, socket.timeout):
                raise BenchError(f"QMP: no such event within {timeout:g}s") from None

    def pump(self, seconds):
        """Reads events for up to `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._take(self.rd.line(deadline))
        except (TimeoutError, socket.timeout):
            pass
        except BenchError as e:
            if "timed out" not in str(e):
                raise

    def first(self, name, status=None):
        for ts, n, d in self.events:
            if n == name and (status is None or (d or {}).get("status") == status):
                return ts
        return None


# ------------------------------------------------------------------ guest workload

def wait_filled(console_log, timeout, who, check=None):
    """HS-GUEST-FILLED N on a console log; HS-GUEST-FILL-FAILED is an error."""
    def filled():
        if check:
            check()
        if console_has(console_log, f"HS-GUEST-FILLED {FILL_MIB}"):
            return True
        if console_has(console_log, "HS-GUEST-FILL-FAILED"):
            raise BenchError(f"{who}: HS-GUEST-FILL-FAILED {FILL_MIB}")
        return False
    wait_for(filled, timeout, f"HS-GUEST-FILLED {FILL_MIB} on {who}'s console", interval=0.2)


def dirty_cmd(tag):
    """The shell line that starts the dirtying loop in the background (once:
    a pid file guards it, so the line may be sent again) and says so with a
    marker (split so that the echoed command line does not contain it)."""
    return (f"[ -e /tmp/hsdirty.pid ] || {{ (while :; do dd if=/hsfill/fill of=/tmp/hsdirty "
            f"bs=1M count={DIRTY_MIB} conv=notrunc 2>/dev/null; done) </dev/null >/dev/null 2>&1 & "
            f"echo $! > /tmp/hsdirty.pid; }}; echo HSDIRTY-{tag}-o$(echo n)")


def wait_prompt(console_log, timeout, who):
    """The guest's shell is there (its prompt after HS-GUEST-FILLED): input
    sent before it starts is lost."""
    def ready():
        try:
            txt = Path(console_log).read_bytes()
        except OSError:
            return False
        i = txt.find(f"HS-GUEST-FILLED {FILL_MIB}".encode())
        return i >= 0 and b"guest# " in txt[i:]
    wait_for(ready, timeout, f"the shell prompt on {who}'s console", interval=0.2)


def raw_start_dirty(rq, serial_log, tag, timeout=60):
    wait_prompt(serial_log, timeout, "the raw guest")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(str(rq.dir / "console.sock"))
        for attempt in range(3):
            s.sendall(b"\n" + dirty_cmd(tag).encode() + b"\n")
            try:
                wait_for(lambda: console_has(serial_log, f"HSDIRTY-{tag}-on\r") or
                         console_has(serial_log, f"HSDIRTY-{tag}-on\n"), timeout / 3,
                         "the guest to start its dirtying loop")
                return
            except BenchError:
                if attempt == 2:
                    raise
    finally:
        s.close()


def hsd_start_dirty(h, name, tag, timeout=60):
    wait_prompt(h.state_dir / "vms" / name / "console.log", timeout, name)
    for attempt in range(3):
        r = subprocess.run([str(BIN["hsctl"]), "--socket", h.socket, "console", name, "--no-replay",
                            "--wait-for", f"HSDIRTY-{tag}-on", "--timeout", str(timeout // 3)],
                           input="\n" + dirty_cmd(tag) + "\n", capture_output=True, text=True,
                           timeout=timeout + 15)
        if r.returncode == 0:
            return
    raise BenchError(f"starting the dirtying loop: hsctl rc={r.returncode}: "
                     f"{r.stderr.strip()[-400:]} {r.stdout[-400:]}")


# ------------------------------------------------------------------ one migration, raw

class Ctx:
    def __init__(self, net, a, b, guest, reg, base, p, args):
        self.net, self.a, self.b, self.guest, self.reg, self.base, self.p = net, a, b, guest, reg, base, p
        self.args = args
        self.n = 0
        self.extra_raw = []     # options mirrored from hsd's argv
        self.machine = None
        self.hsd_argv = None


def raw_vm_argv(ctx, name, serial_log):
    argv = raw_argv(name, MEMORY_MIB, ctx.guest["kernel"], ctx.guest["initrd"], CMDLINE,
                    str(serial_log), sandbox=ctx.hsd_argv is None or "-sandbox" in ctx.hsd_argv)
    if ctx.machine:  # hsd's -machine (with its -accel, in extra_raw)
        argv[argv.index("-machine") + 1] = ctx.machine
    return argv + ctx.extra_raw


def measure_raw(ctx, case, i, out):
    ctx.n += 1
    d = ctx.base / "raw" / f"{case}{i}"
    port = RAW_PORT + ctx.n
    src_log, dst_log = d / "src" / "console.log", d / "dst" / "console.log"
    src = RawQemu(ctx.net.prefix("A") + raw_vm_argv(ctx, f"raw-{case}{i}", src_log), d / "src", ctx.reg)
    dst = None
    try:
        t0 = now()
        src.start()
        wait_filled(src_log, ctx.p["boot_timeout"], "the raw guest")
        out["boot_fill_s"] = now() - t0
        if case == "dirty":
            raw_start_dirty(src, src_log, f"r{ctx.n}")
            time.sleep(ctx.args.dirty_settle)
        dst_argv = raw_vm_argv(ctx, f"raw-{case}{i}", dst_log) + \
            ["-incoming", f"tcp:{ctx.net.addr['B']}:{port}"]
        dst = RawQemu(ctx.net.prefix("B") + dst_argv, d / "dst", ctx.reg)
        dst.start()   # its 'cont' while it waits: QEMU resumes the guest itself on arrival
        qs, qd = Qmp(src), Qmp(dst)
        qd.cmd("migrate-set-capabilities",
               {"capabilities": [{"capability": "events", "state": True}]})
        caps = [{"capability": "events", "state": True}]
        if case == "dirty" and ctx.args.auto_converge:
            caps.append({"capability": "auto-converge", "state": True})
        qs.cmd("migrate-set-capabilities", {"capabilities": caps})
        params = {"downtime-limit": DOWNTIME_MS}
        if ctx.args.bandwidth:
            params["max-bandwidth"] = ctx.args.bandwidth
        qs.cmd("migrate-set-parameters", params)
        out["qemu_params"] = qs.cmd("query-migrate-parameters")
        t_mig = now()
        qs.cmd("migrate", {"uri": f"tcp:{ctx.net.addr['B']}:{port}"})
        deadline = time.monotonic() + ctx.p["migrate_timeout"]
        throttle, info = 0, None
        while True:
            info = qs.cmd("query-migrate")
            throttle = max(throttle, info.get("cpu-throttle-percentage", 0))
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                qs.cmd("migrate_cancel")
                raise BenchError(f"raw migration not done after {ctx.p['migrate_timeout']}s: {info}")
            qs.pump(0.2)   # hsd polls every 0.2 s too (and on events)
        t_done = now()
        # QEMU 7.2 says "completed" a moment before it has computed
        # total-time and downtime (migration_calculate_complete, later, in
        # the migration thread): ask again until they are there.
        for _ in range(20):
            if info.get("status") != "completed" or info.get("total-time"):
                break
            out["requeried"] = out.get("requeried", 0) + 1
            time.sleep(0.05)
            info = qs.cmd("query-migrate")
        if info.get("status") != "completed":
            raise BenchError(f"raw migration {info.get('status')}: {info.get('error-desc')}")
        resume = qd.wait_event(lambda n, _: n == "RESUME", 30)
        out["wall_s"] = now() - t_mig
        out["completed_seen_s"] = t_done - t_mig
        try:   # QEMU says "completed" on the destination after it resumed the guest
            qd.wait_event(lambda n, d: n == "MIGRATION" and (d or {}).get("status") == "completed", 5)
        except BenchError:
            pass
        stop_ts = qs.first("STOP")
        src_done = qs.first("MIGRATION", "completed")
        dst_done = qd.first("MIGRATION", "completed")
        if stop_ts is None:
            raise BenchError("raw: no STOP event from the source")
        ram = info.get("ram", {})
        out.update({
            "converged": True,
            "downtime_ms": info.get("downtime"), "total_time_ms": info.get("total-time"),
            "setup_time_ms": info.get("setup-time"),
            "transferred_bytes": ram.get("transferred"), "dirty_syncs": ram.get("dirty-sync-count"),
            "mbps": ram.get("mbps"), "max_throttle_pct": throttle,
            "switchover_ms": (resume[0] - stop_ts) * 1000.0,
            "dst_resume_after_complete_ms": None if src_done is None else (resume[0] - src_done) * 1000.0,
            "stop_ts": stop_ts, "resume_ts": resume[0], "src_complete_ts": src_done,
            "dst_complete_ts": dst_done,
        })
        st = qd.cmd("query-status")
        if st.get("status") != "running":
            raise BenchError(f"raw destination is {st} after the migration")
    finally:
        for q in (dst, src):
            if q is not None and q.pid is not None and q.pid in ctx.reg.raw_children:
                try:
                    q.stop()
                except (OSError, BenchError) as e:
                    log(f"  raw QEMU pid {q.pid}: {e} (killed at the end)")
    return out


# ------------------------------------------------------------------ one migration, hsd

def vm_spec(ctx, name):
    return {"name": name, "cpus": 1, "memory_mib": MEMORY_MIB, "accel": "tcg",
            "kernel": ctx.guest["kernel"], "initrd": ctx.guest["initrd"], "cmdline": CMDLINE,
            "nics": [{"type": "user"}]}


def hsd_remove(h, name):
    """Kills (if it runs) and deletes the VM on one hsd, errors ignored but said."""
    try:
        st, js = api(h.socket, "GET", f"/v1/vms/{name}", timeout=10, expect=None)
        if st == 404:
            return
        if js.get("state") in ("running", "paused", "starting", "incoming", "stopping"):
            api(h.socket, "POST", f"/v1/vms/{name}/kill", timeout=30, expect=None)
        st, js = api(h.socket, "DELETE", f"/v1/vms/{name}", timeout=30, expect=None)
        if st not in (200, 204):
            log(f"  note: DELETE {name} on {h.base.name}: HTTP {st}: {js}")
    except Exception as e:
        log(f"  note: removing {name} from {h.base.name}: {e}")


def learn_hsd_argv(ctx):
    """Warm-up: one VM started on hsd A and killed, for hsd's QEMU argv; the
    raw baseline gets the options hsd adds that change the guest."""
    a = ctx.a
    name = "warm"
    api(a.socket, "POST", "/v1/vms", vm_spec(ctx, name))
    try:
        api(a.socket, "POST", f"/v1/vms/{name}/start", {}, timeout=60)
        a.collect_qemu_pids(ctx.reg)
        line = hsd_exec_line(a.state_dir / "vms" / name / "qemu.log")
    finally:
        hsd_remove(a, name)
    argv = shlex.split(line)
    ctx.hsd_argv = argv
    extra = []
    for k, v in zip(argv, argv[1:]):
        if k == "-accel" and v.startswith("tcg"):
            extra += [k, v]
            ctx.machine = argv[argv.index("-machine") + 1]
        if k == "-device" and v.startswith("virtio-balloon"):
            extra += [k, v]
    ctx.extra_raw = extra
    raw = raw_vm_argv(ctx, "x", ctx.base / "x.log")
    only_hsd, only_raw = argv_option_diff(argv, raw)
    return {"hsd_argv": argv, "raw_argv": raw, "mirrored": extra,
            "options_only_hsd": only_hsd, "options_only_raw": only_raw}


def measure_hsd(ctx, case, i, out):
    a, b = ctx.a, ctx.b
    ctx.n += 1
    name = f"m{case[0]}{i}n{ctx.n}"
    out["vm"] = name
    ev_a = ev_b = None
    try:
        api(a.socket, "POST", "/v1/vms", vm_spec(ctx, name))
        t0 = now()
        api(a.socket, "POST", f"/v1/vms/{name}/start", {}, timeout=60)
        a.collect_qemu_pids(ctx.reg)
        clog = a.state_dir / "vms" / name / "console.log"
        wait_filled(clog, ctx.p["boot_timeout"], name, a.check_alive)
        out["boot_fill_s"] = now() - t0
        if case == "dirty":
            hsd_start_dirty(a, name, f"h{ctx.n}")
            time.sleep(ctx.args.dirty_settle)
        ev_a, ev_b = EventStream(a.socket, name), EventStream(b.socket, name)
        for ev in (ev_a, ev_b):
            ev.start()
            ev.live.wait(10)
            if ev.error:
                raise BenchError(f"events stream: {ev.error}")
        cmd = [str(BIN["hsctl"]), "--socket", a.socket, "migrate", name, "--to", b.socket,
               "--downtime", str(DOWNTIME_MS), "--timeout", str(int(ctx.p["migrate_timeout"]))]
        if case == "dirty" and ctx.args.auto_converge:
            cmd.append("--auto-converge")
        if ctx.args.bandwidth:
            cmd += ["--bandwidth", str(ctx.args.bandwidth)]
        # Sample the source's throttle through hsd's QMP passthrough (dirty case).
        samples = {"throttle": 0, "n": 0}
        stop_sampler = threading.Event()

        def sampler():
            while not stop_sampler.wait(0.25):
                try:
                    st, js = api(a.socket, "POST", f"/v1/vms/{name}/qmp",
                                 {"execute": "query-migrate"}, timeout=5, expect=None)
                    if st == 200 and isinstance(js, dict) and "return" in js:
                        samples["n"] += 1
                        samples["throttle"] = max(samples["throttle"],
                                                  js["return"].get("cpu-throttle-percentage", 0))
                except Exception:
                    pass
        th = None
        if case == "dirty":
            th = threading.Thread(target=sampler, daemon=True)
            th.start()
        t_mig = now()
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=ctx.p["migrate_timeout"] + 120)
        out["wall_s"] = now() - t_mig
        stop_sampler.set()
        if th:
            th.join(10)
        b.collect_qemu_pids(ctx.reg)
        out["hsctl_rc"] = r.returncode
        out["hsctl_stdout"] = r.stdout.strip()
        out["hsctl_stderr_tail"] = r.stderr.strip()[-600:]
        if r.returncode != 0:
            out["converged"] = False
            raise BenchError(f"hsctl migrate rc={r.returncode}: {r.stderr.strip()[-600:]}")
        st, mig = api(a.socket, "GET", f"/v1/vms/{name}/migration", timeout=10, expect=None)
        out["migration_get_status"] = st
        if st != 200:
            # Gone with the source's QEMU: the last record hsd published.
            recs = [e["migration"] for _, e in ev_a.events if e.get("type") == "migration"]
            done = [x for x in recs if x.get("phase") in ("completed", "confirmed")]
            mig = (done or recs or [{}])[-1]
        out["migration"] = mig
        prog = mig.get("progress", {})
        # The events: the source's STOP, the destination's RESUME.
        wait_for(lambda: ev_b.qmp("RESUME"), 15, "the destination's RESUME on hsd B's events")
        stops = ev_a.qmp("STOP")
        if not stops:
            wait_for(lambda: ev_a.qmp("STOP"), 5, "the source's STOP on hsd A's events")
            stops = ev_a.qmp("STOP")
        stop_ts, resume_ts = stops[0][0], ev_b.qmp("RESUME")[0][0]
        dst_done = [t for t, d in ev_b.qmp("MIGRATION") if (d or {}).get("status") == "completed"]
        src_done = [t for t, d in ev_a.qmp("MIGRATION") if (d or {}).get("status") == "completed"]
        out.update({
            "converged": mig.get("phase") in ("completed", "confirmed"),
            "phase": mig.get("phase"),
            "downtime_ms": prog.get("downtime_ms"), "total_time_ms": prog.get("total_time_ms"),
            "setup_time_ms": prog.get("setup_time_ms"),
            "transferred_bytes": prog.get("transferred_bytes"), "dirty_syncs": prog.get("dirty_syncs"),
            "mbps": prog.get("mbps"), "max_throttle_pct": samples["throttle"] if th else 0,
            "throttle_samples": samples["n"],
            "switchover_ms": (resume_ts - stop_ts) * 1000.0,
            "dst_resume_after_complete_ms": (resume_ts - src_done[0]) * 1000.0 if src_done else None,
            "src_complete_ts": src_done[0] if src_done else None,
            "dst_complete_ts": dst_done[0] if dst_done else None,
            "dst_resume_after_dst_complete_ms": (resume_ts - dst_done[0]) * 1000.0 if dst_done else None,
            "stop_ts": stop_ts, "resume_ts": resume_ts, "stops": len(stops),
        })
        if prog.get("total_time_ms") == 0:
            # hsd read QEMU's "completed" before QEMU had its figures (see
            # the README): not a measure, kept aside.
            out["hsd_figures_unset"] = True
            out["reported_downtime_ms"] = out.pop("downtime_ms")
            out["reported_total_time_ms"] = out.pop("total_time_ms")
            out["downtime_ms"] = out["total_time_ms"] = None
        m = re.search(r"in ([\d.]+) s \(downtime (\d+) ms", r.stdout)
        if m:
            out["hsctl_total_s"], out["hsctl_downtime_ms"] = float(m.group(1)), int(m.group(2))
        _, vb = api(b.socket, "GET", f"/v1/vms/{name}", timeout=10)
        _, va = api(a.socket, "GET", f"/v1/vms/{name}", timeout=10)
        out["dest_state"], out["source_state"] = vb.get("state"), va.get("state")
        if vb.get("state") != "running":
            raise BenchError(f"{name} is {vb.get('state')} on B after the migration")
        out["events_a"] = [e for _, e in ev_a.events if e.get("type") != "hello"][-40:]
        out["events_b"] = [e for _, e in ev_b.events if e.get("type") != "hello"][-40:]
    finally:
        for ev in (ev_a, ev_b):
            if ev is not None:
                ev.stop()
        if "events_a" not in out and ev_a is not None:
            out["events_a"] = [e for _, e in ev_a.events][-40:]
            out["events_b"] = [e for _, e in ev_b.events][-40:]
            out["events_errors"] = [str(ev_a.error), str(ev_b.error)]
        for h in (b, a):
            if h.alive():
                h.collect_qemu_pids(ctx.reg)
                hsd_remove(h, name)
    return out


# ------------------------------------------------------------------ summary

def show(m):
    """One progress line."""
    mib = None if m.get("transferred_bytes") is None else m["transferred_bytes"] / MIB
    extra = ""
    if m["case"] == "dirty":
        extra = f", throttle max {m.get('max_throttle_pct')} %, {m.get('dirty_syncs')} syncs"
    if m["kind"] == "hsd":
        extra += f", hsctl {m['wall_s']:.2f} s"
    log(f"  [{m['round'] + 1}] {m['case']:5} {m['kind']:3}: downtime {fmt(m.get('downtime_ms'), 0)} ms, "
        f"STOP->RESUME {fmt(m.get('switchover_ms'))} ms (source completed->dest RESUME "
        f"{fmt(m.get('dst_resume_after_complete_ms'))} ms), total {fmt(m.get('total_time_ms'), 0)} ms, "
        f"{fmt(mib)} MiB{extra}")


def summary_rows(meas):
    rows = []
    for case in CASES:
        raw = [m for m in meas if m["case"] == case and m["kind"] == "raw" and m.get("converged")]
        hs = [m for m in meas if m["case"] == case and m["kind"] == "hsd" and m.get("converged")]
        if not raw and not hs:
            continue

        def col(v, k, scale=1.0):
            x = med([m.get(k) for m in v])
            return None if x is None else x * scale
        r = {"case": case, "n_raw": len(raw), "n_hsd": len(hs)}
        for k, key, sc in (("downtime", "downtime_ms", 1.0), ("switchover", "switchover_ms", 1.0),
                           ("dest", "dst_resume_after_complete_ms", 1.0),
                           ("total", "total_time_ms", 1.0), ("mib", "transferred_bytes", 1.0 / MIB),
                           ("wall", "wall_s", 1.0), ("throttle", "max_throttle_pct", 1.0),
                           ("react", "dst_resume_after_dst_complete_ms", 1.0)):
            r[f"raw_{k}"], r[f"hsd_{k}"] = col(raw, key, sc), col(hs, key, sc)
        # Per-round differences (hsd - raw of the same round) resist slow load changes.
        diffs = []
        for m in hs:
            o = [x for x in raw if x["round"] == m["round"]]
            if o and m.get("switchover_ms") is not None and o[0].get("switchover_ms") is not None:
                diffs.append(m["switchover_ms"] - o[0]["switchover_ms"])
        r["switchover_diffs_ms"] = diffs
        r["diff_switchover_ms"] = (None if r["hsd_switchover"] is None or r["raw_switchover"] is None
                                   else r["hsd_switchover"] - r["raw_switchover"])
        r["diff_downtime_ms"] = (None if r["hsd_downtime"] is None or r["raw_downtime"] is None
                                 else r["hsd_downtime"] - r["raw_downtime"])
        r["ratio_switchover"] = (None if not r["raw_switchover"] or r["hsd_switchover"] is None
                                 else r["hsd_switchover"] / r["raw_switchover"])
        r["pass_within_10ms"] = None if r["diff_switchover_ms"] is None else r["diff_switchover_ms"] <= TARGET_DIFF_MS
        r["pass_under_50ms"] = None if r["hsd_switchover"] is None else r["hsd_switchover"] < TARGET_E2E_MS
        r["pass"] = (None if r["pass_within_10ms"] is None
                     else bool(r["pass_within_10ms"] and r["pass_under_50ms"]))
        r["hsd_unset"] = sum(1 for m in hs if m.get("hsd_figures_unset"))
        r["failed_raw"] = sum(1 for m in meas if m["case"] == case and m["kind"] == "raw" and not m.get("converged"))
        r["failed_hsd"] = sum(1 for m in meas if m["case"] == case and m["kind"] == "hsd" and not m.get("converged"))
        if r["failed_hsd"] or r["failed_raw"]:
            r["pass"] = False
        rows.append(r)
    return rows


def print_table(rows):
    log("\nmedians; ms unless said; switchover = source STOP -> destination RESUME "
        "(QMP event timestamps)")
    log(f"{'case':<6} {'n':>3}  {'downtime raw/hsd':>17}  {'switchover raw/hsd':>19}  "
        f"{'hsd-raw':>8}  {'ratio':>5}  {'dest share raw/hsd':>18}  {'total raw/hsd':>15}  "
        f"{'MiB sent raw/hsd':>17}  {'<=raw+10':>8}  {'<50':>4}")
    yn = {True: "PASS", False: "FAIL", None: "-"}
    for r in rows:
        log(f"{r['case']:<6} {min(r['n_raw'], r['n_hsd']):>3}  "
            f"{fmt(r['raw_downtime'], 0):>8}/{fmt(r['hsd_downtime'], 0):<8}  "
            f"{fmt(r['raw_switchover']):>9}/{fmt(r['hsd_switchover']):<9}  "
            f"{fmt(r['diff_switchover_ms'], 1):>8}  {fmt(r['ratio_switchover'], 2):>5}  "
            f"{fmt(r['raw_dest'], 1):>9}/{fmt(r['hsd_dest'], 1):<8}  "
            f"{fmt(r['raw_total'], 0):>7}/{fmt(r['hsd_total'], 0):<7}  "
            f"{fmt(r['raw_mib']):>8}/{fmt(r['hsd_mib']):<8}  "
            f"{yn[r['pass_within_10ms']]:>8}  {yn[r['pass_under_50ms']]:>4}")
    for r in rows:
        notes = []
        if r["switchover_diffs_ms"]:
            notes.append("per-round hsd-raw switchover: " +
                         ", ".join(f"{x:+.1f}" for x in r["switchover_diffs_ms"]) + " ms")
        if r["case"] == "dirty":
            notes.append(f"max CPU throttle (auto-converge) raw/hsd {fmt(r['raw_throttle'], 0)}/"
                         f"{fmt(r['hsd_throttle'], 0)} %")
        notes.append(f"wall raw (migrate->RESUME)/hsd (hsctl migrate) {fmt(r['raw_wall'], 2)}/"
                     f"{fmt(r['hsd_wall'], 2)} s")
        if r["hsd_react"] is not None:
            notes.append(f"hsd B's own share (its QEMU's MIGRATION completed -> RESUME) "
                         f"{fmt(r['hsd_react'])} ms")
        if r["hsd_unset"]:
            notes.append(f"hsd reported downtime 0 ms and total 0 ms in {r['hsd_unset']} of "
                         f"{r['n_hsd']} (QEMU's figures read before QEMU set them: left out "
                         f"of the downtime and total medians)")
        if r["failed_raw"] or r["failed_hsd"]:
            notes.append(f"did not complete: raw {r['failed_raw']}, hsd {r['failed_hsd']}")
        log(f"  {r['case']}: " + "; ".join(notes))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke: 1 round of each case")
    ap.add_argument("--rounds", type=int, help="rounds per case (default 3)")
    ap.add_argument("--cases", default=",".join(CASES), help="idle,dirty (default both)")
    ap.add_argument("--no-auto-converge", dest="auto_converge", action="store_false",
                    help="dirty case without auto-converge (it may then not converge)")
    ap.add_argument("--bandwidth", type=int, default=0,
                    help="max-bandwidth in bytes/s on both sides (default: QEMU's own)")
    ap.add_argument("--dirty-settle", type=float, default=2.0,
                    help="s between starting the dirtying loop and the migration (default 2)")
    ap.add_argument("--boot-timeout", type=float, help="s to wait for HS-GUEST-FILLED (default 240)")
    ap.add_argument("--base", help="work dir (default /tmp/hsmg-PID; UNIX socket paths must stay short)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--output", help="JSON results file (default bench/results/migrate-<timestamp>.json)")
    args = ap.parse_args()

    p = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        p["rounds"] = args.rounds
    if args.boot_timeout is not None:
        p["boot_timeout"] = args.boot_timeout
    cases = [c for c in args.cases.split(",") if c]
    if p["rounds"] < 1 or not cases or any(c not in CASES for c in cases):
        sys.exit("migrate.py: --rounds must be >= 1 and --cases among idle,dirty")
    p.update(cases=cases, auto_converge=args.auto_converge, bandwidth=args.bandwidth,
             dirty_settle=args.dirty_settle, memory_mib=MEMORY_MIB, fill_mib=FILL_MIB,
             dirty_mib=DIRTY_MIB, downtime_ms=DOWNTIME_MS, cmdline=CMDLINE)
    need_files("migrate.py", HSD, HSCTL, QEMU, IP, hint=" (ninja -C build)")
    if os.geteuid() != 0:
        sys.exit("migrate.py: needs root (network namespaces)")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outp = Path(args.output) if args.output else RESULTS / f"migrate-{stamp}.json"
    base = new_workdir("migrate.py", args.base, "hsmg")
    reg = Registry()
    net = Netns()
    res = {"loadavg": {"start": os.getloadavg()}}
    meas = []
    error = None
    bin_before = binary_info(HSD)
    t_start = time.monotonic()
    a = b = None

    catch_signals(p["budget"])
    log(f"hsd migration benchmark ({'quick' if args.quick else 'full'}): {HSD}, work dir {base}, "
        f"time budget {p['budget']}s")
    try:
        base.mkdir(parents=True)
        (base / "bin").mkdir()
        for k, src in (("hsd", HSD), ("hsctl", HSCTL)):
            BIN[k] = base / "bin" / k
            shutil.copy2(src, BIN[k])
        res["binaries"] = {k: binary_info(v) for k, v in BIN.items()}
        guest = build_guest()
        log(f"guest: {guest['kernel']} + {guest['initrd']}")
        net.create()
        res["net"] = {"ns": net.ns, "veth": net.veth, "addr": net.addr}
        log(f"namespaces {net.ns['A']} ({net.addr['A']}) and {net.ns['B']} ({net.addr['B']}), "
            f"veth {net.veth['A']}/{net.veth['B']}")
        extra = hsd_extra_args(guest) + ["-v"]
        a = ns_hsd(base / "a", reg, extra + ["--migration-address", net.addr["A"]], net.prefix("A"))
        b = ns_hsd(base / "b", reg, extra + ["--migration-address", net.addr["B"]], net.prefix("B"))
        a.start()
        b.start()
        res["hsd_args"] = extra
        log(f"hsd A pid {a.pid}, hsd B pid {b.pid}: {' '.join(extra)} --migration-address IP")
        ctx = Ctx(net, a, b, guest, reg, base, p, args)
        res["argv"] = learn_hsd_argv(ctx)
        log(f"raw QEMU: benchlib.raw_argv + {' '.join(ctx.extra_raw) or 'nothing'} (from hsd's argv)")
        if res["argv"]["options_only_hsd"] or res["argv"]["options_only_raw"]:
            log(f"  note: hsd's QEMU argv has options the raw one has not: "
                f"{res['argv']['options_only_hsd']}; and lacks: {res['argv']['options_only_raw']}")
        log(f"guest: {MEMORY_MIB} MiB, 1 vCPU, TCG, '{CMDLINE}'; downtime limit {DOWNTIME_MS} ms; "
            f"dirty case: dd {DIRTY_MIB} MiB loop" + (", auto-converge" if args.auto_converge else ""))
        for case in cases:
            log(f"\n== {case}: {p['rounds']} round(s), raw and hsd interleaved")
            for i, order in rounds(a, p["rounds"], ["raw", "hsd"]):
                b.check_alive()
                for kind in order:
                    m = {"kind": kind, "case": case, "round": i}
                    try:
                        (measure_raw if kind == "raw" else measure_hsd)(ctx, case, i, m)
                    except BenchError as e:
                        # A migration that did not complete is a result; go on.
                        m.update(converged=False, error=str(e))
                        log(f"  [{i + 1}] {case:5} {kind:3}: FAILED: {e}")
                        meas.append(m)
                        a.check_alive()
                        b.check_alive()
                        continue
                    meas.append(m)
                    show(m)
        res["loadavg"]["end"] = os.getloadavg()
    except RUN_ERRORS as e:
        error = run_error(e)
        res["traceback"] = traceback.format_exc()
    finally:
        with uninterrupted():
            for hh in reg.hsds:
                if hh.alive():
                    try:
                        _, js = api(hh.socket, "GET", "/v1/vms", timeout=10)
                        for vm in js.get("vms", []):
                            hsd_remove(hh, vm["name"])
                    except Exception as e:  # the Registry still kills QEMUs by pid
                        log(f"cleanup: listing VMs failed: {e}")
            collect_hsd_logs(reg, res, error)
            res["hsd_logs"] = {}
            for hh, k in ((a, "A"), (b, "B")):
                if hh is None:
                    continue
                txt = hh.log_text()
                res["hsd_logs"][k] = {
                    "lines": txt.count("\n"),
                    "problems": [ln for ln in txt.splitlines()
                                 if ln[:3] in ("<0>", "<1>", "<2>", "<3>", "<4>")][:100],
                    "migration_lines": [ln for ln in txt.splitlines() if "migrat" in ln or "arrived" in ln][-60:]}
            reg.cleanup(log)
            net.remove(log)
            remove_workdir(base, args.keep, log)

    elapsed = time.monotonic() - t_start
    bin_after = binary_info(HSD)
    report_run_end(HSD, bin_before, error, res)
    rows = summary_rows(meas)
    print_table(rows)
    for k in ("A", "B"):
        for ln in res.get("hsd_logs", {}).get(k, {}).get("problems", [])[:5]:
            log(f"  hsd {k} log: {ln}")
    log(f"\ntotal run time: {elapsed:.1f}s; load average "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} (start "
        f"{'/'.join(f'{x:.2f}' for x in res['loadavg']['start'])})")
    out = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "params": p,
        "units": {"time": "ms unless _s", "sent": "MiB (2^20 bytes)"},
        "targets": {"switchover_within_raw_ms": TARGET_DIFF_MS, "switchover_under_ms": TARGET_E2E_MS},
        "host": host_info(qemu=version_line(QEMU)), "git": git_rev(), "hsd_binary": bin_before,
        "hsd_binary_changed_during_run": bin_after != bin_before,
        "elapsed_s": elapsed, "error": error,
        "summary": rows, "measures": meas, "results": res,
    }
    write_results(outp, out)
    return exit_status(error, rows)


if __name__ == "__main__":
    sys.exit(main())
