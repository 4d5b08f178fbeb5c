#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Warm templates: how fast a clone of a warm template runs, and what it
costs in host memory, against raw QEMU doing the same in the same run.

1. start latency: POST /v1/vms/NAME/start of a fresh clone until hsd answers
   (the guest runs), against the fastest raw QEMU can do the same: the
   same RAM (a sealed memfd copy of the template's RAM, share=off),
   `-incoming defer` without -S, and a minimal QMP client that sends
   qmp_capabilities, x-ignore-shared and events on, and `migrate-incoming
   exec:cat STATE` in one write as soon as the socket accepts (QEMU 7.2
   cannot set x-ignore-shared on its command line, and the saved stream
   needs it), then `cont` at the MIGRATION completed event, timed from exec
   until the RESUME event. (The cont is needed: the state was saved with the
   vCPUs stopped, so QEMU loads it into "paused" and never runs the guest
   by itself.) Then until the guest's serial shell answers a command.
2. memory: host MemAvailable before any clone and after each count of
   --mem-vms warm clones (e.g. 10,100: clones added up to each count, the
   host settled and page cache dropped before each reading): used memory at
   each count and the marginal MiB per clone between counts, (used(100) -
   used(10)) / 90 (the first clone also loads the template's RAM, which
   every clone shares: that is not a per-clone cost). Against --cold-vms
   cold boots of the same guest with KSM running (hsd paces their starts;
   for 100 cold boots with a safety gate, see density.py). Also the Pss of
   each, and a breakdown of one clone's QEMU from its smaps (the template
   mapping's shared and private pages, the TCG translation buffer, the
   rest).

Targets (docs/architecture.md, "Warm templates"): start <= 50 ms and within
1.2x of raw; <= 16 MiB per warm clone. Under TCG on a busy 2-core host the
absolute figures are well above what KVM gives; the ratios are the point.

Python 3 standard library only; run as root (like hsd)."""
import argparse
import datetime
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchlib import (HSD, QEMU, RUN_ERRORS, BenchError, Hsd, LineReader, Registry, api,
                      build_guest, catch_signals, console_has, hsd_extra_args, log, new_workdir,
                      remove_workdir, run_error, summarize, uninterrupted, wait_for,
                      write_results)

RESULTS = Path(__file__).resolve().parent / "results"
MEMORY = 128
TARGETS = {"start_ms": 50, "start_ratio": 1.2, "clone_mib": 16}
# hsd's TCG translation buffer (its default), given to raw QEMU too.
TB_SIZE = 12
# A cold boot that will never get there (seen: a guest kernel's IO-APIC
# timer check panicking at a load of ~27 on 2 cores, hence no_timer_check).
BOOT_FAILED = ("HS-GUEST-FILL-FAILED", "Kernel panic")


def sealed_copy(path):
    src = os.open(path, os.O_RDONLY)
    size = os.fstat(src).st_size
    fd = os.memfd_create("bench-warm", os.MFD_ALLOW_SEALING)
    off = 0
    while off < size:
        off += os.sendfile(fd, src, off, size - off)
    os.close(src)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK |
                fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    return fd


def shell_answers(sock_path, deadline, tag):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(max(0.1, deadline - time.monotonic()))
    s.connect(sock_path)
    s.sendall(f"echo HSQ-{tag}-don$(echo e)\n".encode())
    buf = b""
    s.settimeout(0.05)
    while f"HSQ-{tag}-done".encode() not in buf:
        if time.monotonic() > deadline:
            raise BenchError(f"raw QEMU: the shell did not answer; serial said: {buf[-300:]!r}")
        try:
            buf += s.recv(4096)
        except socket.timeout:
            pass
    s.close()


def wait_running(sock_path, state_path, deadline, errlog):
    """A minimal QMP client: once connected, one write of the three
    commands QEMU 7.2 needs (it has no command-line switch for
    x-ignore-shared, which the saved stream needs; "events" for the end of
    the load), no reply waited for in between. The saved state records the
    source's run state, and a warm capture stops the vCPUs first: QEMU loads
    it into "paused" and does not run the guest by itself (no RESUME ever
    comes; autostart applies only to a state saved running). So, like hsd
    (-S, then cont), `cont` once the MIGRATION event says completed; done
    at its RESUME event."""
    step = "connect to QMP"
    seen = []
    s = None
    try:
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock_path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise BenchError("no QMP socket")
                time.sleep(0.0005)
        r = LineReader(s)
        step = "QMP greeting"
        r.line(deadline)
        caps = [{"capability": "x-ignore-shared", "state": True},
                {"capability": "events", "state": True}]
        s.sendall(b'{"execute":"qmp_capabilities"}\n' +
                  json.dumps({"execute": "migrate-set-capabilities",
                              "arguments": {"capabilities": caps}}).encode() + b"\n" +
                  json.dumps({"execute": "migrate-incoming",
                              "arguments": {"uri": f"exec:cat {state_path}"}}).encode() + b"\n")
        def until(event, status=None):
            while True:
                m = r.line(deadline)
                seen.append(m)
                if "error" in m:
                    raise BenchError(f"QMP error: {m['error']}")
                if m.get("event") == "MIGRATION" and m["data"]["status"] == "failed":
                    raise BenchError("the load failed")
                if m.get("event") == event and (status is None or m["data"]["status"] == status):
                    return
        step = "the state to load (MIGRATION completed)"
        until("MIGRATION", "completed")
        step = "RESUME after cont"
        s.sendall(b'{"execute":"cont"}\n')
        until("RESUME")
    except (BenchError, OSError, ValueError) as e:
        tail = ""
        try:
            tail = Path(errlog).read_text(errors="replace")[-600:].strip()
        except OSError:
            pass
        raise BenchError(f"raw QEMU, waiting for {step}: {type(e).__name__}: {e}; "
                         f"QMP said: {seen}" + (f"; QEMU stderr: {tail}" if tail else ""))
    finally:
        if s is not None:
            s.close()


def raw_clone(reg, base, guest, ram_fd, state_path, i):
    """One raw warm start: (exec -> running, exec -> shell answers) in s."""
    q, ser = str(base / f"raw{i}.qmp"), str(base / f"raw{i}.ser")
    argv = [QEMU, "-nodefaults", "-no-user-config", "-incoming", "defer",
            "-no-shutdown", "-machine", "q35,memory-backend=hs-ram", "-accel", f"tcg,tb-size={TB_SIZE}",
            "-m", f"{MEMORY}M", "-object",
            f"memory-backend-file,id=hs-ram,size={MEMORY}M,share=off,mem-path=/proc/self/fd/{ram_fd}",
            "-smp", "1", "-display", "none",
            "-chardev", f"socket,id=hs-qmp,path={q},server=on,wait=off",
            "-mon", "chardev=hs-qmp,mode=control",
            "-chardev", f"socket,id=hs-serial0,path={ser},server=on,wait=off",
            "-serial", "chardev:hs-serial0",
            "-kernel", guest["kernel"], "-initrd", guest["initrd"], "-append", "console=ttyS0",
            "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
            "-netdev", "user,id=hs-net0",
            "-device", f"virtio-net-pci,netdev=hs-net0,id=net0,mac=52:54:00:aa:00:{i:02x}",
            "-device", "vmgenid,id=vmgenid0,guid=11111111-2222-4333-8444-5555555555%02x" % i,
            "-fw_cfg", "name=opt/org.hypervisor-scale/clone,string=" +
            f"name=raw{i} clone=1".ljust(510) + "\n"]
    t0 = time.monotonic()
    with open(base / f"raw{i}.log", "wb") as errf:
        p = subprocess.Popen(argv, pass_fds=[ram_fd], stdin=subprocess.DEVNULL,
                             stdout=errf, stderr=errf)
    reg.raw_children.add(p.pid)
    deadline = t0 + 60
    wait_running(q, state_path, deadline, base / f"raw{i}.log")
    t_run = time.monotonic() - t0
    shell_answers(ser, deadline, f"raw{i}")
    t_shell = time.monotonic() - t0
    return t_run, t_shell, p


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def settle(seconds):
    """Waits, then the MemAvailable of the host (page cache dropped first:
    the template files' cache is not what the VMs cost)."""
    time.sleep(seconds)
    subprocess.run(["sync"], timeout=60)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")
    return mem_available_kib()


def smaps_breakdown(pid):
    """kB of one QEMU's RSS by kind: its template mapping (shared, and
    private: the pages the guest wrote), the TCG translation buffer (the
    largest anonymous mapping that is no RAM), and the rest."""
    out = {"template_shared": 0, "template_private": 0, "tcg_buffer": 0, "other": 0,
           "rss": 0}
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = {"name": parts[5] if len(parts) > 5 else "", "size": (hi - lo) >> 10,
                       "perms": parts[1]}
                maps.append(cur)
            elif parts[0] in ("Rss:", "Anonymous:"):
                cur[parts[0][:-1]] = int(parts[1])
    tcg = max((m for m in maps if not m["name"] and "x" in m["perms"]),
              key=lambda m: m.get("Rss", 0), default=None)
    for m in maps:
        rss = m.get("Rss", 0)
        out["rss"] += rss
        if "hs-warm-" in m["name"]:
            out["template_private"] += m.get("Anonymous", 0)
            out["template_shared"] += rss - m.get("Anonymous", 0)
        elif m is tcg:
            out["tcg_buffer"] += rss
        else:
            out["other"] += rss
    return out


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="clones (and raw starts) measured")
    ap.add_argument("--mem-vms", default="10",
                    help="warm clone counts for memory, comma-separated (e.g. 10,100: the "
                    "marginal cost between them)")
    ap.add_argument("--cold-vms", type=int, default=10, help="cold boots for memory (0: none)")
    ap.add_argument("--memory", type=int, default=512, help="the guest's RAM, MiB")
    ap.add_argument("--fill", type=int, default=256,
                    help="MiB the guest fills (identical pages in every guest) before capture")
    ap.add_argument("--settle", type=float, default=20, help="seconds before each reading")
    ap.add_argument("--budget", type=float, default=1800,
                    help="s for the whole run (SIGALRM; the clean-up and results still follow)")
    ap.add_argument("--base", help="work dir (default /tmp/hsw-PID)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--output")
    args = ap.parse_args()
    global MEMORY
    MEMORY = args.memory
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outp = Path(args.output) if args.output else RESULTS / f"warm-{stamp}.json"
    base = new_workdir("warm.py", args.base, "hsw")
    memdir = Path(f"/dev/shm/hsw-{os.getpid()}")
    reg = Registry()
    res = {}
    error = None
    at = ["setup"]  # the step under way, named in the error if it fails

    def step(what):
        at[0] = what
    catch_signals(args.budget)
    try:
        base.mkdir(parents=True)
        step("building the test guest")
        guest = build_guest()
        h = Hsd(base / "d", reg, hsd_extra_args(guest) + ["--memory-dir", str(memdir),
                                                           "--tcg-tb-size", str(TB_SIZE)])
        step("starting hsd")
        h.start()
        sock = h.socket
        spec = {"name": "src", "memory_mib": MEMORY, "accel": "tcg", "kernel": guest["kernel"],
                "initrd": guest["initrd"], "memory_file": True,
                "cmdline": "console=ttyS0 no_timer_check" + (f" hs.fill={args.fill}" if args.fill else ""),
                "nics": [{"type": "user"}]}
        step("defining and starting the source VM")
        api(sock, "POST", "/v1/vms", spec)
        api(sock, "POST", "/v1/vms/src/start", timeout=120)
        step("the source guest to boot (HS-IDENTITY on its console)")
        clog = h.state_dir / "vms" / "src" / "console.log"
        wait_for(lambda: console_has(clog, "HS-IDENTITY"), 300, "the source guest to boot")
        if args.fill and not console_has(clog, f"HS-GUEST-FILLED {args.fill}"):
            raise BenchError(f"the source guest did not fill {args.fill} MiB (--fill too big "
                             f"for --memory {MEMORY}?)")
        time.sleep(2)
        step("capturing the warm template")
        _, cap = api(sock, "POST", "/v1/templates",
                     {"name": "tpl", "vm": "src", "warm": True, "then": "stop"}, timeout=300)
        res["capture"] = cap
        log(f"capture: state {cap['state_size'] / 1024:.0f} KiB, paused {cap['paused_ms']:.0f} ms")

        hsd_run, hsd_shell, raw_run, raw_shell = [], [], [], []
        steps = []  # hsd's own account of each start (start_timing_ms)
        tdir = h.state_dir / "templates" / "tpl"
        ram_fd = sealed_copy(tdir / "ram")
        for i in range(args.reps):
            h.check_alive()
            name = f"c{i}"
            step(f"rep {i}: hsd clone {name}: define and start")
            api(sock, "POST", "/v1/vms", {"name": name, "warm_template": "tpl"})
            t0 = time.monotonic()
            _, started = api(sock, "POST", f"/v1/vms/{name}/start", timeout=120)
            hsd_run.append(time.monotonic() - t0)
            steps.append(started.get("start_timing_ms") or {})
            # The shell: through hsd's console socket, as a user would.
            step(f"rep {i}: hsd clone {name}: its shell to answer (hsctl console)")
            p = subprocess.run([str(HSD.parent.parent / "cli" / "hsctl"), "--socket", sock,
                                "console", name, "--no-replay", "--wait-for", f"HSQ-{i}-done",
                                "--timeout", "60"], input=f"echo HSQ-{i}-don$(echo e)\n",
                               capture_output=True, text=True, timeout=70)
            if p.returncode:
                raise BenchError(f"{name}: the shell did not answer: {p.stderr}")
            hsd_shell.append(time.monotonic() - t0)
            step(f"rep {i}: raw QEMU clone")
            tr, ts, proc = raw_clone(reg, base, guest, ram_fd, tdir / "state", i)
            raw_run.append(tr)
            raw_shell.append(ts)
            proc.kill()
            proc.wait(10)
            api(sock, "POST", f"/v1/vms/{name}/kill")
            log(f"rep {i}: hsd running {hsd_run[-1] * 1e3:.0f} ms, shell {hsd_shell[-1] * 1e3:.0f} "
                f"ms; raw running {tr * 1e3:.0f} ms, shell {ts * 1e3:.0f} ms; hsd's steps "
                + ", ".join(f"{k} {v:.1f}" for k, v in steps[-1].items()))
        res["start"] = {"hsd_running": summarize(hsd_run), "raw_running": summarize(raw_run),
                        "hsd_shell": summarize(hsd_shell), "raw_shell": summarize(raw_shell),
                        "hsd_steps_ms": {k: summarize([st[k] / 1e3 for st in steps if k in st])
                                         for k in ("spawn", "qemu_init", "load", "resume",
                                                   "total")}}

        # Memory: warm clones up to each count, then cold boots (KSM as
        # hsd tunes it), each against the host's MemAvailable before them.
        counts = sorted({int(x) for x in args.mem_vms.split(",") if x.strip()})
        step("memory: settling before the warm clones")
        before = settle(5)
        pids, points = [], []
        for n in counts:
            for i in range(len(pids), n):
                h.check_alive()
                step(f"memory: warm clone m{i}: define and start")
                api(sock, "POST", "/v1/vms", {"name": f"m{i}", "warm_template": "tpl"})
                _, vm = api(sock, "POST", f"/v1/vms/m{i}/start", timeout=120)
                pids.append(vm["pid"])
            step(f"memory: settling after {n} warm clones")
            after = settle(args.settle)
            sample = pids[:: max(1, len(pids) // 10)][:10]
            pt = {"clones": n, "used_kib": before - after,
                  "pss_kib": [pss_kib(p) for p in sample],
                  "clone_smaps_kib": smaps_breakdown(pids[-1])}
            if points:
                pt["marginal_kib"] = (pt["used_kib"] - points[-1]["used_kib"]) / (n - points[-1]["clones"])
            points.append(pt)
            log(f"{n} warm clones: MemAvailable {before // 1024} -> {after // 1024} MiB: used "
                f"{(before - after) / 1024:.0f} MiB ({(before - after) / 1024 / n:.1f} per clone)"
                + (f"; marginal {pt['marginal_kib'] / 1024:.1f} MiB per clone since "
                   f"{points[-2]['clones']}" if "marginal_kib" in pt else "")
                + f"; clone m{len(pids) - 1}: {pt['clone_smaps_kib']}")
        _, ksm_warm = api(sock, "GET", "/v1/ksm")
        for i in range(len(pids)):
            api(sock, "POST", f"/v1/vms/m{i}/kill")
        n = args.cold_vms
        before_cold = after_cold = 0
        pids = []
        ksm_cold = None
        if n:
            step("memory: settling before the cold boots")
            before_cold = settle(5)
            for i in range(n):
                h.check_alive()
                step(f"memory: cold VM b{i}: define and start")
                api(sock, "POST", "/v1/vms", dict(spec, name=f"b{i}", memory_file=False))
                _, vm = api(sock, "POST", f"/v1/vms/b{i}/start", timeout=300)
                pids.append(vm["pid"])
            # A cold VM has no clone record in fw_cfg, so its guest never
            # prints HS-IDENTITY: booted is its fill done (or HS-GUEST-READY).
            booted = f"HS-GUEST-FILLED {args.fill}" if args.fill else "HS-GUEST-READY"
            boot_deadline = time.monotonic() + 900
            for i in range(n):
                cl = h.state_dir / "vms" / f"b{i}" / "console.log"
                step(f"memory: cold VM b{i} to boot ({booted} on its console)")
                wait_for(lambda: any(console_has(cl, x) for x in (booted, *BOOT_FAILED)),
                         max(1, boot_deadline - time.monotonic()), f"b{i} to boot")
                for x in BOOT_FAILED:
                    if console_has(cl, x):
                        raise BenchError(f"b{i}: its console says {x!r}")
            step("memory: settling after the cold boots")
            after_cold = settle(args.settle)
            _, ksm_cold = api(sock, "GET", "/v1/ksm")
            log(f"{n} cold boots: MemAvailable {before_cold // 1024} -> {after_cold // 1024} MiB: "
                f"used {(before_cold - after_cold) / 1024:.0f} MiB, "
                f"{(before_cold - after_cold) / 1024 / n:.1f} MiB per VM")
        res["memory"] = {"points": points, "memory_mib": MEMORY, "fill_mib": args.fill,
                         "cold_vms": n, "cold_used_kib": before_cold - after_cold,
                         "cold_pss_kib": [pss_kib(p) for p in pids], "tcg_tb_size_mib": TB_SIZE,
                         "ksm_after_warm": ksm_warm, "ksm_after_cold": ksm_cold}
    except RUN_ERRORS as e:
        traceback.print_exc()
        error = f"{run_error(e)} (step: {at[0]})"
    finally:
        with uninterrupted():
            reg.cleanup(log)
            remove_workdir(base, args.keep, log)
            subprocess.run(["rm", "-rf", str(memdir)], timeout=60)
    rows = []
    st = res.get("start")
    if st:
        hm, rm = st["hsd_running"]["median_ms"], st["raw_running"]["median_ms"]
        rows.append(["warm clone start -> running (median)", f"{hm:.0f} ms", f"raw {rm:.0f} ms",
                     f"{hm / rm:.2f}x"])
        hs, rs = st["hsd_shell"]["median_ms"], st["raw_shell"]["median_ms"]
        rows.append(["start -> shell answers (median)", f"{hs:.0f} ms", f"raw {rs:.0f} ms",
                     f"{hs / rs:.2f}x"])
    m = res.get("memory")
    if m:
        cold_vm = m["cold_used_kib"] / 1024 / m["cold_vms"] if m["cold_vms"] else None
        for pt in m["points"]:
            w = sum(pt["pss_kib"]) / len(pt["pss_kib"]) / 1024
            rows.append([f"{pt['clones']} warm clones of {m['memory_mib']} MiB "
                         f"({m['fill_mib']} MiB filled): host memory used",
                         f"{pt['used_kib'] / 1024:.0f} MiB",
                         f"{pt['used_kib'] / 1024 / pt['clones']:.1f} MiB per clone, Pss {w:.1f}",
                         f"marginal {pt['marginal_kib'] / 1024:.1f} MiB per clone (target "
                         f"{TARGETS['clone_mib']})" if "marginal_kib" in pt else ""])
            b = pt["clone_smaps_kib"]
            rows.append(["  the last clone's RSS (smaps)", f"{b['rss'] / 1024:.1f} MiB",
                         f"template shared {b['template_shared'] / 1024:.1f}, private "
                         f"{b['template_private'] / 1024:.1f}, TCG buffer "
                         f"{b['tcg_buffer'] / 1024:.1f}, other (QEMU heap, libs) "
                         f"{b['other'] / 1024:.1f} MiB", ""])
        if cold_vm is not None:
            c = sum(m["cold_pss_kib"]) / len(m["cold_pss_kib"]) / 1024
            rows.append([f"{m['cold_vms']} cold boots with KSM: host memory used",
                         f"{m['cold_used_kib'] / 1024:.0f} MiB", f"{cold_vm:.1f} MiB per VM, "
                         f"Pss {c:.1f}", ""])
    for r in rows:
        log("  " + " | ".join(r))
    write_results(outp, {"when": stamp, "targets": TARGETS, "error": error, "summary": rows,
                         "results": res})
    if error:
        log(f"error: {error}")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
