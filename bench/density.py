#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Density benchmark: N identical TCG test guests through hsd, KSM merging
them, and what each extra VM really costs the host.

For each N of --counts (default 10,100), in a fresh hsd and work dir:
  - define N guests (--memory MiB, 1 vCPU, TCG, the test guest kernel with
    hs.fill=--fill: the guest fills that much RAM with one common pattern),
  - start them through the API, --concurrency starts in flight at a time
    (a start waits while hsd paces it); a bench-side gate and an abort
    floor keep MemAvailable above --min-available (default 2048 MiB),
  - wait for every HS-GUEST-FILLED on the console logs,
  - sample MemAvailable, GET /v1/ksm and the QEMUs' ksm_merging_pages until
    merging converges (our VMs' merged pages stop growing for --quiet s),
  - then an idle window: ksmd's and the QEMUs' steady CPU,
  - per VM: RSS/PSS, KSM merged pages, and a breakdown by mapping (guest
    RAM, TCG code buffer, QEMU heap/arenas, ...) of what KSM did not merge.
Then (--cuts) raw QEMU variants measure what each cut saves per VM: guest
`nokaslr`, `init_on_free=1`, TCG `tb-size`, process-wide KSM
(prctl PR_SET_MEMORY_MERGE), and combinations.

Usage: /usr/bin/python3 bench/density.py [--quick] [--counts 10,100] ...
See bench/README.md ("Density benchmark"). Python 3 standard library only."""
import argparse
import concurrent.futures
import datetime
import json
import os
import re
import shlex
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    BenchError, HSCTL, HSD, Hsd, QEMU, RUN_ERRORS, RawQemu, Registry, api, build_guest,
    catch_signals, console_has, host_info, hsd_extra_args, kill_and_wait, log, need_files,
    new_workdir, pid_alive, proc_cpu_s, raw_argv, remove_workdir, run_error, timed_request,
    uninterrupted, version_line, write_results)

RESULTS = Path(__file__).resolve().parent / "results"
KSM_SYSFS = "/sys/kernel/mm/ksm"
PAGE = os.sysconf("SC_PAGESIZE")
TCK = os.sysconf("SC_CLK_TCK")
RMAP_ITEM_BYTES = 64  # sizeof(struct ksm_rmap_item) on x86-64 (ksm_process_profit uses it)
KSTACK_BYTES = 16 << 10  # one kernel stack per thread (x86-64)

# As bench/run.py: no_timer_check avoids the IO-APIC timer check failing on
# overcommitted TCG guests.
BASE_CMDLINE = "console=ttyS0 quiet no_timer_check"

TARGETS = {"marginal_mib": 64.0, "converge_s": 60.0}

FULL = dict(counts=[10, 100], memory=512, fill=256, concurrency=3, boot_timeout=1500,
            converge_timeout=600, quiet=10.0, idle=20.0, budget=4200, cut_vms=4,
            cuts="default,nokaslr,nokaslr+init_on_free,tb16,tb8,mergeany,nokaslr+tb8+mergeany")
QUICK = dict(counts=[4, 12], memory=256, fill=128, concurrency=3, boot_timeout=400,
             converge_timeout=180, quiet=8.0, idle=8.0, budget=900, cut_vms=2,
             cuts="default,nokaslr,tb8")

# Raw QEMU variants for --cuts: guest cmdline additions, TCG options
# (-accel tcg,...), process-wide KSM (prctl before exec).
CUTS = {
    "default": dict(cmdline="", tcg=None, mergeany=False, nic=True),
    "nokaslr": dict(cmdline="nokaslr", tcg=None, mergeany=False, nic=True),
    "init_on_free": dict(cmdline="init_on_free=1", tcg=None, mergeany=False, nic=True),
    "nokaslr+init_on_free": dict(cmdline="nokaslr init_on_free=1", tcg=None, mergeany=False, nic=True),
    "tb32": dict(cmdline="", tcg="tb-size=32", mergeany=False, nic=True),
    "tb16": dict(cmdline="", tcg="tb-size=16", mergeany=False, nic=True),
    "tb8": dict(cmdline="", tcg="tb-size=8", mergeany=False, nic=True),
    "tb4": dict(cmdline="", tcg="tb-size=4", mergeany=False, nic=True),
    "nonic": dict(cmdline="", tcg=None, mergeany=False, nic=False),
    "mergeany": dict(cmdline="", tcg=None, mergeany=True, nic=True),
    "nokaslr+tb8": dict(cmdline="nokaslr", tcg="tb-size=8", mergeany=False, nic=True),
    "nokaslr+tb8+mergeany": dict(cmdline="nokaslr", tcg="tb-size=8", mergeany=True, nic=True),
    "nokaslr+init_on_free+tb8+mergeany": dict(cmdline="nokaslr init_on_free=1", tcg="tb-size=8",
                                              mergeany=True, nic=True),
    # What hsd does today (tb-size 16, merge-any) on a nokaslr guest, and
    # what QEMU's environment or a smaller buffer would add to it.
    "hsd": dict(cmdline="nokaslr", tcg="tb-size=16", mergeany=True, nic=True),
    "hsd+arena1": dict(cmdline="nokaslr", tcg="tb-size=16", mergeany=True, nic=True,
                       env={"MALLOC_ARENA_MAX": "1"}),
    "hsd+tb12": dict(cmdline="nokaslr", tcg="tb-size=12", mergeany=True, nic=True),
}

# Sets PR_SET_MEMORY_MERGE (67): every anonymous mapping of the process,
# and of what it execs (Linux >= 6.7), is offered to KSM; then execs QEMU.
MERGEANY_WRAPPER = ("import ctypes,os,sys\n"
                    "libc=ctypes.CDLL(None,use_errno=True)\n"
                    "if libc.prctl(67,1,0,0,0)!=0: sys.exit('prctl(PR_SET_MEMORY_MERGE) failed')\n"
                    "os.execv(sys.argv[1],sys.argv[1:])\n")


class Unsafe(BenchError):
    """The host's MemAvailable fell below the floor."""


def mib(nbytes):
    return None if nbytes is None else nbytes / 1048576.0


def fmt(x, nd=1, unit=""):
    return "-" if x is None else f"{x:.{nd}f}{unit}"


# ------------------------------------------------------------------ /proc, /sys

def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v.split()[0]) * 1024
    return out


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise BenchError("no MemAvailable in /proc/meminfo")


def ksm_sysfs():
    out = {}
    try:
        for n in os.listdir(KSM_SYSFS):
            try:
                with open(f"{KSM_SYSFS}/{n}") as f:
                    v = f.read().strip()
                out[n] = int(v)
            except (OSError, ValueError):
                pass
    except OSError:
        pass
    return out


def find_ksmd():
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "ksmd":
                        return int(d)
            except OSError:
                pass
    return None


def cpu_ticks(pid):
    s = proc_cpu_s(pid) if pid else None
    return s


def read_int(path, default=None):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def ksm_stat(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/ksm_stat") as f:
            for line in f:
                k, _, v = line.strip().rpartition(" ")
                out[k.strip().rstrip(":")] = int(v) if v.lstrip("-").isdigit() else v
    except OSError:
        pass
    return out


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmPTE", "Threads"):
                out[k] = int(v.split()[0]) * (1024 if k != "Threads" else 1)
    return out


def smaps_rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            p = v.split()
            if len(p) == 2 and p[1] == "kB":
                out[k] = int(p[0]) * 1024
    return out


MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$")
CATEGORIES = ("guest_ram", "tcg_code", "other_ram", "malloc_arenas", "heap", "anon_other",
              "file_anon", "file", "stack")
CATEGORY_LABEL = {
    "guest_ram": "guest RAM (pc.ram)",
    "tcg_code": "TCG code buffer (rwx)",
    "other_ram": "other RAM blocks (ROMs, ACPI)",
    "malloc_arenas": "glibc thread arenas",
    "heap": "[heap] (main arena)",
    "anon_other": "other anon (mmap'd mallocs, stacks)",
    "file_anon": "libs/binary .data/.bss/relro",
    "file": "file-backed (page cache)",
    "stack": "[stack]",
}


def smaps_breakdown(pid, guest_mib):
    """Per category of mapping: Rss, Pss, Anonymous, KSM (merged), THP,
    Private, in bytes. unmerged = Anonymous - KSM."""
    cats = {c: dict(size=0, rss=0, pss=0, anon=0, ksm=0, thp=0, private=0, n=0) for c in CATEGORIES}
    merge_any = ksm_stat(pid).get("ksm_merge_any") == "yes"
    cur = None

    def flush(m):
        if not m:
            return
        name, flags, perm = m["name"], m.get("flags", ""), m["perm"]
        size = m["size"]
        if name and not name.startswith("["):
            # A file mapping: its anonymous (COW: .data, .bss, relro) pages
            # are the process's own; the rest is page cache, shared.
            a = m.get("Anonymous", 0)
            priv = m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
            fa = cats["file_anon"]
            fa["rss"] += a
            fa["pss"] += min(a, m.get("Pss", 0))
            fa["anon"] += a
            fa["ksm"] += m.get("KSM", 0)
            fa["thp"] += m.get("AnonHugePages", 0)
            fa["private"] += min(a, priv)
            fa["n"] += 1 if a else 0
            c = cats["file"]
            c["size"] += size
            c["n"] += 1
            c["rss"] += m.get("Rss", 0) - a
            c["pss"] += max(0, m.get("Pss", 0) - a)
            c["private"] += max(0, priv - a)
            return
        if name == "[heap]":
            cat = "heap"
        elif name.startswith("[stack"):
            cat = "stack"
        elif name.startswith("["):
            cat = "anon_other"  # [vdso], [vvar], ...
        elif "ex" in flags.split():
            cat = "tcg_code"
        elif size == guest_mib << 20:
            cat = "guest_ram"
        elif "mg" in flags.split() and not merge_any:
            cat = "other_ram"
        elif "nr" in flags.split():
            cat = "malloc_arenas"
        else:
            cat = "anon_other"
        c = cats[cat]
        c["size"] += size
        c["n"] += 1
        c["rss"] += m.get("Rss", 0)
        c["pss"] += m.get("Pss", 0)
        c["anon"] += m.get("Anonymous", 0)
        c["ksm"] += m.get("KSM", 0)
        c["thp"] += m.get("AnonHugePages", 0)
        c["private"] += m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)

    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            mm = MAP_RE.match(line)
            if mm and ":" not in line.split()[0]:
                flush(cur)
                cur = {"size": int(mm.group(2), 16) - int(mm.group(1), 16), "perm": mm.group(3),
                       "name": mm.group(4).strip()}
                continue
            k, _, v = line.partition(":")
            if k == "VmFlags":
                cur["flags"] = v.strip()
                continue
            p = v.split()
            if len(p) == 2 and p[1] == "kB" and cur is not None:
                cur[k] = int(p[0]) * 1024
    flush(cur)
    for c in cats.values():
        c["unmerged"] = max(0, c["anon"] - c["ksm"])
    return cats


def largest_anon_mappings(pid, n=8):
    """The n largest mappings by Rss: for the report's attribution."""
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            mm = MAP_RE.match(line)
            if mm and ":" not in line.split()[0]:
                cur = {"range": f"{mm.group(1)}-{mm.group(2)}", "size_kib":
                       (int(mm.group(2), 16) - int(mm.group(1), 16)) >> 10,
                       "perm": mm.group(3), "name": mm.group(4).strip()}
                maps.append(cur)
                continue
            k, _, v = line.partition(":")
            if k == "VmFlags":
                cur["flags"] = v.strip()
            elif k in ("Rss", "Pss", "Anonymous", "KSM", "AnonHugePages", "Private_Dirty"):
                cur[k + "_kib"] = int(v.split()[0])
    maps.sort(key=lambda m: -m.get("Rss_kib", 0))
    return maps[:n]


def vm_snapshot(pid, guest_mib, detail=False):
    """What one QEMU costs: status, smaps_rollup, KSM figures, CPU."""
    st = proc_status(pid)
    ro = smaps_rollup(pid)
    ks = ksm_stat(pid)
    merging = read_int(f"/proc/{pid}/ksm_merging_pages", 0)
    d = {
        "pid": pid, "rss": st.get("VmRSS"), "pss": ro.get("Pss"), "pss_anon": ro.get("Pss_Anon"),
        "pss_file": ro.get("Pss_File"), "anon": ro.get("Anonymous"), "ksm": ro.get("KSM"),
        "thp": ro.get("AnonHugePages"), "pte": st.get("VmPTE"), "threads": st.get("Threads"),
        "merging_pages": merging, "rmap_items": ks.get("ksm_rmap_items"),
        "ksm_zero_pages": ks.get("ksm_zero_pages"), "merge_any": ks.get("ksm_merge_any"),
        "cpu_s": proc_cpu_s(pid),
    }
    if d["anon"] is not None:
        d["unmerged_anon"] = max(0, d["anon"] - (d["ksm"] if d["ksm"] is not None else merging * PAGE))
    # What the host pays for this VM beyond its mapped pages: page tables,
    # KSM's rmap items (one per scanned page), kernel stacks.
    d["kernel_side"] = (d["pte"] or 0) + (d["rmap_items"] or 0) * RMAP_ITEM_BYTES + \
        (d["threads"] or 0) * KSTACK_BYTES
    if detail:
        d["breakdown"] = smaps_breakdown(pid, guest_mib)
    return d


def mean_breakdown(snaps):
    """Mean per category over VMs that have a breakdown."""
    bs = [s["breakdown"] for s in snaps if s.get("breakdown")]
    if not bs:
        return None
    out = {}
    for c in CATEGORIES:
        out[c] = {k: sum(b[c][k] for b in bs) / len(bs) for k in bs[0][c]}
    return out


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ------------------------------------------------------------------ sampling

class Sampler(threading.Thread):
    """Every `interval` s: MemAvailable (with the abort floor), our QEMUs'
    merged pages (sum of /proc/PID/ksm_merging_pages), the KSM sysfs knobs
    and counters, ksmd's CPU; every `api_every` samples GET /v1/ksm."""

    def __init__(self, t0, floor, pids_fn, sock=None, interval=1.0, api_every=2):
        super().__init__(daemon=True)
        self.t0, self.floor, self.pids_fn, self.sock = t0, floor, pids_fn, sock
        self.interval, self.api_every = interval, api_every
        self.samples = []
        self.unsafe = None
        self.min_avail = None
        self.ksmd = find_ksmd()
        self.lock = threading.Lock()
        self._stop_ev = threading.Event()
        self.errors = 0

    def sample_once(self, with_api):
        t = time.monotonic() - self.t0
        avail = mem_available()
        if self.min_avail is None or avail < self.min_avail:
            self.min_avail = avail
        if avail < self.floor and not self.unsafe:
            self.unsafe = (f"MemAvailable {mib(avail):.0f} MiB fell below the floor of "
                           f"{mib(self.floor):.0f} MiB at t={t:.1f}s")
        own = 0
        for pid in self.pids_fn():
            own += read_int(f"/proc/{pid}/ksm_merging_pages", 0)
        ks = ksm_sysfs()
        s = {"t": round(t, 2), "avail": avail, "own_merging": own,
             "pages_sharing": ks.get("pages_sharing"), "pages_shared": ks.get("pages_shared"),
             "pages_to_scan": ks.get("pages_to_scan"), "sleep_ms": ks.get("sleep_millisecs"),
             "full_scans": ks.get("full_scans"), "ksmd_cpu_s": cpu_ticks(self.ksmd)}
        if with_api and self.sock:
            try:
                _, js = api(self.sock, "GET", "/v1/ksm", timeout=10)
                s["phase"] = js.get("phase")
                s["cpu_capped"] = js.get("cpu_capped")
                s["saved_bytes"] = js.get("saved_bytes")
                s["hsd_ksmd_cpu"] = js.get("ksmd_cpu")
                s["vm_merging_bytes"] = js.get("vm_merging_bytes")
            except Exception as e:
                self.errors += 1
                s["api_error"] = str(e)[:200]
        with self.lock:
            self.samples.append(s)
        return s

    def run(self):
        i = 0
        while not self._stop_ev.is_set():
            try:
                self.sample_once(i % self.api_every == 0)
            except Exception as e:  # keep sampling; reported
                self.errors += 1
                with self.lock:
                    self.samples.append({"t": time.monotonic() - self.t0, "error": str(e)[:200]})
            i += 1
            self._stop_ev.wait(self.interval)

    def last(self):
        with self.lock:
            return self.samples[-1] if self.samples else None

    def since(self, t):
        with self.lock:
            return [s for s in self.samples if s["t"] >= t and "avail" in s]

    def stop(self):
        self._stop_ev.set()
        self.join(15)


def converged_at(samples, quiet, scans_base=None, min_scans=2, rel=0.002, abs_pages=256):
    """The earliest sample time t0 after which our merged pages never grew
    by more than max(abs_pages, rel x value) up to the last sample, when
    that span is at least `quiet` s, something was merged, and ksmd has
    completed at least `min_scans` full passes since `scans_base` (the
    full_scans counter at the last fill: a page needs up to two passes to
    be merged through the unstable tree, and a flat count while ksmd has
    not looked at our pages means nothing); else None."""
    if not samples or not samples[-1].get("own_merging"):
        return None
    if scans_base is not None and samples[-1].get("full_scans") is not None and \
            samples[-1]["full_scans"] < scans_base + min_scans:
        return None
    last_t = samples[-1]["t"]
    best = None
    # walk backwards: the window [i, end] is flat if max - value(i) small
    hi = samples[-1]["own_merging"]
    for i in range(len(samples) - 1, -1, -1):
        v = samples[i]["own_merging"]
        hi = max(hi, v)
        if hi - v <= max(abs_pages, rel * hi):
            best = samples[i]["t"]
        else:
            break
    if best is not None and last_t - best >= quiet:
        return best
    return None


# ------------------------------------------------------------------ hsd run

def guest_cmdline(args, p, extra=""):
    base = args.cmdline if args.cmdline is not None else BASE_CMDLINE
    parts = [base, f"hs.fill={p['fill']}"]
    if args.cmdline_extra:
        parts.append(args.cmdline_extra)
    if extra:
        parts.append(extra)
    return " ".join(x for x in parts if x)


def vm_spec(name, guest, p, cmdline, nic):
    spec = {"name": name, "cpus": 1, "memory_mib": p["memory"], "accel": "tcg",
            "kernel": guest["kernel"], "initrd": guest["initrd"], "cmdline": cmdline}
    if nic != "none":
        spec["nics"] = [{"type": "user"}]
    return spec


def other_hsds(own_pids):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) not in own_pids:
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "hsd":
                        out.append(int(d))
            except OSError:
                pass
    return out


def wait_mem_recovered(target, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mem_available() >= target:
            return True
        time.sleep(1)
    return False


def baseline_available(n=3, gap=0.7):
    vals = []
    for _ in range(n):
        vals.append(mem_available())
        time.sleep(gap)
    vals.sort()
    return vals[len(vals) // 2]


def run_count(n, args, p, guest, reg, base, res_all):
    """One density run with N guests in a fresh hsd. Fills res (a dict that
    is also stored in res_all as soon as it exists, so a failure keeps the
    figures gathered so far)."""
    res = {"n": n, "memory_mib": p["memory"], "fill_mib": p["fill"]}
    res_all.append(res)
    log(f"\n== N = {n}: {n} x {p['memory']} MiB TCG guests, fill {p['fill']} MiB "
        f"({n * p['memory'] / 1024:.1f} GiB nominal)")
    floor = args.min_available << 20
    hbase = base / f"n{n}"
    extra = hsd_extra_args(guest)
    if args.overcommit is not None:
        extra += ["--overcommit", str(args.overcommit)]
    if args.pacing_timeout is not None:
        extra += ["--pacing-timeout", str(args.pacing_timeout)]
    pacing_timeout = args.pacing_timeout if args.pacing_timeout is not None else 120.0
    res["hsd_args"] = extra
    others = other_hsds(set())
    res["other_hsds_running"] = len(others)
    if others:
        log(f"  note: {len(others)} other hsd process(es) run on this host; each tunes the same "
            f"global KSM knobs")

    # Baseline, before our hsd exists.
    ksmd = find_ksmd()
    res["baseline"] = {"avail": baseline_available(), "meminfo": meminfo(), "ksm": ksm_sysfs(),
                       "loadavg": os.getloadavg()}
    b_avail = res["baseline"]["avail"]
    log(f"  baseline MemAvailable {mib(b_avail):.0f} MiB; KSM pages_sharing "
        f"{res['baseline']['ksm'].get('pages_sharing')}; load {os.getloadavg()[0]:.1f}")
    if b_avail < floor + (1 << 30):
        raise Unsafe(f"only {mib(b_avail):.0f} MiB available before the run")

    h = Hsd(hbase, reg, extra)
    h.start()
    res["hsd_pid"] = h.pid
    if args.ksm_mode or args.ksm_pages or args.ksm_sleep or args.ksm_max_cpu:
        body = {}
        if args.ksm_mode:
            body["mode"] = args.ksm_mode
        if args.ksm_pages:
            body["pages_to_scan"] = args.ksm_pages
        if args.ksm_sleep:
            body["sleep_millisecs"] = args.ksm_sleep
        if args.ksm_max_cpu:
            body["max_cpu"] = args.ksm_max_cpu
        _, js = api(h.socket, "PUT", "/v1/ksm", body, timeout=10)
        res["ksm_config"] = js.get("config")
    names = [f"d{n}-{i:03d}" for i in range(n)]
    cmdline = guest_cmdline(args, p)
    res["cmdline"] = cmdline
    for nm in names:
        api(h.socket, "POST", "/v1/vms", vm_spec(nm, guest, p, cmdline, args.nic), timeout=30)
    consoles = {nm: h.state_dir / "vms" / nm / "console.log" for nm in names}

    pids = {}
    pids_lock = threading.Lock()
    res["pids"] = pids  # for the teardown, whatever happens

    def our_pids():
        with pids_lock:
            return list(pids.values())

    t0 = time.monotonic()
    smp = Sampler(t0, floor, our_pids, h.socket, interval=1.0)
    smp.start()
    res["samples"] = smp.samples
    try:
        return _run_count_body(n, args, p, h, reg, res, smp, t0, names, consoles, pids, pids_lock,
                               ksmd, floor, b_avail, pacing_timeout)
    finally:
        smp.stop()
        res["sampler_errors"] = smp.errors


def _run_count_body(n, args, p, h, reg, res, smp, t0, names, consoles, pids, pids_lock, ksmd,
                    floor, b_avail, pacing_timeout):
    res["ksmd_cpu_s_start"] = cpu_ticks(ksmd)
    starts = {}
    filled_at = {}
    failed = {}
    stop_starting = threading.Event()
    idx = [0]
    idx_lock = threading.Lock()
    gate_waits = []
    per_vm_touch = (p["fill"] + args.expected_overhead) << 20

    in_call = set()

    def inflight():
        """Guests started (or being started) that have not filled yet."""
        with pids_lock:
            return len(in_call) + sum(1 for nm in starts
                                      if nm not in filled_at and nm not in failed)

    def gate():
        """Bench-side safety: no new start unless MemAvailable minus what
        the guests already started but not yet filled will still touch
        stays above floor + margin. Returns seconds waited, None: give up."""
        tg = time.monotonic()
        while not stop_starting.is_set():
            if smp.unsafe:
                return None
            nb = inflight()
            need = floor + (args.gate_margin << 20) + nb * per_vm_touch
            if mem_available() >= need and (not args.max_booting or nb < args.max_booting):
                return time.monotonic() - tg
            if time.monotonic() - tg > args.gate_timeout:
                return None
            time.sleep(0.5)
        return None

    def worker():
        while not stop_starting.is_set():
            with idx_lock:
                if idx[0] >= n:
                    return
                i = idx[0]
                idx[0] += 1
            nm = names[i]
            g = gate()
            if g is None:
                stop_starting.set()
                failed[nm] = "not started: bench gate (host memory) or abort"
                return
            if g > 0.5:
                gate_waits.append(g)
            with pids_lock:
                in_call.add(nm)
            ts = time.monotonic()
            try:
                _, st, payload = timed_request(h.socket, "POST", f"/v1/vms/{nm}/start", {},
                                               timeout=pacing_timeout + 180)
            except Exception as e:
                st, payload = None, str(e).encode()
            te = time.monotonic()
            try:
                js = json.loads(payload)
            except ValueError:
                js = {}
            rec = {"t_issue": round(ts - t0, 2), "duration": round(te - ts, 3), "status": st}
            with pids_lock:
                in_call.discard(nm)
            if st == 200:
                with pids_lock:
                    pids[nm] = js.get("pid")
                    starts[nm] = rec
                reg.add_qemu(js.get("pid"))
            else:
                rec["error"] = (js.get("error") if isinstance(js, dict) else None) or \
                    payload[:300].decode(errors="replace")
                with pids_lock:
                    starts[nm] = rec
                    failed[nm] = f"start: HTTP {st}: {rec['error']}"
                log(f"  start {nm}: HTTP {st}: {rec['error']}")
                if st in (409, 503, 507):
                    # overcommit / insufficient memory: hsd's admission said no
                    stop_starting.set()
                    return

    log(f"  starting {n} guests, {p['concurrency']} at a time (bench gate: MemAvailable >= "
        f"{args.min_available + args.gate_margin} MiB + {p['fill'] + args.expected_overhead} MiB "
        f"per guest still filling" + (f", at most {args.max_booting} booting" if args.max_booting else "")
        + f"; abort below {args.min_available} MiB)")
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(p["concurrency"])]
    for t in pool:
        t.start()
    deadline = t0 + p["boot_timeout"]
    last_report = 0
    try:
        while True:
            if smp.unsafe:
                stop_starting.set()
                raise Unsafe(smp.unsafe)
            h.check_alive()
            with pids_lock:
                started = [nm for nm in starts if nm in pids]
            for nm in started:
                if nm not in filled_at and nm not in failed:
                    data = b""
                    try:
                        data = consoles[nm].read_bytes()
                    except OSError:
                        pass
                    if f"HS-GUEST-FILLED {p['fill']}".encode() in data:
                        filled_at[nm] = time.monotonic() - t0
                    elif b"HS-GUEST-FILL-FAILED" in data or b"Kernel panic" in data:
                        failed[nm] = "guest: " + data[-300:].decode(errors="replace")
                    elif not pid_alive(pids[nm]):
                        failed[nm] = "QEMU exited"
            workers_done = not any(t.is_alive() for t in pool)
            pending = [nm for nm in started if nm not in filled_at and nm not in failed]
            if workers_done and not pending:
                break
            now_t = time.monotonic()
            if now_t - last_report >= 15:
                last_report = now_t
                s = smp.last() or {}
                log(f"  t={now_t - t0:6.1f}s started {len(started)}/{n}, filled {len(filled_at)}, "
                    f"failed {len(failed)}, MemAvailable {mib(s.get('avail', 0)):.0f} MiB, "
                    f"our merged {mib(s.get('own_merging', 0) * PAGE):.0f} MiB, "
                    f"KSM {s.get('pages_to_scan')}/{s.get('sleep_ms')}ms phase {s.get('phase', '?')}, "
                    f"load {os.getloadavg()[0]:.1f}")
            if now_t > deadline:
                stop_starting.set()
                log(f"  boot timeout ({p['boot_timeout']}s): {len(pending)} guests not filled")
                for nm in pending:
                    failed[nm] = "not filled before the boot timeout"
                break
            time.sleep(0.5)
    finally:
        stop_starting.set()
        for t in pool:
            t.join(pacing_timeout + 200 if not smp.unsafe else 5)
    t_last_filled = max(filled_at.values()) if filled_at else None
    res["started"] = len(pids)
    res["filled"] = len(filled_at)
    res["failed"] = failed
    res["starts"] = starts
    res["t_last_start_answer"] = max((r["t_issue"] + r["duration"] for r in starts.values()),
                                     default=None)
    res["t_first_filled"] = min(filled_at.values()) if filled_at else None
    res["t_last_filled"] = t_last_filled
    res["gate_waits_s"] = gate_waits
    durations = sorted(r["duration"] for r in starts.values() if r["status"] == 200)
    res["start_duration_s"] = {"median": durations[len(durations) // 2] if durations else None,
                               "max": durations[-1] if durations else None}
    res["ksmd_cpu_s_last_filled"] = cpu_ticks(ksmd)
    hsd_log = h.log_text()
    res["hsd_paced_starts"] = len(re.findall(r"waiting for memory", hsd_log))
    res["hsd_pacing_resumed"] = re.findall(r"memory available after [0-9.]+ s", hsd_log)
    log(f"  {len(pids)} started, {len(filled_at)} filled"
        + (f" (last at t={t_last_filled:.1f}s)" if t_last_filled else "")
        + f"; {len(failed)} failed; hsd paced {res['hsd_paced_starts']} start(s); "
        f"bench gate held {len(gate_waits)} start(s); start call median "
        f"{fmt(res['start_duration_s']['median'], 2)} s, max {fmt(res['start_duration_s']['max'], 2)} s")
    if failed:
        for nm, why in list(failed.items())[:5]:
            log(f"    {nm}: {why[:200]}")
    if not filled_at:
        raise BenchError("no guest filled its memory")

    # ---- convergence
    log(f"  waiting for merging to converge (our merged pages flat for {p['quiet']:g} s; "
        f"timeout {p['converge_timeout']}s)")
    t_conv = None
    t_phase = None
    sl = smp.last() or {}
    scans_base = sl.get("full_scans")
    res["full_scans_at_last_fill"] = scans_base
    cdeadline = time.monotonic() + p["converge_timeout"]
    last_report = 0
    while time.monotonic() < cdeadline:
        if smp.unsafe:
            raise Unsafe(smp.unsafe)
        h.check_alive()
        ss = smp.since(t_last_filled - 2 * p["quiet"])
        if t_phase is None:
            for s in ss:
                if s.get("phase") == "converged" and s["t"] >= t_last_filled:
                    t_phase = s["t"]
                    break
        t_conv = converged_at([s for s in ss if s["t"] >= t_last_filled] or ss, p["quiet"],
                              scans_base)
        if t_conv is not None and (t_phase is not None or args.no_wait_phase):
            break
        if t_conv is not None and time.monotonic() - t0 - t_conv > p["quiet"] + 60:
            break  # flat for a minute more: do not wait for hsd's phase forever
        now_t = time.monotonic()
        if now_t - last_report >= 15:
            last_report = now_t
            s = smp.last() or {}
            log(f"  t={now_t - t0:6.1f}s MemAvailable {mib(s.get('avail', 0)):.0f} MiB, our merged "
                f"{mib(s.get('own_merging', 0) * PAGE):.0f} MiB, pages_sharing {s.get('pages_sharing')}, "
                f"KSM {s.get('pages_to_scan')}/{s.get('sleep_ms')}ms phase {s.get('phase', '?')}")
        time.sleep(1)
    t_end_conv = time.monotonic() - t0
    res["t_converged"] = t_conv
    res["t_phase_converged"] = t_phase
    res["converge_s"] = None if t_conv is None else max(0.0, t_conv - t_last_filled)
    res["phase_converge_s"] = None if t_phase is None else t_phase - t_last_filled
    res["ksmd_cpu_s_converged"] = cpu_ticks(ksmd)
    if t_conv is None:
        log(f"  merging did not converge within {p['converge_timeout']}s")
    else:
        log(f"  merging flat from t={t_conv:.1f}s: {res['converge_s']:.1f} s after the last fill"
            + (f"; hsd phase 'converged' at {res['phase_converge_s']:.1f} s" if t_phase else
               "; hsd never reported phase 'converged'"))

    # ---- idle window: steady cost
    qcpu0 = {nm: proc_cpu_s(pid) for nm, pid in pids.items()}
    k0, ti0 = cpu_ticks(ksmd), time.monotonic()
    time.sleep(p["idle"])
    k1, ti1 = cpu_ticks(ksmd), time.monotonic()
    qcpu1 = {nm: proc_cpu_s(pid) for nm, pid in pids.items()}
    idle = ti1 - ti0
    qd = [qcpu1[nm] - qcpu0[nm] for nm in pids if qcpu0.get(nm) is not None and qcpu1.get(nm) is not None]
    res["idle_window_s"] = idle
    res["ksmd_cpu_steady"] = (k1 - k0) / idle if k0 is not None and k1 is not None else None
    res["qemu_cpu_idle_per_vm"] = (sum(qd) / len(qd) / idle) if qd else None
    res["qemu_cpu_idle_total"] = (sum(qd) / idle) if qd else None

    # memory after convergence: median of the samples over the quiet window + idle window
    ss = smp.since((t_conv if t_conv is not None else t_end_conv - p["quiet"]))
    avs = sorted(s["avail"] for s in ss) or [mem_available()]
    avail_after = avs[len(avs) // 2]
    res["avail_after"] = avail_after
    res["used"] = b_avail - avail_after
    res["used_per_vm"] = res["used"] / len(filled_at)
    res["min_avail"] = smp.min_avail
    last = smp.last() or {}
    res["ksm_after"] = ksm_sysfs()
    try:
        _, kj = api(h.socket, "GET", "/v1/ksm", timeout=20)
        res["ksm_api_after"] = {k: kj.get(k) for k in ("phase", "cpu_capped", "saved_bytes",
                                                        "vm_merging_bytes", "ksmd_cpu", "config", "stats")}
    except Exception as e:
        res["ksm_api_after"] = {"error": str(e)}
    try:
        _, hj = api(h.socket, "GET", "/v1/host", timeout=20)
        res["host_api_after"] = hj.get("memory")
    except Exception as e:
        res["host_api_after"] = {"error": str(e)}
    tb = res["ksmd_cpu_s_start"]
    if tb is not None and res["ksmd_cpu_s_last_filled"] is not None and t_last_filled:
        res["ksmd_cpu_boot"] = (res["ksmd_cpu_s_last_filled"] - tb) / t_last_filled
    if res["ksmd_cpu_s_converged"] is not None and res["ksmd_cpu_s_last_filled"] is not None:
        span = t_end_conv - t_last_filled
        res["ksmd_cpu_converge"] = (res["ksmd_cpu_s_converged"] - res["ksmd_cpu_s_last_filled"]) / span \
            if span > 0 else None
    hsd_cpus = [s.get("hsd_ksmd_cpu") for s in smp.samples if s.get("hsd_ksmd_cpu") is not None]
    res["hsd_reported_ksmd_cpu_max"] = max(hsd_cpus) if hsd_cpus else None
    res["phases_seen"] = sorted({s.get("phase") for s in smp.samples if s.get("phase")})
    res["cpu_capped_samples"] = sum(1 for s in smp.samples if s.get("cpu_capped"))

    # knob interference: hsd's phase vs. what sysfs holds
    want = {"boost": (4000, 10), "steady": (1000, 20), "converged": (100, 200)}
    mism = [s for s in smp.samples if s.get("phase") in want and not s.get("cpu_capped")
            and (s.get("pages_to_scan"), s.get("sleep_ms")) != want[s["phase"]]]
    res["knob_mismatch_samples"] = len(mism)
    res["knob_mismatch_examples"] = [{k: s.get(k) for k in ("t", "phase", "pages_to_scan", "sleep_ms")}
                                     for s in mism[:5]]

    # ---- per VM
    log(f"  per-VM figures ({len(pids)} QEMUs)...")
    snaps = []
    for i, (nm, pid) in enumerate(sorted(pids.items())):
        try:
            snaps.append(dict(vm_snapshot(pid, p["memory"], detail=i < args.detail_vms or n <= 12),
                              name=nm))
        except OSError as e:
            snaps.append({"name": nm, "error": str(e)})
    good = [s for s in snaps if "error" not in s]
    res["per_vm"] = snaps
    res["per_vm_mean"] = {k: mean([s.get(k) for s in good]) for k in
                          ("rss", "pss", "pss_anon", "pss_file", "anon", "ksm", "thp", "pte", "threads",
                           "merging_pages", "rmap_items", "unmerged_anon", "kernel_side", "cpu_s")}
    res["breakdown_mean"] = mean_breakdown(good)
    if good:
        try:
            res["largest_mappings_vm0"] = largest_anon_mappings(good[0]["pid"])
        except OSError:
            pass
    hsd_mem = smaps_rollup(h.pid)
    res["hsd_pss"] = hsd_mem.get("Pss")
    sum_pss = sum(s.get("pss") or 0 for s in good)
    sum_kernel = sum(s.get("kernel_side") or 0 for s in good)
    res["own_accounting"] = {"sum_qemu_pss": sum_pss, "sum_kernel_side": sum_kernel,
                             "hsd_pss": res["hsd_pss"],
                             "total": sum_pss + sum_kernel + (res["hsd_pss"] or 0)}
    pm = res["per_vm_mean"]
    log(f"  used {mib(res['used']):.0f} MiB (MemAvailable {mib(b_avail):.0f} -> {mib(avail_after):.0f}), "
        f"{mib(res['used_per_vm']):.1f} MiB/VM; own accounting (sum PSS + page tables + KSM rmap "
        f"+ kstacks + hsd) {mib(res['own_accounting']['total']):.0f} MiB; min MemAvailable "
        f"{mib(smp.min_avail):.0f} MiB")
    log(f"  per VM (mean): RSS {fmt(mib(pm['rss']))} MiB, PSS {fmt(mib(pm['pss']))} MiB, anon "
        f"{fmt(mib(pm['anon']))} MiB, KSM-merged {fmt(mib(pm['ksm']))} MiB, unmerged anon "
        f"{fmt(mib(pm['unmerged_anon']))} MiB, kernel side {fmt(mib(pm['kernel_side']))} MiB")
    log(f"  ksmd CPU: boot {fmt(pct(res.get('ksmd_cpu_boot')))}%, converging "
        f"{fmt(pct(res.get('ksmd_cpu_converge')))}%, steady {fmt(pct(res.get('ksmd_cpu_steady')))}% of a "
        f"core; QEMU idle {fmt(pct(res.get('qemu_cpu_idle_per_vm')), 2)}% of a core per VM")
    return h, names, pids


def pct(x):
    return None if x is None else 100.0 * x


def teardown(h, names, pids, reg):
    """Kill our VMs through the API (bounded), then hsd; the registry kills
    what is left by pid."""
    if h is None:
        return
    if h.alive() and names:
        def kill(nm):
            try:
                api(h.socket, "POST", f"/v1/vms/{nm}/kill", timeout=30, expect=None)
            except Exception:
                pass
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(kill, [nm for nm in names if nm in pids]))
    h.collect_qemu_pids(reg)
    reg.cleanup(log)


# ------------------------------------------------------------------ raw cuts

def raw_variant_argv(name, cut, p, guest, serial_log, nic=True):
    cmdline = " ".join(x for x in (BASE_CMDLINE, f"hs.fill={p['fill']}", cut["cmdline"]) if x)
    argv = raw_argv(name, p["memory"], guest["kernel"], guest["initrd"], cmdline, serial_log)
    if cut["tcg"]:
        i = argv.index("q35,accel=tcg")
        argv[i] = "q35"
        argv[i + 1:i + 1] = ["-accel", f"tcg,{cut['tcg']}"]
    if not cut.get("nic", True) or not nic:
        i = argv.index("-netdev")
        del argv[i:i + 4]
    if cut["mergeany"]:
        argv = ["/usr/bin/python3", "-c", MERGEANY_WRAPPER] + argv
    if cut.get("env"):
        argv = ["/usr/bin/env"] + [f"{k}={v}" for k, v in cut["env"].items()] + argv
    return argv


class KsmKeeper:
    """During the raw QEMU cuts no VM of ours runs under hsd, and other
    processes (other hsds on this host) may rewrite the global KSM knobs:
    an hsd of ours in 'fixed' mode holds them at one rate. hsd writes a knob
    only when its own decision changes, so when sysfs no longer holds our
    values, a PUT with a value toggled by one forces the write."""

    def __init__(self, h, pages, sleep_ms):
        self.h, self.pages, self.sleep_ms = h, pages, sleep_ms
        self.toggle = 0
        self.reasserts = 0
        self.put()

    def put(self):
        api(self.h.socket, "PUT", "/v1/ksm", {"mode": "fixed", "pages_to_scan": self.pages + self.toggle,
                                              "sleep_millisecs": self.sleep_ms}, timeout=10)

    def check(self):
        k = ksm_sysfs()
        if k.get("pages_to_scan") != self.pages + self.toggle or k.get("sleep_millisecs") != self.sleep_ms \
                or k.get("run") != 1:
            self.reasserts += 1
            self.toggle ^= 1
            self.put()


def run_cut(cname, args, p, guest, reg, base, keeper=None):
    cut = CUTS[cname]
    k = p["cut_vms"]
    res = {"cut": cname, "vms": k, **cut}
    d = base / f"cut-{cname.replace('+', '_')}"
    log(f"  cut '{cname}': {k} raw QEMUs (cmdline +'{cut['cmdline']}', tcg {cut['tcg'] or 'default'}, "
        f"merge-any {cut['mergeany']})")
    qs = []
    floor = args.min_available << 20
    t0 = time.monotonic()
    try:
        for i in range(k):
            if mem_available() < floor + (1 << 30):
                raise Unsafe("MemAvailable too low to start another raw QEMU")
            qd = d / f"q{i}"
            qd.mkdir(parents=True, exist_ok=True)
            argv = raw_variant_argv(f"cut{i}", cut, p, guest, str(qd / "console.log"))
            q = RawQemu(argv, qd, reg)
            q.start(timeout=60)
            qs.append((q, qd / "console.log", time.monotonic()))
        filled = {}
        deadline = time.monotonic() + args.cut_boot_timeout
        while len(filled) < k and time.monotonic() < deadline:
            if keeper:
                keeper.check()
            for i, (q, cl, ts) in enumerate(qs):
                if i not in filled and console_has(cl, f"HS-GUEST-FILLED {p['fill']}"):
                    filled[i] = time.monotonic() - ts
                if not pid_alive(q.pid):
                    raise BenchError(f"raw QEMU {i} of cut {cname} exited")
            if mem_available() < floor:
                raise Unsafe("MemAvailable below the floor during a cut")
            time.sleep(0.5)
        res["filled"] = len(filled)
        res["fill_s"] = sorted(filled.values())
        res["cpu_s_at_fill"] = mean([proc_cpu_s(q.pid) for q, _, _ in qs])
        if len(filled) < k:
            raise BenchError(f"cut {cname}: {k - len(filled)} guest(s) did not fill in time")
        # converge: our merged pages flat for `quiet` s
        samples = []
        tq = time.monotonic()
        scans_base = ksm_sysfs().get("full_scans")
        while time.monotonic() - tq < args.cut_converge_timeout:
            if keeper:
                keeper.check()
            own = sum(read_int(f"/proc/{q.pid}/ksm_merging_pages", 0) for q, _, _ in qs)
            samples.append({"t": time.monotonic() - t0, "own_merging": own,
                            "full_scans": ksm_sysfs().get("full_scans")})
            if converged_at(samples, p["quiet"], scans_base) is not None:
                break
            time.sleep(1)
        tc = converged_at(samples, p["quiet"], scans_base)
        res["converged"] = tc is not None
        res["converge_s"] = None if tc is None else tc - (tq - t0)
        res["waited_s"] = time.monotonic() - tq
        if keeper:
            res["ksm_reasserts"] = keeper.reasserts
        snaps = [vm_snapshot(q.pid, p["memory"], detail=True) for q, _, _ in qs]
        res["per_vm_mean"] = {key: mean([s.get(key) for s in snaps]) for key in
                              ("rss", "pss", "anon", "ksm", "unmerged_anon", "kernel_side", "pte",
                               "rmap_items", "cpu_s", "thp")}
        res["breakdown_mean"] = mean_breakdown(snaps)
        res["merge_any"] = snaps[0].get("merge_any")
        pm = res["per_vm_mean"]
        log(f"    filled in {fmt(mean(res['fill_s']))} s (CPU {fmt(res['cpu_s_at_fill'])} s); per VM: "
            f"RSS {fmt(mib(pm['rss']))}, PSS {fmt(mib(pm['pss']))}, unmerged anon "
            f"{fmt(mib(pm['unmerged_anon']))} (guest RAM {fmt(mib(res['breakdown_mean']['guest_ram']['unmerged']))}"
            f", TCG {fmt(mib(res['breakdown_mean']['tcg_code']['unmerged']))}), kernel side "
            f"{fmt(mib(pm['kernel_side']))} MiB; merging flat {fmt(res['converge_s'])} s after the "
            f"last fill" + ("" if res["converged"] else " (NOT converged)"))
    finally:
        for q, _, _ in qs:
            try:
                kill_and_wait(q.pid, reap=True)
            except Exception:
                pass
            reg.raw_children.discard(q.pid)
    return res


# ------------------------------------------------------------------ report

def print_report(out):
    runs = [r for r in out["runs"] if r.get("used") is not None]
    log("\n" + "=" * 100)
    log("DENSITY SUMMARY")
    log("=" * 100)
    if runs:
        cols = [("N (started/filled)", lambda r: f"{r['n']} ({r['started']}/{r['filled']})"),
                ("nominal guest GiB", lambda r: f"{r['filled'] * r['memory_mib'] / 1024:.1f}"),
                ("host used MiB (MemAvailable)", lambda r: f"{mib(r['used']):.0f}"),
                ("  per VM MiB", lambda r: f"{mib(r['used_per_vm']):.1f}"),
                ("own accounting MiB (PSS+kernel)", lambda r: f"{mib(r['own_accounting']['total']):.0f}"),
                ("min MemAvailable MiB", lambda r: f"{mib(r['min_avail']):.0f}"),
                ("first start -> last fill s", lambda r: fmt(r.get('t_last_filled'))),
                ("start call median/max s", lambda r: f"{fmt(r['start_duration_s']['median'], 2)}/"
                                                      f"{fmt(r['start_duration_s']['max'], 2)}"),
                ("starts paced by hsd / bench gate", lambda r: f"{r['hsd_paced_starts']}/{len(r['gate_waits_s'])}"),
                ("converge after last fill s", lambda r: fmt(r.get('converge_s'))),
                ("hsd phase 'converged' after s", lambda r: fmt(r.get('phase_converge_s'))),
                ("KSM saved (hsd) MiB", lambda r: fmt(mib((r.get('ksm_api_after') or {}).get('saved_bytes')), 0)),
                ("our merged MiB", lambda r: fmt(mib(r['per_vm_mean']['merging_pages'] * PAGE * r['started']), 0)),
                ("ksmd CPU % boot/converge/steady", lambda r: f"{fmt(pct(r.get('ksmd_cpu_boot')), 0)}/"
                 f"{fmt(pct(r.get('ksmd_cpu_converge')), 0)}/{fmt(pct(r.get('ksmd_cpu_steady')), 1)}"),
                ("hsd-reported ksmd_cpu max %", lambda r: fmt(pct(r.get('hsd_reported_ksmd_cpu_max')), 0)),
                ("QEMU idle CPU % per VM", lambda r: fmt(pct(r.get('qemu_cpu_idle_per_vm')), 2)),
                ("per VM RSS / PSS MiB", lambda r: f"{fmt(mib(r['per_vm_mean']['rss']))}/"
                                                   f"{fmt(mib(r['per_vm_mean']['pss']))}"),
                ("per VM unmerged anon MiB", lambda r: fmt(mib(r['per_vm_mean']['unmerged_anon']))),
                ("per VM kernel side MiB", lambda r: fmt(mib(r['per_vm_mean']['kernel_side']))),
                ("load avg at end", lambda r: fmt((r.get('loadavg_end') or [None])[0]))]
        w = max(len(c[0]) for c in cols)
        log(f"{'':<{w}}  " + "  ".join(f"{'N=' + str(r['n']):>14}" for r in runs))
        for label, fn in cols:
            vals = []
            for r in runs:
                try:
                    vals.append(fn(r))
                except Exception:
                    vals.append("-")
            log(f"{label:<{w}}  " + "  ".join(f"{v:>14}" for v in vals))
    for r in out["runs"]:
        if r.get("error"):
            a = r.get("at_abort") or {}
            log(f"N={r['n']}: ABORTED ({r['error']}); at t={fmt(a.get('t'))}s: "
                f"{a.get('started', '?')} started, MemAvailable {fmt(mib(a.get('avail')), 0)} MiB, "
                f"our merged {fmt(mib((a.get('own_merging') or 0) * PAGE), 0)} MiB")
    d = out.get("derived") or {}
    if d:
        log("-" * 100)
        if d.get("marginal_mib") is not None:
            ok = d["marginal_mib"] <= TARGETS["marginal_mib"]
            log(f"marginal cost (used({d['n_hi']}) - used({d['n_lo']})) / {d['n_hi'] - d['n_lo']}: "
                f"{d['marginal_mib']:.1f} MiB/VM  (target <= {TARGETS['marginal_mib']:g}) "
                f"{'PASS' if ok else 'FAIL'}; saving {d['memory_mib'] / d['marginal_mib']:.1f}:1 "
                f"on a {d['memory_mib']} MiB VM")
            log(f"  same from own accounting: {fmt(d.get('marginal_own_mib'))} MiB/VM")
            log(f"used({d['n_hi']}) / used({d['n_lo']}) = {d['used_ratio']:.2f} "
                f"(N ratio {d['n_hi'] / d['n_lo']:.1f})")
        for r in runs:
            c = r.get("converge_s")
            if c is not None:
                log(f"N={r['n']}: converged {c:.1f} s after the last fill (target <= "
                    f"{TARGETS['converge_s']:g}) {'PASS' if c <= TARGETS['converge_s'] else 'FAIL'}")
            else:
                log(f"N={r['n']}: merging did not converge within the timeout: FAIL")
    for r in runs:
        b = r.get("breakdown_mean")
        if not b:
            continue
        nd = sum(1 for s in r["per_vm"] if s.get("breakdown"))
        log(f"\nPer-VM breakdown, N={r['n']} (mean of {nd} QEMUs), MiB: mapping size / RSS / PSS / anon / "
            f"KSM-merged / unmerged / THP")
        tot = 0
        for c in CATEGORIES:
            x = b[c]
            if not x["rss"] and not x["size"]:
                continue
            tot += x["unmerged"] + (x["pss"] if c == "file" else 0)
            log(f"  {CATEGORY_LABEL[c]:<38} {mib(x['size']):8.1f} {mib(x['rss']):7.1f} {mib(x['pss']):7.1f} "
                f"{mib(x['anon']):7.1f} {mib(x['ksm']):7.1f} {mib(x['unmerged']):7.1f} {mib(x['thp']):6.1f}")
        pm = r["per_vm_mean"]
        log(f"  {'host kernel: page tables':<38} {mib(pm['pte']):7.1f}")
        log(f"  {'host kernel: KSM rmap items (64 B)':<38} {mib((pm['rmap_items'] or 0) * RMAP_ITEM_BYTES):7.1f}")
        log(f"  {'host kernel: thread stacks':<38} {mib((pm['threads'] or 0) * KSTACK_BYTES):7.1f}")
        tot += pm["kernel_side"] or 0
        log(f"  => unmergeable per VM (unmerged anon + file PSS + kernel side): {mib(tot):.1f} MiB")
    cuts = out.get("cuts") or []
    if cuts:
        ref = next((c for c in cuts if c["cut"] == "default" and c.get("per_vm_mean")), None)
        log(f"\nCuts (raw QEMU, {cuts[0]['vms']} guests each, same memory/fill; per VM after merging "
            f"converged; MiB):")
        log(f"  {'variant':<36} {'RSS':>7} {'PSS':>7} {'unmerged':>9} {'guestRAM':>9} {'TCG':>7} "
            f"{'heap+':>7} {'kernel':>7} {'saves':>7} {'fill s':>7} {'CPU s':>6}")
        for c in cuts:
            pm = c.get("per_vm_mean")
            if not pm:
                log(f"  {c['cut']:<36} failed: {c.get('error', '?')}")
                continue
            b = c["breakdown_mean"]
            heap = sum(b[k]["unmerged"] for k in ("heap", "malloc_arenas", "anon_other", "other_ram",
                                                   "file_anon", "stack"))
            cost = (pm["unmerged_anon"] or 0) + (pm["kernel_side"] or 0)
            saves = None
            if ref:
                saves = (ref["per_vm_mean"]["unmerged_anon"] + ref["per_vm_mean"]["kernel_side"]) - cost
            log(f"  {c['cut']:<36} {mib(pm['rss']):7.1f} {mib(pm['pss']):7.1f} {mib(pm['unmerged_anon']):9.1f} "
                f"{mib(b['guest_ram']['unmerged']):9.1f} {mib(b['tcg_code']['unmerged']):7.1f} {mib(heap):7.1f} "
                f"{mib(pm['kernel_side']):7.1f} {fmt(mib(saves)):>7} {fmt(mean(c.get('fill_s'))):>7} "
                f"{fmt(pm['cpu_s']):>6}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="counts 4,12, 256 MiB guests filling 128 MiB")
    ap.add_argument("--counts", help="comma-separated guest counts (default 10,100)")
    ap.add_argument("--memory", type=int, help="MiB per guest (default 512)")
    ap.add_argument("--fill", type=int, help="MiB each guest fills with the common pattern (default 256)")
    ap.add_argument("--concurrency", type=int, help="starts in flight at once (default 3)")
    ap.add_argument("--cmdline", help=f"guest kernel command line base (default '{BASE_CMDLINE}')")
    ap.add_argument("--cmdline-extra", default="", help="appended to the guest command line, e.g. 'nokaslr'")
    ap.add_argument("--nic", choices=("user", "none"), default="user", help="guest NIC (default user)")
    ap.add_argument("--overcommit", type=float, help="hsd --overcommit RATIO")
    ap.add_argument("--pacing-timeout", type=float, help="hsd --pacing-timeout S")
    ap.add_argument("--ksm-mode", choices=("auto", "fixed", "off"), help="PUT /v1/ksm mode")
    ap.add_argument("--ksm-pages", type=int, help="PUT /v1/ksm pages_to_scan (fixed mode)")
    ap.add_argument("--ksm-sleep", type=int, help="PUT /v1/ksm sleep_millisecs (fixed mode)")
    ap.add_argument("--ksm-max-cpu", type=float, help="PUT /v1/ksm max_cpu (fraction of a core)")
    ap.add_argument("--min-available", type=int, default=2048,
                    help="MiB: abort the run if MemAvailable falls below (default 2048)")
    ap.add_argument("--gate-margin", type=int, default=512,
                    help="MiB above --min-available the bench gate keeps free (default 512)")
    ap.add_argument("--expected-overhead", type=int, default=128,
                    help="MiB a guest touches beyond its fill before KSM merges (gate; default 128)")
    ap.add_argument("--gate-timeout", type=float, default=300, help="s a start may wait at the gate")
    ap.add_argument("--max-booting", type=int, default=0,
                    help="bench-side: no new start while this many guests are started but not yet "
                         "filled (0: no limit, the default: only hsd and the memory gate pace)")
    ap.add_argument("--boot-timeout", type=float, help="s from the first start until every guest filled")
    ap.add_argument("--converge-timeout", type=float, help="s to wait for merging to converge")
    ap.add_argument("--quiet", type=float, help="s without merge growth that count as converged (default 10)")
    ap.add_argument("--no-wait-phase", action="store_true",
                    help="stop waiting once merging is flat, without waiting for hsd's 'converged' phase")
    ap.add_argument("--idle", type=float, help="s of idle window for steady CPU (default 20)")
    ap.add_argument("--detail-vms", type=int, default=10, help="VMs whose smaps are broken down (default 10)")
    ap.add_argument("--cuts", help="comma-separated raw QEMU variants (see CUTS); 'none' to skip; "
                                   f"known: {','.join(CUTS)}")
    ap.add_argument("--cuts-only", action="store_true", help="only the raw QEMU cuts")
    ap.add_argument("--cut-vms", type=int, help="raw QEMUs per cut (default 4)")
    ap.add_argument("--cut-boot-timeout", type=float, default=240)
    ap.add_argument("--cut-ksm-pages", type=int, default=4000, help="KSM pages_to_scan during cuts")
    ap.add_argument("--cut-ksm-sleep", type=int, default=10, help="KSM sleep_millisecs during cuts")
    ap.add_argument("--cut-converge-timeout", type=float, default=150)
    ap.add_argument("--budget", type=float, help="s for the whole run (SIGALRM)")
    ap.add_argument("--base", help="work dir (default /tmp/hsdd-PID; keep it short)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--output", default=str(RESULTS / "density.json"), help="JSON results file")
    args = ap.parse_args()

    p = dict(QUICK if args.quick else FULL)
    if args.counts:
        p["counts"] = [int(x) for x in args.counts.split(",") if x.strip()]
    for k in ("memory", "fill", "concurrency", "boot_timeout", "converge_timeout", "quiet", "idle",
              "budget", "cut_vms", "cuts"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    if args.cuts_only:
        p["counts"] = []
    cuts = [] if p["cuts"] in ("none", "") else [c.strip() for c in p["cuts"].split(",")]
    for c in cuts:
        if c not in CUTS:
            sys.exit(f"density.py: unknown cut '{c}'; known: {', '.join(CUTS)}")
    if p["fill"] + 64 > p["memory"]:
        sys.exit("density.py: --fill must leave at least 64 MiB of --memory to the guest")
    need_files("density.py", HSD, HSCTL, QEMU)

    base = new_workdir("density.py", args.base, "hsdd")
    reg = Registry()
    out = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "mode": "quick" if args.quick else "full", "params": p,
           "args": {k: v for k, v in vars(args).items()}, "targets": TARGETS,
           "host": host_info(mem_total=meminfo().get("MemTotal")),
           "runs": [], "cuts": []}
    error = None
    t_start = time.monotonic()

    catch_signals(p["budget"])
    log(f"hsd density benchmark ({out['mode']}): counts {p['counts']}, {p['memory']} MiB guests "
        f"filling {p['fill']} MiB, cuts {cuts or 'none'}; work dir {base}; budget {p['budget']:.0f}s")
    try:
        base.mkdir(parents=True)
        guest = build_guest()
        log(f"guest: {guest['kernel']} + {guest['initrd']}")
        out["host"]["qemu"] = version_line(QEMU)
        for n in p["counts"]:
            start_avail = mem_available()
            nh = len(reg.hsds)
            try:
                run_count(n, args, p, guest, reg, base, out["runs"])
                out["runs"][-1]["loadavg_end"] = os.getloadavg()
            except BenchError as e:
                # an aborted count (host safety, boot failure): recorded,
                # cleaned up below; the next phases still run
                log(f"  N={n} ABORTED: {type(e).__name__}: {e}")
                if out["runs"] and out["runs"][-1]["n"] == n:
                    out["runs"][-1]["error"] = f"{type(e).__name__}: {e}"
                    rr = out["runs"][-1]
                    ss = [x for x in rr.get("samples", []) if "avail" in x]
                    if ss:
                        rr["at_abort"] = {"t": ss[-1]["t"], "avail": ss[-1]["avail"],
                                          "own_merging": ss[-1]["own_merging"],
                                          "started": len(rr.get("pids") or {})}
            finally:
                r = out["runs"][-1] if out["runs"] and out["runs"][-1]["n"] == n else {}
                hh = reg.hsds[-1] if len(reg.hsds) > nh else None
                pids = r.get("pids") or {}
                if hh is not None:
                    r["hsd_log_tail"] = hh.log_text()[-4000:]
                    teardown(hh, sorted(pids), pids, reg)
                else:
                    reg.cleanup(log)
                if not wait_mem_recovered(start_avail - (256 << 20), 90):
                    log(f"  note: MemAvailable did not come back to within 256 MiB of "
                        f"{mib(start_avail):.0f} MiB in 90 s")
        runs = [r for r in out["runs"] if r.get("used") is not None]
        if len(runs) >= 2:
            lo, hi = runs[0], runs[-1]
            nlo, nhi = lo["filled"], hi["filled"]
            if nhi > nlo:
                out["derived"] = {
                    "n_lo": nlo, "n_hi": nhi, "memory_mib": p["memory"],
                    "marginal_mib": mib(hi["used"] - lo["used"]) / (nhi - nlo),
                    "marginal_own_mib": mib(hi["own_accounting"]["total"] - lo["own_accounting"]["total"])
                    / (nhi - nlo),
                    "used_ratio": hi["used"] / lo["used"] if lo["used"] else None,
                }
        if cuts:
            log(f"\n== cuts: raw QEMU variants, {p['cut_vms']} guests each; KSM held at "
                f"{args.cut_ksm_pages} pages / {args.cut_ksm_sleep} ms by an hsd of ours in fixed mode")
            ch = Hsd(base / "cuts", reg, hsd_extra_args(guest))
            ch.start()
            keeper = KsmKeeper(ch, args.cut_ksm_pages, args.cut_ksm_sleep)
            for c in cuts:
                before = mem_available()
                try:
                    out["cuts"].append(run_cut(c, args, p, guest, reg, base, keeper))
                except BenchError as e:
                    log(f"    cut {c} failed: {e}")
                    out["cuts"].append({"cut": c, "vms": p["cut_vms"], "error": str(e)})
                    if isinstance(e, Unsafe):
                        raise
                wait_mem_recovered(before - (128 << 20), 30)
    except RUN_ERRORS as e:
        error = run_error(e)
    finally:
        with uninterrupted():
            reg.cleanup(log)
            remove_workdir(base, args.keep, log)
    elapsed = time.monotonic() - t_start
    out["elapsed_s"] = elapsed
    out["error"] = error
    if error:
        log(f"\nERROR: {error}")
    print_report(out)
    log(f"\ntotal run time: {elapsed:.1f}s")
    write_results(args.output, out)
    if error:
        return 2
    d = out.get("derived") or {}
    miss = (d.get("marginal_mib") is not None and d["marginal_mib"] > TARGETS["marginal_mib"]) or any(
        r.get("converge_s") is None or r["converge_s"] > TARGETS["converge_s"]
        for r in out["runs"] if r.get("used") is not None)
    return 1 if miss else 0


if __name__ == "__main__":
    sys.exit(main())
