#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmarks for hsd, each against a baseline, in one run:

  1. start latency: `hsctl start` and the API call alone, vs. a raw QEMU
     exec -> QMP greeting -> qmp_capabilities -> cont (same argv as hsd's)
  2. forced stop latency: POST stop {"force":true} until the answer, vs.
     SIGTERM -> waitpid on a raw QEMU
  3. GET /v1/vms with 100 defined VMs, keep-alive and one connection per
     request, vs. GET /v1 (the smallest answer hsd gives)
  4. hsd's memory (VmRSS, Pss) with 100 defined and 20 running VMs, vs. an
     idle hsd with no VMs

Usage: /usr/bin/python3 bench/run.py [--quick] [--keep] [--base DIR]
See bench/README.md. Python 3 standard library only."""
import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    BenchError, HSCTL, HSD, Hsd, Prober, QEMU, ROOT, RUN_ERRORS, RawHttp, RawQemu, Registry, api,
    argv_option_diff, atomic_write_cost, binary_info, build_guest, catch_signals, console_ready,
    exit_status, git_rev, host_info, hsd_exec_line, hsd_extra_args, log, need_files, new_workdir,
    now, percentile, proc_memory, raw_argv, remove_workdir, rounds, run_error, summarize,
    timed_request, uninterrupted, version_line, wait_for, write_results)

RESULTS = Path(__file__).resolve().parent / "results"

FULL = dict(iterations=15, requests=2000, defined=100, running=20, settle=1.0,
            boot_timeout=120.0, budget=1800)
QUICK = dict(iterations=4, requests=300, defined=20, running=5, settle=0.3,
             boot_timeout=120.0, budget=420)

TARGETS = {
    "start_ratio": 1.2,      # hsd / raw, medians
    "stop_ms": 50.0,         # forced stop, p90
    "list_p99_ms": 2.0,      # GET /v1/vms, p99
    "rss_mib": 8.0,          # hsd VmRSS with N defined + M running
}


# no_timer_check: on 2 overcommitted cores, TCG guests sometimes fail Linux's
# IO-APIC timer check ("IO-APIC + timer doesn't work!" panic, or a hang after
# "8254 timer not connected to IO-APIC"), raw QEMU as well as under hsd.
GUEST_CMDLINE = "console=ttyS0 quiet no_timer_check"


def mib(kib):
    return kib / 1024.0


def vm_spec(name, guest, memory):
    return {"name": name, "cpus": 1, "memory_mib": memory, "accel": "tcg",
            "kernel": guest["kernel"], "initrd": guest["initrd"],
            "cmdline": GUEST_CMDLINE, "nics": [{"type": "user"}]}


# ------------------------------------------------------------------ hsd calls

def hsd_start_api(h, reg, name):
    """POST start on a new connection; seconds until the answer."""
    t, st, payload = timed_request(h.socket, "POST", f"/v1/vms/{name}/start", {}, timeout=60)
    js = json.loads(payload)
    if st != 200 or js.get("state") != "running":
        raise BenchError(f"start {name}: HTTP {st}: {payload[:300]!r}")
    reg.add_qemu(js.get("pid"))
    return t, js


def hsd_start_cli(h, reg, name):
    t0 = now()
    r = h.hsctl("start", name, timeout=60)
    t = now() - t0
    if r.returncode != 0:
        raise BenchError(f"hsctl start {name}: rc={r.returncode}: {r.stderr.strip()}")
    _, js = api(h.socket, "GET", f"/v1/vms/{name}")
    reg.add_qemu(js.get("pid"))
    if js["state"] != "running":
        raise BenchError(f"hsctl start {name} returned but the VM is {js['state']}")
    return t, js


def hsd_stop_force(h, name, pid):
    """POST stop {"force":true}; seconds until the answer. Checks that the
    QEMU is gone and reaped (no zombie) when hsd answers."""
    t, st, payload = timed_request(h.socket, "POST", f"/v1/vms/{name}/stop", {"force": True},
                                   timeout=30)
    js = json.loads(payload)
    if st != 200 or js.get("state") != "stopped":
        raise BenchError(f"stop {name}: HTTP {st}: {payload[:300]!r}")
    reaped = not os.path.exists(f"/proc/{pid}") if pid else True
    return t, js, reaped


# ------------------------------------------------------------------ phases

def phase_start_stop(h, reg, guest, p, res, base):
    n = p["iterations"]
    log(f"\n== 1+2. start / forced stop latency: {n} iterations each, interleaved "
        f"(hsctl, API, raw QEMU); guest 128 MiB, 1 vCPU, TCG; settle {p['settle']:g}s before stop")
    for name in ("lat-cli", "lat-api"):
        api(h.socket, "POST", "/v1/vms", vm_spec(name, guest, 128))

    # Warm-up (not recorded): page cache; hsd's QEMU argv, to compare with the raw one.
    _, js = hsd_start_api(h, reg, "lat-api")
    time.sleep(p["settle"])
    hsd_stop_force(h, "lat-api", js["pid"])
    line = hsd_exec_line(h.state_dir / "vms" / "lat-api" / "qemu.log")
    hsd_argv = shlex.split(line)
    raw_dir = base / "raw"
    argv = raw_argv("raw-bench", 128, guest["kernel"], guest["initrd"], GUEST_CMDLINE,
                    str(raw_dir / "console.log"), sandbox="-sandbox" in hsd_argv)
    res["raw_argv"] = argv
    res["hsd_argv"] = hsd_argv
    only_hsd, only_raw = argv_option_diff(hsd_argv, argv)
    res["argv_options_only_hsd"], res["argv_options_only_raw"] = only_hsd, only_raw
    if only_hsd or only_raw:
        log(f"  note: hsd's QEMU argv has options the raw baseline has not: {only_hsd}; "
            f"and lacks: {only_raw}")
    rq = RawQemu(argv, raw_dir, reg)
    rq.start()
    time.sleep(p["settle"])
    rq.stop()
    _, js = hsd_start_cli(h, reg, "lat-cli")
    time.sleep(p["settle"])
    hsd_stop_force(h, "lat-cli", js["pid"])

    cli, apis, raw, stop, raw_stop, cli_version = [], [], [], [], [], []
    not_reaped = 0
    reasons = {}
    stop_cli, stop_api = [], []
    kinds = ["cli", "api", "raw"]
    for i, order in rounds(h, n, kinds):
        line = []
        for k in order:
            if k == "raw":
                rq = RawQemu(argv, raw_dir, reg)
                t = rq.start()
                raw.append(t)
                time.sleep(p["settle"])
                ts = rq.stop()
                raw_stop.append(ts)
            else:
                name = "lat-cli" if k == "cli" else "lat-api"
                t, js = (hsd_start_cli if k == "cli" else hsd_start_api)(h, reg, name)
                (cli if k == "cli" else apis).append(t)
                time.sleep(p["settle"])
                ts, sj, reaped = hsd_stop_force(h, name, js["pid"])
                stop.append(ts)
                (stop_cli if k == "cli" else stop_api).append(ts)
                reasons[sj.get("exit_reason")] = reasons.get(sj.get("exit_reason"), 0) + 1
                not_reaped += not reaped
            line.append(f"{k} {t * 1000:6.1f}/{ts * 1000:5.1f}")
        # The CLI's own cost: a process that makes one trivial request.
        t0 = now()
        r = h.hsctl("version", timeout=30)
        cli_version.append(now() - t0)
        if r.returncode != 0:
            raise BenchError(f"hsctl version: {r.stderr}")
        log(f"  [{i + 1:2}/{n}] start/stop ms: " + "   ".join(line))

    res["start_hsctl"] = summarize(cli)
    res["start_api"] = summarize(apis)
    res["start_raw"] = summarize(raw)
    res["stop_force"] = summarize(stop)
    res["stop_raw"] = summarize(raw_stop)
    res["hsctl_version"] = summarize(cli_version)
    res["stop_not_reaped"] = not_reaped
    res["stop_exit_reasons"] = reasons
    # What one of hsd's status saves costs on this file system (hsd does 3
    # per start and 3 per stop, each with 2 fsyncs, on its loop).
    res["status_write_cost"] = summarize(atomic_write_cost(base / "fsync-probe", 30))
    # Per-iteration ratios: each pair ran within the same few hundred ms,
    # so they share the machine's (slowly varying) load.
    for key, xs in (("start_hsctl", cli), ("start_api", apis)):
        pr = [a / b for a, b in zip(xs, raw)]
        res[key + "_paired_ratio"] = {"median": percentile(pr, 50), "p90": percentile(pr, 90)}
    sp = [a / b for a, b in zip(stop_api, raw_stop)]
    res["stop_paired_ratio"] = {"median": percentile(sp, 50), "p90": percentile(sp, 90)}
    res["samples_s"] = {"start_hsctl": cli, "start_api": apis, "start_raw": raw,
                      "stop_force": stop, "stop_raw": raw_stop}
    for name in ("lat-cli", "lat-api"):
        api(h.socket, "DELETE", f"/v1/vms/{name}")


def measure_get(h, n, label):
    """Alternates GET /v1/vms and GET /v1 (baseline), n of each, first over
    one keep-alive connection, then with a new connection per request."""
    out = {}
    # keep-alive
    c = RawHttp(h.socket, timeout=10)
    lst, base = [], []
    try:
        for _ in range(20):  # warm-up
            c.request("GET", "/v1/vms")
            c.request("GET", "/v1")
        for _ in range(n):
            t0 = now()
            st, payload = c.request("GET", "/v1/vms")
            t1 = now()
            st2, _ = c.request("GET", "/v1")
            t2 = now()
            if st != 200 or st2 != 200:
                raise BenchError(f"GET: HTTP {st}/{st2}")
            lst.append(t1 - t0)
            base.append(t2 - t1)
    finally:
        c.close()
    size = len(payload)
    nvms = len(json.loads(payload)["vms"])
    out["keepalive"] = {"list": summarize(lst), "base": summarize(base)}
    # one connection per request
    lst2, base2 = [], []
    for _ in range(n):
        t0 = now()
        c = RawHttp(h.socket, timeout=10)
        st, _ = c.request("GET", "/v1/vms", close=True)
        c.close()
        t1 = now()
        c = RawHttp(h.socket, timeout=10)
        st2, _ = c.request("GET", "/v1", close=True)
        c.close()
        t2 = now()
        if st != 200 or st2 != 200:
            raise BenchError(f"GET: HTTP {st}/{st2}")
        lst2.append(t1 - t0)
        base2.append(t2 - t1)
    out["newconn"] = {"list": summarize(lst2), "base": summarize(base2)}
    out["vms_listed"] = nvms
    out["answer_bytes"] = size
    for mode in ("keepalive", "newconn"):
        a = out[mode]
        log(f"  {label} {mode:9}: /v1/vms p50 {a['list']['median_ms']:.3f} p99 "
            f"{a['list']['p99_ms']:.3f} max {a['list']['max_ms']:.2f} ms | /v1 p50 "
            f"{a['base']['median_ms']:.3f} p99 {a['base']['p99_ms']:.3f} ms")
    log(f"  ({nvms} VMs listed, answer {size} bytes)")
    return out


def diagnose(h, name):
    """Why a guest did not print HS-GUEST-READY: hsd's view, QEMU's view,
    the process, and the end of its console log."""
    d = {}
    try:
        _, js = api(h.socket, "GET", f"/v1/vms/{name}", timeout=10)
        d["state"], d["pid"] = js.get("state"), js.get("pid")
        d["qmp_connected"] = js.get("qmp_connected")
        d["console_tail"] = js.get("console_tail", "")[-400:]
    except Exception as e:
        d["api_error"] = str(e)
    try:
        _, js = api(h.socket, "POST", f"/v1/vms/{name}/qmp", {"execute": "query-status"}, timeout=10)
        d["query_status"] = js
    except Exception as e:
        d["qmp_error"] = str(e)
    pid = d.get("pid")
    if pid:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            tck = os.sysconf("SC_CLK_TCK")
            d["proc_state"] = fields[0]
            d["cpu_s"] = (int(fields[11]) + int(fields[12])) / tck
        except OSError as e:
            d["proc_error"] = str(e)
    try:
        data = (h.state_dir / "vms" / name / "console.log").read_bytes()
        d["console_log_bytes"] = len(data)
        d["console_log_tail"] = data[-400:].decode(errors="replace")
    except OSError as e:
        d["console_log_error"] = str(e)
    return d


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[:3]
    except OSError:
        return None


def phase_fleet(h, reg, guest, p, res):
    nd, nr, mem = p["defined"], p["running"], p["fleet_memory"]
    log(f"\n== 3. GET /v1/vms with {nd} defined VMs: {p['requests']} requests per mode "
        f"(alternating with GET /v1 as the baseline)")
    names = [f"vm-{i:03d}" for i in range(nd)]
    creates = []
    for nm in names:
        t0 = now()
        api(h.socket, "POST", "/v1/vms", vm_spec(nm, guest, mem))
        creates.append(now() - t0)
    res["create"] = summarize(creates)
    log(f"  created {nd} VMs: POST /v1/vms p50 {res['create']['median_ms']:.2f} ms, "
        f"p90 {res['create']['p90_ms']:.2f} ms")
    time.sleep(0.5)
    res["mem_defined"] = proc_memory(h.pid)
    res["get_defined"] = measure_get(h, p["requests"], f"{nd} defined")

    log(f"\n== 4. memory with {nd} defined and {nr} running VMs ({mem} MiB, 1 vCPU, TCG, "
        f"started one by one)")
    starts, pids = [], {}
    prober = Prober(h.socket)
    prober.start()
    try:
        for nm in names[:nr]:
            h.check_alive()
            t, js = hsd_start_api(h, reg, nm)
            starts.append(t)
            pids[nm] = js["pid"]
    finally:
        probes = prober.finish()
    if prober.error:
        log(f"  warning: the GET /v1 prober failed: {prober.error}")
    res["probe_during_starts"] = summarize(probes)
    ps = res["probe_during_starts"]
    if ps.get("n"):
        log(f"  GET /v1 every 2 ms meanwhile ({ps['n']} probes): p50 {ps['median_ms']:.3f} "
            f"p99 {ps['p99_ms']:.3f} max {ps['max_ms']:.2f} ms")
    res["start_under_load"] = summarize(starts)
    log(f"  started {nr}: start p50 {res['start_under_load']['median_ms']:.1f} ms, "
        f"max {res['start_under_load']['max_ms']:.1f} ms")
    t0 = time.monotonic()
    try:
        wait_for(lambda: all(console_ready(h, nm) for nm in names[:nr]), p["boot_timeout"],
                 "all guests to print HS-GUEST-READY", interval=0.5)
    except BenchError as e:
        log(f"  warning: {e}")
    ready = sum(console_ready(h, nm) for nm in names[:nr])
    res["guests_ready"] = ready
    res["not_ready"] = {nm: diagnose(h, nm) for nm in names[:nr] if not console_ready(h, nm)}
    for nm, d in res["not_ready"].items():
        log(f"  not ready: {nm}: {json.dumps(d)[:1500]}")
    log(f"  {ready}/{nr} guests printed HS-GUEST-READY ({time.monotonic() - t0:.1f}s after the last start)")
    _, js = api(h.socket, "GET", "/v1/vms")
    running = sum(vm["state"] == "running" for vm in js["vms"])
    res["vms_running"] = running
    if running != nr:
        log(f"  warning: hsd says {running} running, expected {nr}")
    time.sleep(1.0)
    res["mem_running"] = proc_memory(h.pid)
    qrss = []
    for pid in pids.values():
        try:
            qrss.append(proc_memory(pid)["VmRSS"])
        except OSError:
            pass
    res["qemu_rss_kib_mean"] = sum(qrss) / len(qrss) if qrss else None

    log(f"  GET /v1/vms again, with {nr} running (informational)")
    res["get_running"] = measure_get(h, p["requests"] // 2, f"{nr} running")
    res["mem_running_after_get"] = proc_memory(h.pid)

    stops, reasons = [], {}
    for nm in names[:nr]:
        t, sj, _ = hsd_stop_force(h, nm, pids[nm])
        stops.append(t)
        reasons[sj.get("exit_reason")] = reasons.get(sj.get("exit_reason"), 0) + 1
    res["stop_under_load"] = summarize(stops)
    res["stop_under_load_exit_reasons"] = reasons
    log(f"  stopped {nr}: forced stop p50 {res['stop_under_load']['median_ms']:.1f} ms, "
        f"max {res['stop_under_load']['max_ms']:.1f} ms")
    res["mem_after_stop"] = proc_memory(h.pid)


# ------------------------------------------------------------------ report

def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def summary_rows(res, p):
    rows = []

    def add(metric, hsd, base, ratio, target, ok):
        rows.append({"metric": metric, "hsd": hsd, "baseline": base,
                     "ratio": ratio, "target": target,
                     "pass": None if ok is None else bool(ok)})

    raw = res.get("start_raw")
    for key, label in (("start_hsctl", "start: hsctl start -> running"),
                       ("start_api", "start: POST start -> running")):
        s = res.get(key)
        if s and raw and s.get("n") and raw.get("n"):
            r50 = s["median_ms"] / raw["median_ms"]
            r90 = s["p90_ms"] / raw["p90_ms"]
            add(label + " (median ms)", s["median_ms"], raw["median_ms"], r50,
                f"ratio <= {TARGETS['start_ratio']}", r50 <= TARGETS["start_ratio"])
            add(label + " (p90 ms)", s["p90_ms"], raw["p90_ms"], r90, "", None)
    s, b = res.get("stop_force"), res.get("stop_raw")
    if s and b and s.get("n"):
        add("forced stop -> answer (median ms)", s["median_ms"], b["median_ms"],
            s["median_ms"] / b["median_ms"], "", None)
        add("forced stop -> answer (p90 ms)", s["p90_ms"], b["p90_ms"],
            s["p90_ms"] / b["p90_ms"], f"p90 <= {TARGETS['stop_ms']:g} ms",
            s["p90_ms"] <= TARGETS["stop_ms"])
    g = res.get("get_defined")
    if g:
        nd = p["defined"]
        for mode, label in (("keepalive", "keep-alive"), ("newconn", "new conn")):
            a = g[mode]
            add(f"GET /v1/vms, {nd} VMs, {label} (p50 ms)", a["list"]["median_ms"],
                a["base"]["median_ms"], a["list"]["median_ms"] / a["base"]["median_ms"], "", None)
            add(f"GET /v1/vms, {nd} VMs, {label} (p99 ms)", a["list"]["p99_ms"],
                a["base"]["p99_ms"], a["list"]["p99_ms"] / a["base"]["p99_ms"],
                f"p99 <= {TARGETS['list_p99_ms']:g} ms",
                a["list"]["p99_ms"] <= TARGETS["list_p99_ms"])
    m0 = res.get("mem_idle")
    for key, label, target in (
            ("mem_defined", f"hsd memory, {p['defined']} defined", False),
            ("mem_running", f"hsd memory, {p['defined']} defined + {p['running']} running", True)):
        m = res.get(key)
        if m and m0:
            add(f"{label}: VmRSS (MiB)", mib(m["VmRSS"]), mib(m0["VmRSS"]), m["VmRSS"] / m0["VmRSS"],
                f"<= {TARGETS['rss_mib']:g} MiB" if target else "",
                mib(m["VmRSS"]) <= TARGETS["rss_mib"] if target else None)
            add(f"{label}: Pss (MiB)", mib(m["Pss"]), mib(m0["Pss"]), m["Pss"] / m0["Pss"],
                f"<= {TARGETS['rss_mib']:g} MiB" if target else "",
                mib(m["Pss"]) <= TARGETS["rss_mib"] if target else None)
    return rows


def print_table(rows, res, p):
    log("\n" + "=" * 100)
    log("SUMMARY (baseline: raw QEMU for start/stop; GET /v1 for the list; idle hsd with 0 VMs for memory)")
    log("=" * 100)
    w = max(len(r["metric"]) for r in rows) if rows else 20
    log(f"{'metric':<{w}}  {'hsd':>9}  {'baseline':>9}  {'ratio':>6}  {'target':<18} result")
    log("-" * (w + 60))
    for r in rows:
        nd = 3 if "GET" in r["metric"] else (2 if "MiB" in r["metric"] else 1)
        res_s = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        log(f"{r['metric']:<{w}}  {fmt(r['hsd'], nd):>9}  {fmt(r['baseline'], nd):>9}  "
            f"{fmt(r['ratio'], 2):>6}  {r['target']:<18} {res_s}")
    log("-" * (w + 60))
    extra = []
    if res.get("start_api_paired_ratio"):
        extra.append("per-iteration ratios (hsd/raw, median): hsctl start "
                     f"{res['start_hsctl_paired_ratio']['median']:.2f}, API start "
                     f"{res['start_api_paired_ratio']['median']:.2f}, forced stop "
                     f"{res['stop_paired_ratio']['median']:.2f}")
    if res.get("hsctl_version"):
        extra.append(f"hsctl version (process + 1 request): median {res['hsctl_version']['median_ms']:.1f} ms")
    if "stop_not_reaped" in res:
        extra.append(f"QEMU still in /proc when hsd answered stop: {res['stop_not_reaped']} times")
    if res.get("stop_exit_reasons"):
        extra.append(f"exit_reason after forced stops: {res['stop_exit_reasons']}")
    if res.get("status_write_cost"):
        c = res["status_write_cost"]
        extra.append(f"one fsync'd status save on this file system (write+fsync+rename+fsync dir): "
                     f"median {c['median_ms']:.2f} ms, p90 {c['p90_ms']:.2f} ms")
    if res.get("create"):
        extra.append(f"POST /v1/vms (define): median {res['create']['median_ms']:.2f} ms, "
                     f"p90 {res['create']['p90_ms']:.2f} ms")
    if res.get("start_under_load"):
        extra.append(f"start while others boot ({p['running']} one by one): median "
                     f"{res['start_under_load']['median_ms']:.1f} ms, max {res['start_under_load']['max_ms']:.1f} ms")
    ps = res.get("probe_during_starts")
    if ps and ps.get("n"):
        extra.append(f"GET /v1 every 2 ms while those start: p50 {ps['median_ms']:.3f} ms, "
                     f"p99 {ps['p99_ms']:.3f} ms, max {ps['max_ms']:.2f} ms")
    if res.get("stop_under_load"):
        extra.append(f"forced stop of the {p['running']} running: median "
                     f"{res['stop_under_load']['median_ms']:.1f} ms, max {res['stop_under_load']['max_ms']:.1f} ms")
    g = res.get("get_running")
    if g:
        extra.append(f"GET /v1/vms with {p['running']} running: keep-alive p99 "
                     f"{g['keepalive']['list']['p99_ms']:.3f} ms, new conn p99 {g['newconn']['list']['p99_ms']:.3f} ms")
    for key, label in (("mem_idle", "idle"), ("mem_defined", "defined"),
                       ("mem_running", "running"), ("mem_running_after_get", "running+GETs"),
                       ("mem_after_stop", "after stops")):
        m = res.get(key)
        if m:
            extra.append(f"hsd {label:>12}: VmRSS {mib(m['VmRSS']):.2f} MiB (anon {mib(m['RssAnon']):.2f}, "
                         f"file {mib(m['RssFile']):.2f}), Pss {mib(m['Pss']):.2f} MiB, "
                         f"HWM {mib(m['VmHWM']):.2f} MiB, {m.get('fds', '?')} fds")
    if res.get("qemu_rss_kib_mean"):
        extra.append(f"mean QEMU VmRSS of the running guests: {mib(res['qemu_rss_kib_mean']):.1f} MiB")
    if res.get("argv_options_only_hsd") or res.get("argv_options_only_raw"):
        extra.append(f"hsd's QEMU argv vs the raw baseline: extra {res['argv_options_only_hsd']}, "
                     f"missing {res['argv_options_only_raw']}")
    if res.get("loadavg"):
        extra.append(f"load average (1/5/15 min) at start, after 1+2, at end: " +
                     ", ".join("/".join(v) for v in res["loadavg"].values() if v))
    for e in extra:
        log("  " + e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke: fewer iterations, 20 defined/5 running")
    ap.add_argument("--iterations", type=int, help="start/stop iterations per kind")
    ap.add_argument("--requests", type=int, help="GET requests per mode")
    ap.add_argument("--defined", type=int, help="VMs defined for the list and memory phases")
    ap.add_argument("--running", type=int, help="VMs running for the memory phase")
    ap.add_argument("--fleet-memory", type=int, default=96, help="MiB per fleet guest (default 96)")
    ap.add_argument("--settle", type=float, help="seconds a VM runs before it is stopped")
    ap.add_argument("--boot-timeout", type=float, help="seconds to wait for the running guests to boot")
    ap.add_argument("--base", help="work dir (default /tmp/hsb-PID; UNIX socket paths must stay short)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--output", default=str(RESULTS / "latest.json"), help="JSON results file")
    args = ap.parse_args()

    p = dict(QUICK if args.quick else FULL)
    for k in ("iterations", "requests", "defined", "running", "settle", "boot_timeout"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    p["fleet_memory"] = args.fleet_memory
    p["running"] = min(p["running"], p["defined"])
    need_files("run.py", HSD, HSCTL, QEMU, hint=f" (build with: ninja -C {ROOT / 'build'})")

    base = new_workdir("run.py", args.base, "hsb")
    reg = Registry()
    res = {}
    bin_before = binary_info(HSD)
    error = None
    t_start = time.monotonic()

    catch_signals(p["budget"])
    log(f"hsd benchmarks ({'quick' if args.quick else 'full'}): {HSD}, work dir {base}, "
        f"time budget {p['budget']}s")
    try:
        base.mkdir(parents=True)
        guest = build_guest()
        log(f"guest: {guest['kernel']} + {guest['initrd']}")
        extra = hsd_extra_args(guest)
        res["hsd_args"] = extra
        h = Hsd(base / "d", reg, extra)
        h.start()
        time.sleep(0.5)
        res["mem_idle"] = proc_memory(h.pid)
        log(f"hsd pid {h.pid}: idle with 0 VMs: VmRSS {mib(res['mem_idle']['VmRSS']):.2f} MiB, "
            f"Pss {mib(res['mem_idle']['Pss']):.2f} MiB")
        res["loadavg"] = {"start": loadavg()}
        phase_start_stop(h, reg, guest, p, res, base)
        h.check_alive()
        res["loadavg"]["after_start_stop"] = loadavg()
        phase_fleet(h, reg, guest, p, res)
        h.check_alive()
        res["loadavg"]["end"] = loadavg()
    except RUN_ERRORS as e:
        error = run_error(e)
    finally:
        with uninterrupted():
            hsd_log = None
            for hh in reg.hsds:
                hsd_log = hh.log_text()
            reg.cleanup(log)
            if hsd_log is not None:
                res["hsd_log_lines"] = hsd_log.count("\n")
            remove_workdir(base, args.keep, log)

    elapsed = time.monotonic() - t_start
    bin_after = binary_info(HSD)
    if bin_after != bin_before:
        log(f"\nWARNING: {HSD} changed during the run (rebuilt?): figures may mix two builds")
    if error:
        log(f"\nERROR: {error}")
    rows = summary_rows(res, p)
    if rows:
        print_table(rows, res, p)
    log(f"\ntotal run time: {elapsed:.1f}s")

    out = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "params": p,
        "targets": TARGETS,
        "host": host_info(qemu=version_line(QEMU)),
        "git": git_rev(),
        "hsd_binary": bin_before,
        "hsd_binary_changed_during_run": bin_after != bin_before,
        "elapsed_s": elapsed,
        "error": error,
        "summary": rows,
        "results": res,
    }
    write_results(args.output, out)
    return exit_status(error, rows)


if __name__ == "__main__":
    sys.exit(main())
