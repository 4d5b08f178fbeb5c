#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Load benchmark for hsd: many concurrent API clients against a fleet of
running TCG guests.

Starts its own hsd (fresh work dir), defines and starts --vms small TCG
guests, then for --duration seconds drives the API with --clients threads,
each on its own keep-alive connection over the UNIX socket, mixing reads
(GET /v1/vms, GET /v1/vms/NAME, GET /v1/host, QMP query-status passthrough)
and lifecycle calls (pause/resume, reboot, now and then stop --force +
start) on random VMs. Reports throughput, p50/p99 latency per kind, errors
by kind (expected 409 races apart from unexpected 5xx / timeouts /
connection errors), and hsd's RSS, fds and CPU over the run.

Python 3 standard library only; the HTTP client, the hsd wrapper, the /proc
readers and the clean-up registry are bench/benchlib.py's. Every wait is bounded, the whole run has a
time budget (SIGALRM), and a finally block stops hsd and kills every QEMU
it started, each by pid (after checking the pid is still that QEMU).

    /usr/bin/python3 bench/load.py                 # 60 s, 100 clients, 20 VMs
    /usr/bin/python3 bench/load.py --duration 10 --clients 20 --vms 4
"""
import argparse
import json
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    HSD, Hsd, HttpError, Interrupted, RawHttp, Registry, api, build_guest, hsd_extra_args, log,
    new_workdir, proc_cpu_s, proc_memory, remove_workdir, summarize)

# Operation mix: kind -> weight. Reads dominate; lifecycle calls race with
# each other on purpose (100 clients, 20 VMs).
MIX = {
    "list": 30,        # GET /v1/vms
    "get": 25,         # GET /v1/vms/NAME
    "host": 8,         # GET /v1/host
    "qmp": 22,         # POST /v1/vms/NAME/qmp query-status
    "pause": 5,        # POST .../pause
    "resume": 5,       # POST .../resume
    "reboot": 4,       # POST .../reboot
    "cycle": 1,        # POST .../stop {"force": true}, then POST .../start
}
# Answers that are a normal outcome of clients racing on one VM: a pause of
# a VM another client paused (409 conflict), a call on a VM someone is
# stopping (409 not-running / qmp-unavailable), and a call whose QEMU another
# client stopped while it was pending (500 vm-exited, only while racing).
EXPECTED = {409}
EXPECTED_WHILE_RACING = {(500, "vm-exited"), (503, "insufficient-memory")}


# ------------------------------------------------------------------ load

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = defaultdict(list)        # kind -> [seconds] (every answer)
        self.ok = Counter()                 # kind -> 2xx answers
        self.expected = Counter()           # (kind, "status code")
        self.unexpected = Counter()         # (kind, what)
        self.examples = {}                  # (kind, what) -> message

    def record(self, kind, dt, status=None, payload=b"", exc=None, racing=False):
        """racing: another client was stopping / starting the same VM
        meanwhile (such errors are still counted as unexpected, but are
        labelled so)."""
        tag = " [racing stop/start]" if racing else ""
        with self.lock:
            if exc is not None:
                what = ("timeout" if isinstance(exc, socket.timeout) else
                        f"conn:{type(exc).__name__}") + tag
                self.unexpected[(kind, what)] += 1
                self.examples.setdefault((kind, what), str(exc)[:200])
                return
            self.lat[kind].append(dt)
            if 200 <= status < 300:
                self.ok[kind] += 1
                return
            try:
                err = json.loads(payload)["error"]
                code, msg = err.get("code", "?"), err.get("message", "")
            except (ValueError, KeyError, TypeError):
                code, msg = "?", payload[:200].decode("latin-1")
            if status in EXPECTED or (racing and (status, code) in EXPECTED_WHILE_RACING):
                self.expected[(kind, f"{status} {code}")] += 1
            else:
                key = (kind, f"{status} {code}{tag}")
                self.unexpected[key] += 1
                self.examples.setdefault(key, msg[:200])


class Cycling:
    """How many clients are in a stop --force + start of each VM."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = Counter()

    def add(self, name, d):
        with self.lock:
            self.n[name] += d

    def others(self, name, mine):
        with self.lock:
            return self.n[name] - mine > 0


def client(idx, sock, names, stats, cycling, stop_at, stop_evt, timeout, seed):
    rng = random.Random(seed * 1000 + idx)
    kinds, weights = zip(*MIX.items())
    conn = RawHttp(sock, timeout)
    try:
        while not stop_evt.is_set() and time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            name = rng.choice(names)
            if kind == "list":
                steps = [("list", "GET", "/v1/vms", None)]
            elif kind == "get":
                steps = [("get", "GET", f"/v1/vms/{name}", None)]
            elif kind == "host":
                steps = [("host", "GET", "/v1/host", None)]
            elif kind == "qmp":
                steps = [("qmp", "POST", f"/v1/vms/{name}/qmp",
                          {"execute": "query-status", "id": idx})]
            elif kind == "cycle":
                steps = [("stop", "POST", f"/v1/vms/{name}/stop", {"force": True}),
                         ("start", "POST", f"/v1/vms/{name}/start", None)]
            else:
                steps = [(kind, "POST", f"/v1/vms/{name}/{kind}", None)]
            mine = 1 if kind == "cycle" else 0
            if mine:
                cycling.add(name, 1)
            try:
                for k, method, target, body in steps:
                    racing = cycling.others(name, mine)
                    t0 = time.monotonic()
                    try:
                        st, payload = conn.request(method, target, body)
                    except (OSError, HttpError, ValueError) as e:
                        racing |= cycling.others(name, mine)
                        stats.record(k, time.monotonic() - t0, exc=e, racing=racing)
                        conn.close()  # reconnect on the next request
                        continue
                    racing |= cycling.others(name, mine)
                    stats.record(k, time.monotonic() - t0, st, payload, racing=racing)
            finally:
                if mine:
                    cycling.add(name, -1)
    finally:
        conn.close()


class Sampler(threading.Thread):
    """hsd's RSS, fd count and CPU time, every `interval` s."""

    def __init__(self, pid, interval=0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []   # (t, rss_kib, fds, cpu_s)
        self.stop_evt = threading.Event()

    def sample(self):
        try:
            m = proc_memory(self.pid)
        except OSError:  # hsd died: the main loop reports it
            m = {}
        s = (time.monotonic(), m.get("VmRSS"), m.get("fds"), proc_cpu_s(self.pid))
        self.samples.append(s)
        return s

    def run(self):
        while not self.stop_evt.wait(self.interval):
            self.sample()


def fmt_ms(ms):
    return "-" if ms is None else f"{ms:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    ap.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    ap.add_argument("--vms", type=int, default=20, help="running TCG guests (20)")
    ap.add_argument("--memory", default="64,128",
                    help="guest memory in MiB, cycled over the VMs (64,128)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="per-request client timeout in s (30); longer counts as 'timeout'")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base", help="work dir (must not exist; short: socket paths <= 108 bytes)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--output", help="also write the results as JSON to this file")
    args = ap.parse_args()
    if args.duration <= 0 or args.clients < 1 or args.vms < 1:
        ap.error("--duration, --clients and --vms must be positive")
    if not HSD.exists():
        sys.exit(f"load.py: {HSD} missing: build first (ninja -C build)")

    base = new_workdir("load.py", args.base, "hsl")
    reg = Registry()
    budget = int(args.duration + 600)

    def on_signal(signum, frame):
        raise Interrupted(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, on_signal)
    signal.alarm(budget)
    stop_evt = threading.Event()
    threads = []
    status = 2
    try:
        guest = build_guest()
        log(f"hsd: {HSD}")
        hsd = Hsd(base, reg, hsd_extra_args(guest))
        hsd.start(timeout=20)
        mems = [int(m) for m in args.memory.split(",")]
        names = [f"l{i:02d}" for i in range(args.vms)]
        t0 = time.monotonic()
        for i, n in enumerate(names):
            api(hsd.socket, "POST", "/v1/vms", {
                "name": n, "accel": "tcg", "memory_mib": mems[i % len(mems)],
                "kernel": guest["kernel"], "initrd": guest["initrd"],
                "cmdline": "console=ttyS0 quiet"})
        for n in names:
            _, vm = api(hsd.socket, "POST", f"/v1/vms/{n}/start", timeout=60)
            reg.add_qemu(vm["pid"])
        log(f"{args.vms} VMs defined and started in {time.monotonic() - t0:.1f}s "
            f"(memory {args.memory} MiB, TCG); letting them boot 5 s")
        time.sleep(5)

        sampler = Sampler(hsd.pid)
        start_sample = sampler.sample()
        sampler.start()
        stats = Stats()
        cycling = Cycling()
        log(f"load: {args.clients} clients for {args.duration:.0f}s ...")
        t_start = time.monotonic()
        stop_at = t_start + args.duration
        for i in range(args.clients):
            t = threading.Thread(target=client, daemon=True,
                                 args=(i, hsd.socket, names, stats, cycling, stop_at, stop_evt,
                                       args.timeout, args.seed))
            t.start()
            threads.append(t)
        next_note = t_start + 10
        while time.monotonic() < stop_at:
            time.sleep(0.5)
            hsd.check_alive()
            if time.monotonic() >= next_note:
                with stats.lock:
                    n = sum(len(v) for v in stats.lat.values())
                log(f"  {time.monotonic() - t_start:5.1f}s: {n} answers, "
                    f"hsd RSS {sampler.samples[-1][1]} KiB")
                next_note += 10
        # In-flight requests finish (bounded by the client timeout).
        for t in threads:
            t.join(max(0.1, stop_at + args.timeout + 5 - time.monotonic()))
        stop_evt.set()
        elapsed = time.monotonic() - t_start
        hung = sum(t.is_alive() for t in threads)
        end_sample = sampler.sample()
        sampler.stop_evt.set()
        sampler.join(5)

        # After the load: hsd still answers, and every VM's state is true.
        final = api(hsd.socket, "GET", "/v1/vms", timeout=10)[1]["vms"]
        for vm in final:
            reg.add_qemu(vm.get("pid"))
        states = Counter(v["state"] for v in final)
        inconsistent = []
        for v in final:
            if v["state"] in ("running", "paused"):
                _, js = api(hsd.socket, "POST", f"/v1/vms/{v['name']}/qmp",
                            {"execute": "query-status"}, timeout=15, expect=None)
                q = (js or {}).get("return", {}).get("status")
                if (v["state"] == "running") != (q == "running"):
                    inconsistent.append((v["name"], v["state"], q))
            elif v["pid"]:
                inconsistent.append((v["name"], v["state"], v["pid"]))

        # ---- report
        total = sum(len(v) for v in stats.lat.values())
        n_unexp = sum(stats.unexpected.values())
        n_exp = sum(stats.expected.values())
        rss = [s[1] for s in sampler.samples if s[1]]
        fds = [s[2] for s in sampler.samples if s[2]]
        cpu = (end_sample[3] - start_sample[3]) if end_sample[3] is not None else None
        log("")
        log(f"== hsd load: {args.clients} clients, {args.vms} running TCG VMs, "
            f"{elapsed:.1f}s (keep-alive, UNIX socket)")
        log(f"throughput: {total / elapsed:.0f} req/s ({total} answers"
            f" + {sum(v for (k, w), v in stats.unexpected.items() if not w[0].isdigit())}"
            f" without an answer)")
        log("")
        log(f"{'kind':<8} {'count':>8} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
            f"{'max ms':>9} {'2xx':>8} {'409':>6} {'unexp':>6}")
        order = ["list", "get", "host", "qmp", "pause", "resume", "reboot", "stop", "start"]
        per_kind = {}
        for k in order:
            sm = summarize(stats.lat.get(k, []))
            exp = sum(v for (kk, _), v in stats.expected.items() if kk == k)
            une = sum(v for (kk, _), v in stats.unexpected.items() if kk == k)
            per_kind[k] = {"count": sm["n"], "p50_ms": sm.get("median_ms"),
                           "p99_ms": sm.get("p99_ms"), "max_ms": sm.get("max_ms"),
                           "ok": stats.ok[k], "expected": exp, "unexpected": une}
            log(f"{k:<8} {sm['n']:>8} {sm['n'] / elapsed:>8.1f} "
                f"{fmt_ms(sm.get('median_ms')):>9} {fmt_ms(sm.get('p99_ms')):>9} "
                f"{fmt_ms(sm.get('max_ms')):>9} {stats.ok[k]:>8} "
                f"{exp:>6} {une:>6}")
        log("")
        log(f"expected errors (races between clients): {n_exp}")
        for (k, what), v in sorted(stats.expected.items()):
            log(f"  {k:<8} {what:<28} {v}")
        log(f"unexpected errors (5xx, other 4xx, timeouts, connection errors): {n_unexp}")
        for (k, what), v in sorted(stats.unexpected.items()):
            log(f"  {k:<8} {what:<42} {v:>6}   e.g. {stats.examples.get((k, what), '')}")
        log("")
        log(f"hsd RSS: start {start_sample[1]} KiB, end {end_sample[1]} KiB, "
            f"peak {max(rss) if rss else '-'} KiB")
        log(f"hsd fds: start {start_sample[2]}, end {end_sample[2]}, "
            f"peak {max(fds) if fds else '-'}")
        if cpu is not None:
            log(f"hsd CPU: {cpu:.1f}s over {elapsed:.1f}s ({100 * cpu / elapsed:.0f}% of one core)")
        log(f"VM states after the load: {dict(states)}; inconsistent with QEMU: "
            f"{inconsistent or 'none'}; client threads still busy: {hung}")
        results = {
            "params": vars(args), "elapsed_s": elapsed, "requests": total,
            "req_per_s": total / elapsed, "per_kind": per_kind,
            "expected_errors": {f"{k} {w}": v for (k, w), v in stats.expected.items()},
            "unexpected_errors": {f"{k} {w}": v for (k, w), v in stats.unexpected.items()},
            "examples": {f"{k} {w}": m for (k, w), m in stats.examples.items()},
            "hsd": {"rss_kib_start": start_sample[1], "rss_kib_end": end_sample[1],
                    "rss_kib_peak": max(rss) if rss else None,
                    "fds_start": start_sample[2], "fds_end": end_sample[2],
                    "cpu_s": cpu},
            "vm_states": dict(states), "inconsistent": inconsistent,
        }
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
            log(f"results: {args.output}")
        status = 0 if n_unexp == 0 and not inconsistent and not hung else 1
    except Interrupted as e:
        log(f"load.py: interrupted ({e})")
    except Exception as e:  # noqa: BLE001 - reported, then cleaned up
        log(f"load.py: failed: {e}")
    finally:
        signal.alarm(0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # let the clean-up finish
        stop_evt.set()
        try:
            reg.cleanup(log)
            remove_workdir(base, args.keep, log)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
    return status


if __name__ == "__main__":
    sys.exit(main())
