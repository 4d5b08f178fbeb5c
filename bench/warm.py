#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Warm templates: how fast a clone of a warm template runs, and what it
costs in host memory, against raw QEMU doing the same in the same run.

1. start latency: POST /v1/vms/NAME/start of a fresh clone until hsd answers
   (the guest runs), against a raw QEMU given the same RAM (a sealed memfd
   copy of the template's RAM, share=off), -incoming defer, x-ignore-shared
   and migrate-incoming from the template's state file, until `cont`
   answers. Then until the guest's serial shell answers a command.
2. memory: the Pss (proportional set size: shared pages split among their
   users) of N warm clones against N cold-booted guests, per VM.

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
from pathlib import Path

from benchlib import (HSD, QEMU, RUN_ERRORS, BenchError, Hsd, LineReader, Registry, api,
                      build_guest, console_has, hsd_extra_args, log, new_workdir,
                      remove_workdir, run_error, summarize, uninterrupted, wait_for,
                      write_results)

RESULTS = Path(__file__).resolve().parent / "results"
MEMORY = 128
TARGETS = {"start_ms": 50, "start_ratio": 1.2, "clone_mib": 16}


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


def qmp(sock_path, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise BenchError("raw QEMU: no QMP socket")
            time.sleep(0.001)
    r = LineReader(s)
    r.line(deadline)  # greeting

    def cmd(name, fds=(), **args):
        msg = json.dumps({"execute": name, "arguments": args} if args else {"execute": name})
        if fds:
            socket.send_fds(s, [msg.encode() + b"\n"], list(fds))
        else:
            s.sendall(msg.encode() + b"\n")
        rep = r.reply(deadline)
        if "error" in rep:
            raise BenchError(f"raw QEMU: {name}: {rep['error']}")
        return rep["return"]
    cmd("qmp_capabilities")
    return s, cmd


def shell_answers(sock_path, deadline, tag):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"echo HSQ-{tag}-don$(echo e)\n".encode())
    buf = b""
    s.settimeout(0.05)
    while f"HSQ-{tag}-done".encode() not in buf:
        if time.monotonic() > deadline:
            raise BenchError("raw QEMU: the shell did not answer")
        try:
            buf += s.recv(4096)
        except socket.timeout:
            pass
    s.close()


def raw_clone(reg, base, guest, ram_fd, state_path, i):
    """One raw warm start: (exec -> running, exec -> shell answers) in s."""
    q, ser = str(base / f"raw{i}.qmp"), str(base / f"raw{i}.ser")
    argv = [QEMU, "-nodefaults", "-no-user-config", "-S", "-incoming", "defer",
            "-no-shutdown", "-machine", "q35,memory-backend=hs-ram", "-accel", "tcg,tb-size=16",
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
    state = os.open(state_path, os.O_RDONLY)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, pass_fds=[ram_fd], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reg.add_qemu(p.pid)
    deadline = t0 + 60
    try:
        s, cmd = qmp(q, deadline)
        cmd("migrate-set-capabilities",
            capabilities=[{"capability": "x-ignore-shared", "state": True}])
        cmd("getfd", fds=[state], fdname="in")
        cmd("migrate-incoming", uri="fd:in")
        while cmd("query-migrate").get("status") != "completed":
            time.sleep(0.001)
        cmd("cont")
        t_run = time.monotonic() - t0
        shell_answers(ser, deadline, f"raw{i}")
        t_shell = time.monotonic() - t0
    finally:
        os.close(state)
    return t_run, t_shell, p


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
    ap.add_argument("--mem-vms", type=int, default=4, help="VMs of each kind for memory")
    ap.add_argument("--base", help="work dir (default /tmp/hsw-PID)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--output")
    args = ap.parse_args()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outp = Path(args.output) if args.output else RESULTS / f"warm-{stamp}.json"
    base = new_workdir("warm.py", args.base, "hsw")
    memdir = Path(f"/dev/shm/hsw-{os.getpid()}")
    reg = Registry()
    res = {}
    error = None
    try:
        base.mkdir(parents=True)
        guest = build_guest()
        h = Hsd(base / "d", reg, hsd_extra_args(guest) + ["--memory-dir", str(memdir)])
        h.start()
        sock = h.socket
        spec = {"name": "src", "memory_mib": MEMORY, "accel": "tcg", "kernel": guest["kernel"],
                "initrd": guest["initrd"], "cmdline": "console=ttyS0", "memory_file": True,
                "nics": [{"type": "user"}]}
        api(sock, "POST", "/v1/vms", spec)
        api(sock, "POST", "/v1/vms/src/start", timeout=120)
        clog = h.state_dir / "vms" / "src" / "console.log"
        wait_for(lambda: console_has(clog, "HS-IDENTITY"), 180, "the source guest to boot")
        time.sleep(2)
        _, cap = api(sock, "POST", "/v1/templates",
                     {"name": "tpl", "vm": "src", "warm": True, "then": "stop"}, timeout=300)
        res["capture"] = cap
        log(f"capture: state {cap['state_size'] / 1024:.0f} KiB, paused {cap['paused_ms']:.0f} ms")

        hsd_run, hsd_shell, raw_run, raw_shell = [], [], [], []
        tdir = h.state_dir / "templates" / "tpl"
        ram_fd = sealed_copy(tdir / "ram")
        for i in range(args.reps):
            h.check_alive()
            name = f"c{i}"
            api(sock, "POST", "/v1/vms", {"name": name, "warm_template": "tpl"})
            t0 = time.monotonic()
            api(sock, "POST", f"/v1/vms/{name}/start", timeout=120)
            hsd_run.append(time.monotonic() - t0)
            # The shell: through hsd's console socket, as a user would.
            p = subprocess.run([str(HSD.parent.parent / "cli" / "hsctl"), "--socket", sock,
                                "console", name, "--no-replay", "--wait-for", f"HSQ-{i}-done",
                                "--timeout", "60"], input=f"echo HSQ-{i}-don$(echo e)\n",
                               capture_output=True, text=True, timeout=70)
            if p.returncode:
                raise BenchError(f"{name}: the shell did not answer: {p.stderr}")
            hsd_shell.append(time.monotonic() - t0)
            tr, ts, proc = raw_clone(reg, base, guest, ram_fd, tdir / "state", i)
            raw_run.append(tr)
            raw_shell.append(ts)
            proc.kill()
            proc.wait(10)
            api(sock, "POST", f"/v1/vms/{name}/kill")
            log(f"rep {i}: hsd running {hsd_run[-1] * 1e3:.0f} ms, shell {hsd_shell[-1] * 1e3:.0f} "
                f"ms; raw running {tr * 1e3:.0f} ms, shell {ts * 1e3:.0f} ms")
        res["start"] = {"hsd_running": summarize(hsd_run), "raw_running": summarize(raw_run),
                        "hsd_shell": summarize(hsd_shell), "raw_shell": summarize(raw_shell)}

        # Memory: N warm clones, then N cold boots, each after settling.
        pids = []
        for i in range(args.mem_vms):
            api(sock, "POST", "/v1/vms", {"name": f"m{i}", "warm_template": "tpl"})
            _, vm = api(sock, "POST", f"/v1/vms/m{i}/start", timeout=120)
            pids.append(vm["pid"])
        time.sleep(5)
        warm_pss = [pss_kib(p) for p in pids]
        for i in range(args.mem_vms):
            api(sock, "POST", f"/v1/vms/m{i}/kill")
        pids = []
        for i in range(args.mem_vms):
            s2 = dict(spec, name=f"b{i}")
            api(sock, "POST", "/v1/vms", s2)
            _, vm = api(sock, "POST", f"/v1/vms/b{i}/start", timeout=120)
            pids.append(vm["pid"])
        for i in range(args.mem_vms):
            cl = h.state_dir / "vms" / f"b{i}" / "console.log"
            wait_for(lambda: console_has(cl, "HS-IDENTITY"), 300, f"b{i} to boot")
        time.sleep(5)
        cold_pss = [pss_kib(p) for p in pids]
        res["memory"] = {"warm_pss_kib": warm_pss, "cold_pss_kib": cold_pss}
    except RUN_ERRORS as e:
        error = run_error(e)
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
        w = sum(m["warm_pss_kib"]) / len(m["warm_pss_kib"]) / 1024
        c = sum(m["cold_pss_kib"]) / len(m["cold_pss_kib"]) / 1024
        rows.append(["Pss per VM (warm clone vs cold boot)", f"{w:.1f} MiB", f"cold {c:.1f} MiB",
                     f"{w / c:.2f}x"])
    for r in rows:
        log("  " + " | ".join(r))
    write_results(outp, {"when": stamp, "targets": TARGETS, "error": error, "summary": rows,
                         "results": res})
    if error:
        log(f"error: {error}")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
