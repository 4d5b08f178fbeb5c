#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Limits benchmark: how well a disk's read limit holds inside a guest, and
how long a live limit change takes, through hsd's API.

  1. throttling accuracy: one TCG test guest (192 MiB, one blank 256 MiB
     disk). For each bps_read limit (1, 10, 50 MiB/s; MiB = 2^20 bytes) set
     live with PATCH /v1/vms/NAME {"disks":[{"limits":{"bps_read": N}}]},
     the guest reads its disk with an uncached `dd` (caches dropped first)
     timed by the guest itself (/proc/uptime), as
     tests/integration/test_limits.py does; >= 3 s of data at the limit, at
     most 150 MiB. Median rate and its error vs the limit (target: within
     20 %). An unthrottled baseline (limits {}) says how fast TCG's emulated
     disk reads at all: a limit above it cannot be what bounds the rate.
  2. live change: client-side round trip of PATCH (new connection each, as
     the other benches) over 20 changes alternating two values; beside it
     GET /v1 (the API's floor), a QMP round trip through hsd
     (POST .../qmp query-status), the same block_set_io_throttle hsd sends
     through the passthrough, and one fsync'd file save (hsd saves the spec
     once per PATCH). hsd's log has no timings for a PATCH.
  3. balloon policy, host memory reclaimed from 10 idle guests: 10 TCG
     test guests (512 MiB, balloon floor 128 MiB, mem_merge off so KSM
     does not blur the figures, a blank 320 MiB disk each, mounted by the
     guest's init as ext2 on /mnt/disk: cmdline hs.disk). Each guest
     writes a 280 MiB file there and syncs, so its page cache holds
     ~280 MiB of clean pages QEMU has backed (an idle guest's free pages
     are not resident: free page reporting already gives them back, and a
     raw block device's cache goes when it is closed). Before: the sum of
     the QEMUs'
     VmRSS (/proc/PID/status, pids from the API) and the host's
     MemAvailable. Then PUT /v1/balloon {"mode": "auto"} with watermarks
     above the host's memory (forced pressure), wait until every target
     has settled (each guest at its policy target, unchanged for two
     ticks), and measure again: MiB reclaimed in all and per guest, and the
     time it took. Last, mode off: the time until every guest has all its
     memory back.

Usage: /usr/bin/python3 bench/limits.py [--quick] [--only PHASE[,PHASE]] [--keep] [--base DIR]
See bench/README.md ("Limits benchmark"). Python 3 standard library only."""
import argparse
import datetime
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    collect_hsd_logs, report_run_end,
    HSCTL, HSD, QEMU, RUN_ERRORS, BenchError, Hsd, Registry, atomic_write_cost, binary_info,
    build_guest, catch_signals, console_ready, exit_status, git_rev, host_info, hsd_extra_args,
    log, need_files, new_workdir, now, percentile, remove_workdir, run_error, summarize,
    uninterrupted, version_line, wait_for, write_results)

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1 << 20
VM = "lim"
DISK_MIB = 256
CMDLINE = "console=ttyS0"
TOLERANCE = 0.20          # the target: measured rate within 20 % of the limit
MIN_SECONDS = 3.0         # data read per measure: >= 3 s at the limit ...
MAX_READ_MIB = 150        # ... but at most this much (the disk is 256 MiB)
PATCH_VALUES = (10 * MIB, 20 * MIB)

FULL = dict(limits_mib=[1, 10, 50], reps=3, baseline_reps=3, patches=20, qmp_reps=20,
            boot_timeout=240, budget=1800, fill=True, balloon_vms=10)
QUICK = dict(limits_mib=[1, 10], reps=1, baseline_reps=1, patches=20, qmp_reps=10,
             boot_timeout=240, budget=900, fill=True, balloon_vms=3)
PHASES = ("throttle", "patch", "balloon")
BALLOON_MEM_MIB = 512
BALLOON_FLOOR_MIB = 128
BALLOON_DISK_MIB = 320
BALLOON_CACHE_MIB = 280
BALLOON_SETTLE_TIMEOUT = 300


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def read_mib_for(limit_mib):
    """MiB to read at a limit: whole MiB, >= MIN_SECONDS at the limit,
    <= MAX_READ_MIB; None (unthrottled) reads MAX_READ_MIB."""
    if limit_mib is None:
        return MAX_READ_MIB
    return int(min(MAX_READ_MIB, math.ceil(limit_mib * MIN_SECONDS * 1.2)))


class Regions:
    """Offsets (MiB) of the disk to read, moving on each time so that
    consecutive reads do not touch the same blocks; they wrap around once
    the disk is used up (the guest's cache is dropped before every read in
    any case)."""

    def __init__(self, size_mib):
        self.size = size_mib
        self.next = 0
        self.wrapped = 0

    def take(self, mib):
        if self.next + mib > self.size:
            self.next = 0
            self.wrapped += 1
        off = self.next
        self.next += mib
        return off


def guest_run(h, cmd, tag, timeout, vm=VM):
    """Runs cmd in the guest's serial shell (hsctl console, no replay,
    until the marker, as test_limits.py); returns hsctl's output and the
    host's wall time of the call."""
    # The marker as printed differs from the command line echoed back.
    t0 = now()
    r = subprocess.run([str(HSCTL), "--socket", h.socket, "console", vm, "--no-replay",
                        "--wait-for", f"HSQ-{tag}-done", "--timeout", str(int(timeout))],
                       input=f"{cmd}; echo HSQ-{tag}-don$(echo e)\n", capture_output=True,
                       text=True, timeout=timeout + 15)
    t = now() - t0
    if r.returncode != 0:
        raise BenchError(f"guest command {cmd!r}: hsctl rc={r.returncode}: "
                         f"{r.stderr.strip()[-500:]} {r.stdout[-800:]}")
    return r.stdout, t


def read_rate(h, skip_mib, mib, tag, timeout):
    """The guest reads `mib` MiB of /dev/vda from `skip_mib` on, caches
    dropped first, timed by the guest (/proc/uptime, 10 ms). Returns
    (bytes/s by the guest's clock, guest seconds, host seconds of the whole
    hsctl call)."""
    out, host_s = guest_run(
        h,
        f"sync; echo 3 > /proc/sys/vm/drop_caches; a=$(cut -d' ' -f1 /proc/uptime); "
        f"dd if=/dev/vda of=/dev/null bs=64k skip={skip_mib * 16} count={mib * 16} 2>/dev/null; "
        f"b=$(cut -d' ' -f1 /proc/uptime); echo RATE-{tag} $a $b", tag, timeout)
    found = re.findall(rf"RATE-{tag} ([\d.]+) ([\d.]+)", out)
    if not found:
        raise BenchError(f"no RATE-{tag} line in the guest's output: {out[-800:]!r}")
    a, b = (float(x) for x in found[-1])
    if b <= a:
        raise BenchError(f"read {tag}: guest clock did not advance ({a} -> {b})")
    return mib * MIB / (b - a), b - a, host_s


def set_limit(h, bps):
    """PATCH the disk's read limit (None: no limit); checks QEMU has it.
    Returns the PATCH's wall time."""
    limits = {} if bps is None else {"bps_read": int(bps)}
    t, _, js = h.request("PATCH", f"/v1/vms/{VM}", {"disks": [{"limits": limits}]})
    got = js["spec"]["disks"][0].get("limits", {})
    if got != limits:
        raise BenchError(f"PATCH answered limits {got}, asked {limits}")
    return t


def qemu_bps_rd(h):
    _, _, js = h.request("POST", f"/v1/vms/{VM}/qmp", {"execute": "query-block"})
    ins = [d["inserted"] for d in js["return"] if "disk0" in d.get("qdev", "")]
    if not ins:
        raise BenchError(f"query-block: no disk0 in {js}")
    return ins[0]["bps_rd"]


def log_slice(h, mark):
    try:
        with open(h.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def log_size(h):
    try:
        return h.log_path.stat().st_size
    except OSError:
        return 0


# ------------------------------------------------------------------ phases

def phase_boot(h, guest, p, res):
    spec = {"name": VM, "cpus": 1, "memory_mib": 192, "accel": "tcg",
            "kernel": guest["kernel"], "initrd": guest["initrd"], "cmdline": CMDLINE,
            "disks": [{"size": f"{DISK_MIB}M"}]}
    res["spec"] = spec
    h.request("POST", "/v1/vms", spec, expect=(201,))
    t0 = now()
    _, _, vm = h.request("POST", f"/v1/vms/{VM}/start", timeout=120)
    log(f"\n== VM {VM}: started (QEMU pid {vm.get('pid')}), waiting for HS-GUEST-READY")
    wait_for(lambda: (h.check_alive() or console_ready(h, VM)), p["boot_timeout"],
             "HS-GUEST-READY on the console", interval=0.2)
    res["boot_s"] = now() - t0
    log(f"  guest ready after {res['boot_s']:.1f}s")
    # The shell answers (and the blank disk is there).
    out, _ = guest_run(h, "echo DISK-$(cat /sys/block/vda/size)", "probe", 60)
    m = re.findall(r"DISK-(\d+)", out)
    if not m or int(m[-1]) * 512 != DISK_MIB * MIB:
        raise BenchError(f"guest does not see a {DISK_MIB} MiB /dev/vda: {out[-400:]!r}")
    # Data on the whole disk, so that reads go through allocated qcow2
    # clusters to the host file (a blank disk's reads never leave QEMU).
    if p["fill"]:
        out, t = guest_run(h, f"dd if=/dev/zero of=/dev/vda bs=1M count={DISK_MIB} conv=fsync "
                              f"2>/dev/null; sync; echo FILL-$?", "fill", 300)
        res["fill_s"] = t
        disk = sorted((h.state_dir / "vms" / VM).rglob("*.qcow2"))
        res["disk_files"] = {str(d.relative_to(h.state_dir)): d.stat().st_blocks * 512 for d in disk}
        log(f"  filled /dev/vda ({DISK_MIB} MiB of zeros, conv=fsync) in {t:.1f}s; disk files "
            + ", ".join(f"{k} {v / MIB:.0f} MiB allocated" for k, v in res["disk_files"].items()))


def phase_throttle(h, p, res):
    kinds = [None] * (p["baseline_reps"] > 0) + list(p["limits_mib"])
    log(f"\n== 1. throttling: bps_read limits {', '.join(f'{x} MiB/s' for x in p['limits_mib'])} "
        f"(MiB = 2^20 B) + unthrottled baseline; {p['reps']} rep(s) each, interleaved; guest dd "
        f"bs=64k of /dev/vda after drop_caches, timed by the guest's /proc/uptime")
    regions = Regions(DISK_MIB)
    samples = {k: [] for k in kinds}
    runs = []
    n = max(p["reps"], p["baseline_reps"])
    for i in range(n):
        h.check_alive()
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
        for k in order:
            if k is None and i >= p["baseline_reps"]:
                continue
            if k is not None and i >= p["reps"]:
                continue
            mib = read_mib_for(k)
            bps = None if k is None else k * MIB
            t_patch = set_limit(h, bps)
            qbps = qemu_bps_rd(h)
            if qbps != (bps or 0):
                raise BenchError(f"QEMU's bps_rd is {qbps} after PATCH to {bps}")
            off = regions.take(mib)
            expect_s = mib / k if k else mib / 5.0
            tag = f"{'u' if k is None else k}x{i}"
            rate, gs, hs = read_rate(h, off, mib, tag, timeout=3 * expect_s + 60)
            samples[k].append(rate)
            err = None if k is None else 100.0 * (rate - bps) / bps
            runs.append({"limit_mib_s": k, "rep": i, "offset_mib": off, "read_mib": mib,
                         "rate_bps": rate, "guest_s": gs, "host_call_s": hs, "patch_s": t_patch,
                         "error_pct": err})
            label = "unthrottled" if k is None else f"{k:>3} MiB/s"
            log(f"  [{i + 1}/{n}] {label:>11}: {mib:3} MiB at {off:3} MiB: {rate / MIB:7.2f} MiB/s "
                f"in {gs:5.2f} s (guest clock; hsctl call {hs:5.2f} s)"
                + ("" if err is None else f"  error {err:+6.1f} %"))
    res["throttle_runs"] = runs
    res["regions_wrapped"] = regions.wrapped
    res["throttle"] = {}
    for k in kinds:
        v = samples[k]
        med = percentile(v, 50)
        key = "unthrottled" if k is None else f"{k}"
        res["throttle"][key] = {
            "limit_mib_s": k, "read_mib": read_mib_for(k), "n": len(v),
            "rates_mib_s": [x / MIB for x in v], "median_mib_s": med / MIB if v else None,
            "min_mib_s": min(v) / MIB if v else None, "max_mib_s": max(v) / MIB if v else None,
            "error_pct": None if k is None or not v else 100.0 * (med - k * MIB) / (k * MIB)}
    # Lift the limit again for what follows.
    set_limit(h, None)


def phase_patch(h, p, res, state_dir):
    n = p["patches"]
    log(f"\n== 2. live limit change: {n} PATCHes alternating bps_read "
        f"{PATCH_VALUES[0] // MIB}/{PATCH_VALUES[1] // MIB} MiB/s (guest idle), new connection "
        f"each; with GET /v1, QMP passthrough and fsync'd-save references")
    mark = log_size(h)
    pt, floor, qs, thr = [], [], [], []
    for i in range(n):
        h.check_alive()
        t0 = now()
        h.request("GET", "/v1")
        floor.append(now() - t0)
        pt.append(set_limit(h, PATCH_VALUES[i % 2]))
    last = PATCH_VALUES[(n - 1) % 2]
    if qemu_bps_rd(h) != last:
        raise BenchError("QEMU's bps_rd is not the last PATCH's value")
    # What hsd sends per PATCH, as a QMP passthrough: the throttle with the
    # current values (changes nothing), and a trivial command.
    args = {"id": "/machine/peripheral/disk0/virtio-backend", "bps": 0, "bps_rd": last,
            "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0, "group": "hs-disk0"}
    for i in range(p["qmp_reps"]):
        t, _, _ = h.request("POST", f"/v1/vms/{VM}/qmp", {"execute": "query-status"})
        qs.append(t)
        t, _, js = h.request("POST", f"/v1/vms/{VM}/qmp",
                             {"execute": "block_set_io_throttle", "arguments": args})
        if "error" in js:
            raise BenchError(f"block_set_io_throttle passthrough: {js['error']}")
        thr.append(t)
    saves = atomic_write_cost(Path(state_dir) / "bench-save", n=p["qmp_reps"])
    txt = log_slice(h, mark)
    res["patch"] = summarize(pt)
    res["patch_samples_s"] = pt
    res["get_v1"] = summarize(floor)
    res["qmp_query_status"] = summarize(qs)
    res["qmp_block_set_io_throttle"] = summarize(thr)
    res["fsync_save"] = summarize(saves)
    res["patch_log"] = {
        "api_patch_lines": len(re.findall(r"api: patch vm=", txt)),
        "limits_changed_lines": len(re.findall(rf"vm {VM}: limits changed", txt)),
        "timed": bool(re.search(r"limits changed.*\d+(\.\d+)? ?(ms|s)\b", txt)),
        "problems": [ln for ln in txt.splitlines() if ln[:3] in ("<0>", "<1>", "<2>", "<3>", "<4>")]}
    for label, s in (("PATCH bps_read (client round trip)", res["patch"]),
                     ("GET /v1 (API floor)", res["get_v1"]),
                     ("QMP passthrough query-status", res["qmp_query_status"]),
                     ("QMP passthrough block_set_io_throttle", res["qmp_block_set_io_throttle"]),
                     ("fsync'd file save (state dir)", res["fsync_save"])):
        log(f"  {label}: median {s['median_ms']:.2f} ms, p90 {s['p90_ms']:.2f} ms, "
            f"min {s['min_ms']:.2f}, max {s['max_ms']:.2f} (n={s['n']})")
    pl = res["patch_log"]
    log(f"  hsd log: {pl['api_patch_lines']} 'api: patch' and {pl['limits_changed_lines']} "
        f"'limits changed' lines, " + ("with timings" if pl["timed"] else
                                       "no timestamps or durations: hsd's own share is not "
                                       "in its log"))
    for ln in pl["problems"][:5]:
        log(f"  hsd log: {ln}")


def vm_rss_mib(pid):
    """VmRSS of a process, MiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1]) / 1024
    except OSError:
        return None
    return None


def host_mem_available_mib():
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) / 1024
    raise BenchError("no MemAvailable in /proc/meminfo")


def thp_deferred_splits():
    """Huge pages queued for the kernel's deferred split so far (vmstat):
    a 2 MiB THP of guest RAM the balloon discarded only part of stays
    allocated (RSS no longer counts it) until memory pressure splits it."""
    with open("/proc/vmstat") as f:
        for ln in f:
            if ln.startswith("thp_deferred_split_page "):
                return int(ln.split()[1])
    return None


def balloon_snapshot(h, names):
    """Per VM: QEMU's RSS and the balloon as GET /v1/vms/NAME tells it."""
    snap = {}
    for n in names:
        _, _, vm = h.request("GET", f"/v1/vms/{n}")
        b = vm.get("balloon", {})
        snap[n] = {"pid": vm["pid"], "rss_mib": vm_rss_mib(vm["pid"]),
                   "actual_mib": b.get("actual_mib"), "auto_target_mib": b.get("auto_target_mib"),
                   "available_mib": b.get("stats", {}).get("available_mib")}
    return snap


def phase_balloon(h, guest, p, res):
    n = p["balloon_vms"]
    names = [f"bal{i}" for i in range(n)]
    log(f"\n== 3. balloon policy: {n} idle TCG guests of {BALLOON_MEM_MIB} MiB, floor "
        f"{BALLOON_FLOOR_MIB} MiB, each with ~{BALLOON_CACHE_MIB} MiB of page cache; forced "
        f"pressure (watermarks above the host's memory)")
    for name in names:
        spec = {"name": name, "cpus": 1, "memory_mib": BALLOON_MEM_MIB, "accel": "tcg",
                "mem_merge": False, "balloon_floor_mib": BALLOON_FLOOR_MIB,
                "kernel": guest["kernel"], "initrd": guest["initrd"],
                "cmdline": CMDLINE + " hs.disk", "disks": [{"size": f"{BALLOON_DISK_MIB}M"}]}
        h.request("POST", "/v1/vms", spec, expect=(201,))
    t0 = now()
    for name in names:
        h.request("POST", f"/v1/vms/{name}/start", timeout=120)
    wait_for(lambda: h.check_alive() or all(console_ready(h, x) for x in names),
             p["boot_timeout"] + 30 * n, "HS-GUEST-READY on every console", interval=0.5)
    res["balloon_boot_s"] = now() - t0
    log(f"  {n} guests ready after {res['balloon_boot_s']:.1f}s")
    t0 = now()
    for i, name in enumerate(names):
        # init mounts the disk after HS-GUEST-READY (formatting it first).
        out, _ = guest_run(h, "i=0; while ! grep -q ' /mnt/disk ' /proc/mounts && [ $i -lt 600 ]; "
                              "do sleep 0.2; i=$((i+1)); done; grep -q ' /mnt/disk ' /proc/mounts && "
                              f"dd if=/dev/zero of=/mnt/disk/cache bs=1M count={BALLOON_CACHE_MIB} "
                              "2>/dev/null && sync; echo CACHE-$?", f"wr{i}", 300, vm=name)
        if not re.search(r"CACHE-0", out):
            raise BenchError(f"{name}: writing /mnt/disk/cache failed: {out[-600:]!r}")
    res["balloon_cache_fill_s"] = now() - t0
    # The guests' stats arrive every 5 s (hsd's default): wait for all.
    wait_for(lambda: all(s["available_mib"] for s in balloon_snapshot(h, names).values()), 60,
             "every guest's memory stats")
    time.sleep(6)  # one more report after the reads
    before = balloon_snapshot(h, names)
    avail_before = host_mem_available_mib()
    thp_before = thp_deferred_splits()
    rss_before = sum(s["rss_mib"] for s in before.values())
    log(f"  before: QEMU RSS {rss_before:.0f} MiB in all ("
        + ", ".join(f"{k} {v['rss_mib']:.0f}" for k, v in before.items())
        + f"); host MemAvailable {avail_before:.0f} MiB")

    big = 1 << 30  # MiB (1 PiB): well above any host's memory
    t0 = now()
    h.request("PUT", "/v1/balloon", {"mode": "auto", "low_mib": big, "high_mib": big + 1})
    history = []
    last_change = [t0]

    def settled():
        h.check_alive()
        snap = balloon_snapshot(h, names)
        key = {k: (v["auto_target_mib"], v["actual_mib"]) for k, v in snap.items()}
        done = all(v["auto_target_mib"] and v["actual_mib"] == v["auto_target_mib"]
                   for v in snap.values())
        if not history or history[-1] != key:
            last_change[0] = now()
        history.append(key)
        # Settled: at their targets, and the targets held for 2 ticks (10 s).
        return done and len(history) >= 6 and all(x == key for x in history[-6:])
    wait_for(settled, BALLOON_SETTLE_TIMEOUT, "the balloon targets to settle", interval=2)
    took = last_change[0] - t0  # when the guests last moved (2 s resolution)
    time.sleep(3)  # QEMU discards the pages as the guest hands them over
    after = balloon_snapshot(h, names)
    avail_after = host_mem_available_mib()
    thp_after = thp_deferred_splits()
    thp_queued = None if thp_before is None or thp_after is None else thp_after - thp_before
    rss_after = sum(s["rss_mib"] for s in after.values())
    _, _, bal = h.request("GET", "/v1/balloon")
    per = {k: {"rss_before_mib": before[k]["rss_mib"], "rss_after_mib": after[k]["rss_mib"],
               "reclaimed_rss_mib": before[k]["rss_mib"] - after[k]["rss_mib"],
               "guest_available_before_mib": before[k]["available_mib"],
               "policy_target_mib": after[k]["auto_target_mib"]} for k in names}
    res["balloon"] = {
        "vms": n, "memory_mib": BALLOON_MEM_MIB, "floor_mib": BALLOON_FLOOR_MIB,
        "rss_before_mib": rss_before, "rss_after_mib": rss_after,
        "reclaimed_rss_mib": rss_before - rss_after,
        "host_available_before_mib": avail_before, "host_available_after_mib": avail_after,
        "host_available_gain_mib": avail_after - avail_before,
        "thp_deferred_split_pages": thp_queued,
        "policy_reclaimed_mib": bal["reclaimed_mib"], "settle_s": took, "per_vm": per}
    log(f"  after {took:.1f}s: QEMU RSS {rss_after:.0f} MiB in all, {rss_before - rss_after:.0f} "
        f"MiB reclaimed ({(rss_before - rss_after) / n:.0f} per guest); host MemAvailable "
        f"{avail_after:.0f} MiB ({avail_after - avail_before:+.0f}); policy targets "
        + ", ".join(f"{k} {v['policy_target_mib']}" for k, v in per.items())
        + f" (reclaimed {bal['reclaimed_mib']} MiB below the targets)")
    if thp_queued:
        log(f"  {thp_queued} huge pages ({2 * thp_queued} MiB) of guest RAM were partly discarded "
            "and wait for the kernel's deferred split: MemAvailable counts them only once memory "
            "pressure (or a shrinker run) splits them")

    t0 = now()
    h.request("PUT", "/v1/balloon", {"mode": "off", "low_mib": 0, "high_mib": 0})
    wait_for(lambda: all(s["actual_mib"] == BALLOON_MEM_MIB
                         for s in balloon_snapshot(h, names).values()),
             BALLOON_SETTLE_TIMEOUT, "every guest to have all its memory back", interval=1)
    res["balloon"]["return_s"] = now() - t0
    log(f"  mode off: every guest had its {BALLOON_MEM_MIB} MiB back after "
        f"{res['balloon']['return_s']:.1f}s")


# ------------------------------------------------------------------ summary

def summary_rows(res, p):
    rows = []
    th = res.get("throttle", {})
    base = th.get("unthrottled", {}).get("median_mib_s")
    if base is not None:
        rows.append({"metric": "1. unthrottled read (limits {})", "limit": None,
                     "median": base, "error_pct": None, "target": "-", "pass": None,
                     "unit": "MiB/s", "n": th["unthrottled"]["n"], "note": "TCG's own disk speed"})
    for k in p["limits_mib"]:
        r = th.get(str(k))
        if not r or not r["n"]:
            continue
        ok = abs(r["error_pct"]) <= 100 * TOLERANCE
        note = f"{r['read_mib']} MiB per read"
        if base is not None and base < k * (1 - TOLERANCE):
            note = (f"bounded by the emulated disk ({base:.1f} MiB/s unthrottled), "
                    "not by the limit")
        rows.append({"metric": f"1. bps_read {k} MiB/s", "limit": k, "median": r["median_mib_s"],
                     "error_pct": r["error_pct"], "target": "within 20 %", "pass": ok,
                     "unit": "MiB/s", "n": r["n"], "note": note})
    if res.get("patch", {}).get("n"):
        s = res["patch"]
        rows.append({"metric": "2. live limit change (PATCH round trip)", "median": s["median_ms"],
                     "p90": s["p90_ms"], "unit": "ms", "target": "-", "pass": None, "n": s["n"],
                     "note": f"GET /v1 {res['get_v1']['median_ms']:.2f} ms, QMP throttle via hsd "
                             f"{res['qmp_block_set_io_throttle']['median_ms']:.2f} ms, "
                             f"fsync save {res['fsync_save']['median_ms']:.2f} ms (medians)"})
    b = res.get("balloon")
    if b:
        rows.append({"metric": f"3. balloon policy: host memory reclaimed from {b['vms']} "
                               "idle guests",
                     "median": b["reclaimed_rss_mib"], "unit": "MiB", "target": "-", "pass": None,
                     "n": b["vms"],
                     "note": f"QEMU RSS {b['rss_before_mib']:.0f} -> {b['rss_after_mib']:.0f} MiB, "
                             f"{b['reclaimed_rss_mib'] / b['vms']:.0f} MiB per guest, settled in "
                             f"{b['settle_s']:.0f}s; host MemAvailable "
                             f"{b['host_available_gain_mib']:+.0f} MiB (THPs awaiting deferred "
                             f"split: {b['thp_deferred_split_pages']}); all back "
                             f"{b['return_s']:.0f}s after mode off"})
    return rows


def print_table(rows):
    log("\nmetric                                          limit   median   p90    error   "
        "unit   n  target       result")
    for r in rows:
        if r["median"] is None:
            log(f"{r['metric']:<48}{'':>6}  {'n/a':>6}  {'':>5}  {'':>6}   {r['unit']:<5}  -  "
                f"{'-':<12} {r['note']}")
            continue
        lim = "-" if r.get("limit") is None else f"{r['limit']}"
        err = "-" if r.get("error_pct") is None else f"{r['error_pct']:+.1f}%"
        res = {True: "PASS", False: "FAIL", None: ""}[r["pass"]]
        log(f"{r['metric']:<48}{lim:>6}  {r['median']:6.2f}  {fmt(r.get('p90'), 2):>5}  {err:>6}   "
            f"{r['unit']:<5} {r['n']:>2}  {r['target']:<12} {res}")
        if r.get("note"):
            log(f"{'':<50}({r['note']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke: 1 rep, 1 and 10 MiB/s only")
    ap.add_argument("--reps", type=int, help="reads per limit (default 3)")
    ap.add_argument("--patches", type=int, help="PATCHes timed (default 20)")
    ap.add_argument("--boot-timeout", type=float, help="s to wait for HS-GUEST-READY (default 240)")
    ap.add_argument("--no-fill", action="store_true",
                    help="read the blank disk (no data written first: reads never reach the host file)")
    ap.add_argument("--base", help="work dir (default /tmp/hsl-PID; UNIX socket paths must stay short)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--only", help=f"comma-separated phases to run: {', '.join(PHASES)} "
                                   "(default all)")
    ap.add_argument("--balloon-vms", type=int, help="guests of the balloon phase (default 10)")
    ap.add_argument("--output", help="JSON results file (default bench/results/limits-<timestamp>.json)")
    args = ap.parse_args()

    p = dict(QUICK if args.quick else FULL)
    if args.reps is not None:
        p["reps"] = p["baseline_reps"] = args.reps
    if args.patches is not None:
        p["patches"] = args.patches
    if args.no_fill:
        p["fill"] = False
    if args.boot_timeout is not None:
        p["boot_timeout"] = args.boot_timeout
    if args.balloon_vms is not None:
        p["balloon_vms"] = args.balloon_vms
    phases = args.only.split(",") if args.only else list(PHASES)
    if p["reps"] < 1 or p["patches"] < 2 or p["balloon_vms"] < 1:
        sys.exit("limits.py: --reps and --balloon-vms must be >= 1 and --patches >= 2")
    if any(x not in PHASES for x in phases):
        sys.exit(f"limits.py: --only: phases are {', '.join(PHASES)}")
    p["phases"] = phases
    need_files("limits.py", HSD, HSCTL, QEMU, hint=" (ninja -C build)")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outp = Path(args.output) if args.output else RESULTS / f"limits-{stamp}.json"
    base = new_workdir("limits.py", args.base, "hsl")
    reg = Registry()
    res = {"loadavg": {"start": os.getloadavg()}}
    error = None
    bin_before = binary_info(HSD)
    t_start = time.monotonic()

    catch_signals(p["budget"])
    log(f"hsd limits benchmark ({'quick' if args.quick else 'full'}): {HSD}, work dir {base}, "
        f"time budget {p['budget']}s")
    try:
        base.mkdir(parents=True)
        guest = build_guest()
        log(f"guest: {guest['kernel']} + {guest['initrd']}")
        extra = hsd_extra_args(guest) + ["-v"]
        res["hsd_args"] = extra
        h = Hsd(base / "d", reg, extra)
        h.start()
        log(f"hsd pid {h.pid}: {' '.join(extra)}")
        if "throttle" in phases or "patch" in phases:
            phase_boot(h, guest, p, res)
        if "throttle" in phases:
            phase_throttle(h, p, res)
            h.check_alive()
        if "patch" in phases:
            phase_patch(h, p, res, h.state_dir)
            h.check_alive()
        if "balloon" in phases:
            phase_balloon(h, guest, p, res)
            h.check_alive()
        res["loadavg"]["end"] = os.getloadavg()
    except RUN_ERRORS as e:
        error = run_error(e)
    finally:
        with uninterrupted():
            for hh in reg.hsds:
                if not hh.alive():
                    continue
                try:  # stop the guests through hsd first (bounded)
                    _, _, js = hh.request("GET", "/v1/vms", timeout=10, expect=None)
                    names = [v["name"] for v in js.get("vms", [])
                             if v.get("state") in ("running", "paused", "starting")]
                except Exception as e:
                    names = []
                    log(f"cleanup: listing the VMs through hsd failed: {e}")
                for name in names:
                    try:
                        hh.request("POST", f"/v1/vms/{name}/kill", timeout=30, expect=None)
                    except Exception as e:  # the Registry still kills it by pid
                        log(f"cleanup: kill of {name} through hsd failed: {e}")
            collect_hsd_logs(reg, res, error)
            reg.cleanup(log)
            remove_workdir(base, args.keep, log)

    elapsed = time.monotonic() - t_start
    bin_after = binary_info(HSD)
    report_run_end(HSD, bin_before, error, res)
    rows = summary_rows(res, p)
    print_table(rows)
    if res.get("regions_wrapped"):
        log(f"\nnote: the reads went round the {DISK_MIB} MiB disk {res['regions_wrapped']} time(s): "
            "later reads re-read blocks read before (the guest's cache dropped before each)")
    log(f"\ntotal run time: {elapsed:.1f}s; load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    out = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "params": p,
        "units": {"limits": "MiB/s (2^20 bytes per second)", "latency": "ms"},
        "targets": {"throttle_error_pct": 100 * TOLERANCE},
        "host": host_info(qemu=version_line(QEMU)), "git": git_rev(), "hsd_binary": bin_before,
        "hsd_binary_changed_during_run": bin_after != bin_before,
        "elapsed_s": elapsed, "error": error, "summary": rows, "results": res,
    }
    write_results(outp, out)
    return exit_status(error, rows)


if __name__ == "__main__":
    sys.exit(main())
