#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Firmware, TPM and guest agent (issue 13): what UEFI, a vTPM and an
agent port cost a VM on a dense host, each against the same tiny guest
without the feature, measured in one run with one hsd.

1. start -> guest ready: POST /v1/vms/NAME/start until the test guest's
   HS-GUEST-READY appears on its console (new bytes only: the log is
   appended across starts), for the same guest (192 MiB, 1 vCPU, TCG,
   kernel + initramfs, no NIC) with "firmware": "bios" (SeaBIOS, the
   baseline), "firmware": "uefi" (OVMF, the kernel booted directly through
   fw_cfg, the VM's own variable store on pflash) and "firmware": "uefi",
   "tpm": true (plus a swtpm per VM). Also the start call alone (until
   hsd answers: QEMU runs), which is what hsd itself adds (opening OVMF's
   files; spawning swtpm before QEMU). Rounds interleaved and rotated
   (bios/uefi/tpm, uefi/tpm/bios, ...), one VM at a time, killed once
   ready; round 0 warms up and is not recorded. Medians, the ratio of the
   medians to BIOS, and the median of the per-round ratios. Where the time
   goes: once ready, the guest's shell is asked for /proc/uptime (seconds
   since its kernel started); the host's seconds since the start call
   minus that is the time before the kernel ran (QEMU's start and the
   firmware: SeaBIOS or OVMF, with a TPM its measured boot), the rest is
   the kernel and its init up to HS-GUEST-READY.
2. per-VM memory: N BIOS VMs and N UEFI+TPM VMs of the same guest running
   at once, booted and settled: each swtpm's VmRSS, Pss and private pages
   (Private_Clean + Private_Dirty: what that process alone costs), each
   QEMU's Pss (BIOS vs UEFI+TPM), the variable store on disk
   (STATE/vms/NAME/efivars.fd, size and allocated) and the TPM state
   (STATE/vms/NAME/tpm/tpm2-00.permall). What KSM could merge: the KiB of
   each process's mappings flagged mergeable (VmFlags "mg" in smaps: QEMU's
   guest RAM, madvise(MADV_MERGEABLE)); swtpm is a separate process that
   never asks for it, so its memory is outside KSM's reach: per VM it is
   paid in full, only the shared libraries are shared (which Pss divides).
3. snapshot cost: live disk-only snapshots (POST /v1/vms/NAME/snapshots)
   of two running, booted VMs with a managed 16 MiB disk, BIOS vs UEFI+TPM
   (which also copies the variable store and the TPM state), interleaved
   and rotated; client wall time (new connection) and hsd's `seconds`.
4. agent: GET /v1/vms/NAME of a running VM with "agent": true whose guest
   runs no agent (the test guest has none) against the same for a VM
   without an agent port, alternated request by request over one
   keep-alive connection: an absent agent should cost nothing (ratio ~1).
   Also GET /v1/vms/NAME/agent, which must answer 409 at once.

Guests run under TCG (2 cores, shared): the absolute boot times are far
above KVM's, and OVMF under TCG is slow; the ratios measured in one run
are the point. Skipped (exit 77) when OVMF's 4 MiB build or swtpm is
missing. Exit status otherwise: 0 done, 2 the run failed or was
interrupted (there are no targets).

Python 3 standard library only; run as root (like hsd)."""
import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchlib import (HSCTL, HSD, RUN_ERRORS, BenchError, Hsd, RawHttp, Registry, api,
                      binary_info, build_guest, catch_signals, collect_hsd_logs, git_rev, has_file_under,
                      host_info, hsd_extra_args, kill_and_wait, log, need_files, new_workdir,
                      pid_alive, proc_cmdline, proc_memory, proc_starttime, remove_workdir,
                      report_run_end, rounds, run_error, summarize, timed_api, uninterrupted,
                      version_line, wait_for, write_results)

RESULTS = Path(__file__).resolve().parent / "results"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
SWTPM = Path("/usr/bin/swtpm")
SKIP = 77
MEMORY = 192
CMDLINE = "console=ttyS0 quiet no_timer_check"
READY = b"HS-GUEST-READY"
FAILED = (b"Kernel panic", b"HS-GUEST-FAILED")
# The three firmware set-ups compared (spec keys); "bios" is the baseline.
KINDS = {"bios": {}, "uefi": {"firmware": "uefi"}, "tpm": {"firmware": "uefi", "tpm": True}}
LABEL = {"bios": "bios", "uefi": "uefi", "tpm": "uefi+tpm"}


def mib(kib):
    return kib / 1024.0


def med(v):
    return statistics.median(v) if v else None


class Bench:
    def __init__(self, h, reg, guest):
        self.h, self.reg, self.guest = h, reg, guest
        self.sock = h.socket
        self.swtpms = {}  # pid -> start time: every swtpm hsd reported

    # ------------------------------------------------------------ VMs

    def define(self, name, kind, memory=MEMORY, **more):
        spec = {"name": name, "memory_mib": memory, "accel": "tcg",
                "kernel": self.guest["kernel"], "initrd": self.guest["initrd"],
                "cmdline": CMDLINE, **KINDS[kind], **more}
        api(self.sock, "POST", "/v1/vms", spec)

    def vm(self, name):
        return api(self.sock, "GET", f"/v1/vms/{name}")[1]

    def note_pids(self, vm):
        """Registers the VM's QEMU and swtpm (for the clean-up, by pid)."""
        if vm.get("pid"):
            self.reg.add_qemu(vm["pid"])
        pid = ((vm.get("firmware") or {}).get("tpm") or {}).get("swtpm_pid")
        if pid and pid not in self.swtpms:
            st = proc_starttime(pid)
            if st is not None:
                self.swtpms[pid] = st
        return pid

    def console(self, name):
        return self.h.state_dir / "vms" / name / "console.log"

    def console_size(self, name):
        try:
            return self.console(name).stat().st_size
        except FileNotFoundError:
            return 0

    def ready_since(self, name, off):
        """HS-GUEST-READY in what the console got after `off` (a rotated
        log, smaller than off, is read whole). Raises on a panic."""
        try:
            with open(self.console(name), "rb") as f:
                if os.fstat(f.fileno()).st_size >= off:
                    f.seek(off)
                data = f.read()
        except FileNotFoundError:
            return False
        for bad in FAILED:
            if bad in data:
                raise BenchError(f"{name}: its console says {bad.decode()!r}: "
                                 f"{data[-600:].decode(errors='replace')}")
        return READY in data

    def wait_ready(self, name, off, timeout):
        def pred():
            return self.ready_since(name, off)
        try:
            wait_for(pred, timeout, f"{name} to print HS-GUEST-READY", interval=0.02)
        except BenchError as e:
            tail = b""
            try:
                tail = self.console(name).read_bytes()[off:][-800:]
            except OSError:
                pass
            st = None
            try:
                st = self.vm(name).get("state")
            except Exception:
                pass
            raise BenchError(f"{e} (state {st}); console since the start: "
                             f"{tail.decode(errors='replace')!r}") from None

    def start(self, name, timeout=120):
        """POST start: (seconds until the answer, the VM)."""
        t, _, vm = timed_api(self.sock, "POST", f"/v1/vms/{name}/start", timeout=timeout)
        if not self.note_pids(vm) and (vm.get("spec") or {}).get("tpm"):
            self.note_pids(self.vm(name))
        return t, vm

    def kill(self, name):
        """POST kill (answers once QEMU is gone), then waits for its swtpm
        to go too (--terminate: it exits when QEMU's channel closes).
        Returns (kill seconds, seconds until swtpm was gone or None)."""
        before = self.vm(name)
        pid = self.note_pids(before)
        t, _, _ = timed_api(self.sock, "POST", f"/v1/vms/{name}/kill", timeout=60)
        t_sw = None
        if pid:
            t0 = time.perf_counter()
            wait_for(lambda: not pid_alive(pid), 15, f"{name}'s swtpm (pid {pid}) to exit")
            t_sw = t + time.perf_counter() - t0
        return t, t_sw

    def guest_uptime(self, name, t0):
        """The guest's /proc/uptime (seconds since its kernel started),
        asked through its serial shell, and the host's seconds since t0
        when the answer came: their difference is when the kernel started
        (the firmware's time, plus QEMU's start)."""
        self._seq = getattr(self, "_seq", 0) + 1
        tag = f"HSF{self._seq}"
        r = subprocess.run([str(HSCTL), "--socket", self.sock, "console", name, "--no-replay",
                            "--wait-for", f"{tag}-end", "--timeout", "30"],
                           input=f"echo {tag}-beg$(echo in) $(cut -d' ' -f1 /proc/uptime) "
                           f"{tag}-en$(echo d)\n", capture_output=True, text=True, timeout=45)
        t_host = time.perf_counter() - t0
        m = re.search(tag + r"-begin ([\d.]+) " + tag + "-end", r.stdout)
        if r.returncode != 0 or not m:
            raise BenchError(f"{name}: no uptime from its shell: {r.stderr.strip()} "
                             f"{r.stdout[-300:]!r}")
        return float(m.group(1)), t_host

    def boot_all(self, names, timeout):
        """Starts the VMs one after the other, then waits for each."""
        offs = {}
        for n in names:
            offs[n] = self.console_size(n)
            self.start(n)
        deadline = time.monotonic() + timeout
        for n in names:
            self.wait_ready(n, offs[n], max(1.0, deadline - time.monotonic()))

    def kill_all(self, names):
        for n in names:
            self.kill(n)

    # ------------------------------------------------------------ 1

    def phase_boot(self, reps, boot_timeout):
        names = {k: f"boot-{k}" for k in KINDS}
        for k, n in names.items():
            self.define(n, k)
        ready = {k: [] for k in KINDS}
        call = {k: [] for k in KINDS}
        kills = {k: [] for k in KINDS}
        firmware = {k: [] for k in KINDS}   # start call -> the guest kernel started
        kernel = {k: [] for k in KINDS}     # the guest kernel started -> HS-GUEST-READY
        swtpm_gone = []
        per_round = []
        for i, order in rounds(self.h, reps + 1, list(KINDS)):
            this = {}
            for k in order:
                n = names[k]
                off = self.console_size(n)
                t0 = time.perf_counter()
                t_call, _ = self.start(n)
                self.wait_ready(n, off, boot_timeout)
                t_ready = time.perf_counter() - t0
                up, t_host = self.guest_uptime(n, t0)
                t_fw = t_host - up
                t_kill, t_sw = self.kill(n)
                this[k] = (t_call, t_ready, t_fw)
                if i > 0:  # round 0 warms up (page cache, first swtpm, ...)
                    call[k].append(t_call)
                    ready[k].append(t_ready)
                    kills[k].append(t_kill)
                    firmware[k].append(t_fw)
                    kernel[k].append(t_ready - t_fw)
                    if t_sw is not None:
                        swtpm_gone.append(t_sw)
            per_round.append({k: {"call_s": v[0], "ready_s": v[1], "before_kernel_s": v[2]}
                              for k, v in this.items()})
            log(f"round {i}{' (warm-up)' if i == 0 else ''}: " + ", ".join(
                f"{LABEL[k]} ready {this[k][1]:.2f} s (call {this[k][0] * 1e3:.0f} ms, "
                f"kernel from {this[k][2]:.2f} s)" for k in order))
        rec = per_round[1:]
        out = {"reps": reps, "memory_mib": MEMORY, "rounds": per_round,
               "ready": {k: summarize(v) for k, v in ready.items()},
               "call": {k: summarize(v) for k, v in call.items()},
               "kill": {k: summarize(v) for k, v in kills.items()},
               "before_kernel": {k: summarize(v) for k, v in firmware.items()},
               "kernel_to_ready": {k: summarize(v) for k, v in kernel.items()},
               "kill_until_swtpm_gone": summarize(swtpm_gone),
               "paired_ratio": {}}
        for k in ("uefi", "tpm"):
            out["paired_ratio"][k] = {
                "ready": med([r[k]["ready_s"] / r["bios"]["ready_s"] for r in rec]),
                "call": med([r[k]["call_s"] / r["bios"]["call_s"] for r in rec])}
        for k in KINDS:
            self.delete(names[k])
        return out

    def delete(self, name):
        api(self.sock, "DELETE", f"/v1/vms/{name}", timeout=60, expect=(200, 204))

    # ------------------------------------------------------------ 2

    def phase_memory(self, n, settle, boot_timeout):
        bios = [f"mem-b{i}" for i in range(n)]
        tpm = [f"mem-t{i}" for i in range(n)]
        for b, t in zip(bios, tpm):
            self.define(b, "bios")
            self.define(t, "tpm")
        order = [x for pair in zip(bios, tpm) for x in pair]
        self.boot_all(order, boot_timeout)
        time.sleep(settle)
        self.h.check_alive()
        out = {"vms_per_kind": n, "memory_mib": MEMORY, "settle_s": settle,
               "bios": [], "tpm": []}
        for kind, names in (("bios", bios), ("tpm", tpm)):
            for name in names:
                vm = self.vm(name)
                if vm.get("state") != "running":
                    raise BenchError(f"{name} is {vm.get('state')}, not running")
                self.note_pids(vm)
                d = self.h.state_dir / "vms" / name
                rec = {"name": name, "qemu_pid": vm["pid"],
                       "qemu": proc_figures(vm["pid"])}
                if kind == "tpm":
                    sp = vm["firmware"]["tpm"].get("swtpm_pid")
                    if not sp or not pid_alive(sp):
                        raise BenchError(f"{name}: no running swtpm ({vm['firmware']})")
                    rec["swtpm_pid"] = sp
                    rec["swtpm"] = proc_figures(sp)
                    rec["firmware"] = vm["firmware"]
                    rec["efivars"] = file_size(d / "efivars.fd")
                    rec["tpm_permall"] = file_size(d / "tpm" / "tpm2-00.permall")
                    rec["tpm_dir"] = dir_size(d / "tpm")
                out[kind].append(rec)
        try:
            out["ksm"] = api(self.sock, "GET", "/v1/ksm")[1]
        except BenchError as e:
            out["ksm"] = {"error": str(e)}
        out["ksm_sysfs_run"] = read_text("/sys/kernel/mm/ksm/run")
        self.kill_all(order)
        for name in order:
            self.delete(name)
        return out

    # ------------------------------------------------------------ 3

    def phase_snapshots(self, reps, settle, boot_timeout):
        names = {"bios": "snap-bios", "tpm": "snap-tpm"}
        for k, n in names.items():
            self.define(n, k, disks=[{"size": "16M"}])
        self.boot_all(list(names.values()), boot_timeout)
        time.sleep(settle)
        wall = {k: [] for k in names}
        hsd_s = {k: [] for k in names}
        notes = {}
        for i, order in rounds(self.h, reps + 1, list(names)):
            for k in order:
                t, _, js = timed_api(self.sock, "POST", f"/v1/vms/{names[k]}/snapshots",
                                     {"name": f"s{i}"}, timeout=120)
                if not js.get("live"):
                    raise BenchError(f"{names[k]}: snapshot s{i} was not live: {js}")
                notes[k] = {x: js.get(x) for x in ("quiesced", "quiesce_note")}
                if i > 0:
                    wall[k].append(t)
                    hsd_s[k].append(js["seconds"])
        d = self.h.state_dir / "vms" / names["tpm"] / "snapshots"
        copies = {"efivars": file_size(d / "s1.efivars"), "tpm": file_size(d / "s1.tpm")}
        self.kill_all(names.values())
        for n in names.values():
            self.delete(n)
        return {"reps": reps, "wall": {k: summarize(v) for k, v in wall.items()},
                "hsd_seconds": {k: summarize(v) for k, v in hsd_s.items()},
                "answers": notes, "tpm_vm_copies": copies}

    # ------------------------------------------------------------ 4

    def phase_agent(self, requests, settle, boot_timeout):
        names = {"agent": "ga-on", "none": "ga-off"}
        self.define(names["agent"], "bios", memory=128, agent=True)
        self.define(names["none"], "bios", memory=128)
        self.boot_all(list(names.values()), boot_timeout)
        time.sleep(settle)
        seen = self.vm(names["agent"]).get("agent")
        lat = {k: [] for k in names}
        c = RawHttp(self.sock, timeout=30)
        try:
            for i in range(requests + 20):
                pair = ("agent", "none") if i % 2 == 0 else ("none", "agent")
                for k in pair:
                    t0 = time.perf_counter()
                    st, _ = c.request("GET", f"/v1/vms/{names[k]}")
                    t = time.perf_counter() - t0
                    if st != 200:
                        raise BenchError(f"GET /v1/vms/{names[k]}: HTTP {st}")
                    if i >= 20:  # the first 20 pairs warm up
                        lat[k].append(t)
            agent_call = []
            codes = set()
            for _ in range(20):
                t0 = time.perf_counter()
                st, _ = c.request("GET", f"/v1/vms/{names['agent']}/agent")
                agent_call.append(time.perf_counter() - t0)
                codes.add(st)
        finally:
            c.close()
        after = self.vm(names["agent"]).get("agent")
        self.kill_all(names.values())
        for n in names.values():
            self.delete(n)
        return {"requests": requests, "get": {k: summarize(v) for k, v in lat.items()},
                "agent_call": summarize(agent_call), "agent_call_status": sorted(codes),
                "agent_field_before": seen, "agent_field_after": after}


# ---------------------------------------------------------------- /proc, files

def mergeable_kib(pid):
    """KiB (size and RSS) of the process's mappings that KSM may merge
    (VmFlags "mg": madvise(MADV_MERGEABLE), or prctl PR_SET_MEMORY_MERGE)."""
    size = rss = 0
    cur = {}
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Size":
                cur = {"size": int(v.split()[0])}
            elif k == "Rss":
                cur["rss"] = int(v.split()[0])
            elif k == "VmFlags":
                if "mg" in v.split():
                    size += cur.get("size", 0)
                    rss += cur.get("rss", 0)
    return {"mergeable_size_kib": size, "mergeable_rss_kib": rss}


def proc_figures(pid):
    m = proc_memory(pid)
    m.update(mergeable_kib(pid))
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Shared_Clean", "Shared_Dirty", "Anonymous"):
                m[k] = int(v.split()[0])
    m["Private"] = m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
    return m


def file_size(p):
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return {"bytes": st.st_size, "allocated": st.st_blocks * 512}


def dir_size(p):
    tot = {"bytes": 0, "allocated": 0, "files": 0}
    for root, _, files in os.walk(p):
        for fn in files:
            s = file_size(os.path.join(root, fn))
            if s:
                tot["bytes"] += s["bytes"]
                tot["allocated"] += s["allocated"]
                tot["files"] += 1
    return tot


def read_text(p):
    try:
        return Path(p).read_text().strip()
    except OSError:
        return None


def loadavg():
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return None


# ---------------------------------------------------------------- clean-up

def swtpm_of(pid, base):
    """A swtpm one of whose open files is under `base` (hsd gives it its
    state dir as fd 4, its log as fd 5)."""
    argv = proc_cmdline(pid)
    return bool(argv) and os.path.basename(argv[0]).startswith(b"swtpm") and \
        has_file_under(pid, base)


def cleanup_swtpms(b, h, base):
    """After Registry.cleanup (QEMUs gone, so --terminate swtpms exit by
    themselves): every swtpm hsd reported or left a pidfile for, still the
    same process (start time) and one of this run's, is killed by pid; then
    a scan for swtpms holding files of the work dir (reported)."""
    known = dict(b.swtpms) if b else {}
    if h is not None:
        for pf in (h.run_dir / "vms").glob("*/swtpm.pid"):
            try:
                pid = int(pf.read_text().strip())
            except (OSError, ValueError):
                continue
            st = proc_starttime(pid)
            if st is not None and pid not in known:
                known[pid] = st
    left = 0
    for pid, st in sorted(known.items()):
        if pid_alive(pid) and proc_starttime(pid) == st and swtpm_of(pid, base):
            # Give --terminate a moment before the signal.
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and pid_alive(pid):
                time.sleep(0.05)
            if pid_alive(pid) and proc_starttime(pid) == st:
                left += 1
                if not kill_and_wait(pid):
                    log(f"cleanup: swtpm pid {pid} did not die")
    if left:
        log(f"cleanup: killed {left} swtpm(s) left running")
    orphans = [int(d) for d in os.listdir("/proc")
               if d.isdigit() and int(d) not in known and swtpm_of(int(d), base)]
    for pid in orphans:
        kill_and_wait(pid)
    if orphans:
        log(f"cleanup: WARNING: {len(orphans)} swtpm(s) of this run that hsd did not report "
            f"were still running (killed): {orphans}")


# ---------------------------------------------------------------- summary

def summary_rows(res):
    rows = []

    def add(metric, value, baseline, ratio, unit, note=""):
        rows.append({"metric": metric, "value": value, "baseline": baseline, "ratio": ratio,
                     "unit": unit, "note": note})
    bt = res.get("boot")
    if bt:
        b = bt["ready"]["bios"]["median_ms"] / 1000
        for k in ("uefi", "tpm"):
            v = bt["ready"][k]["median_ms"] / 1000
            add(f"1. start -> guest ready, {LABEL[k]} vs bios", v, b, v / b, "s",
                f"paired {bt['paired_ratio'][k]['ready']:.2f}x, +{v - b:.2f} s")
        for key, what in (("before_kernel", "start -> guest kernel starts"),
                          ("kernel_to_ready", "guest kernel -> ready")):
            b = bt[key]["bios"]["median_ms"] / 1000
            for k in ("uefi", "tpm"):
                v = bt[key][k]["median_ms"] / 1000
                add(f"1. {what}, {LABEL[k]} vs bios", v, b, v / b if b > 0 else None, "s",
                    f"+{v - b:.2f} s")
        b = bt["call"]["bios"]["median_ms"]
        for k in ("uefi", "tpm"):
            v = bt["call"][k]["median_ms"]
            add(f"1. POST start (answer), {LABEL[k]} vs bios", v, b, v / b, "ms",
                f"paired {bt['paired_ratio'][k]['call']:.2f}x, +{v - b:.1f} ms")
        k = bt["kill"]
        add("1. POST kill, uefi+tpm vs bios", k["tpm"]["median_ms"], k["bios"]["median_ms"],
            k["tpm"]["median_ms"] / k["bios"]["median_ms"], "ms",
            f"swtpm gone after {bt['kill_until_swtpm_gone']['median_ms']:.1f} ms")
    m = res.get("memory")
    if m:
        sw = [r["swtpm"] for r in m["tpm"]]
        qb = [r["qemu"] for r in m["bios"]]
        qt = [r["qemu"] for r in m["tpm"]]
        n = m["vms_per_kind"]
        add(f"2. swtpm VmRSS per VM ({n} running)", mib(med([x["VmRSS"] for x in sw])), None, None,
            "MiB", f"anon {mib(med([x['RssAnon'] for x in sw])):.2f} MiB")
        add("2. swtpm Pss per VM", mib(med([x["Pss"] for x in sw])), None, None, "MiB",
            f"private {mib(med([x['Private'] for x in sw])):.2f} MiB")
        pb, pt = med([x["Pss"] for x in qb]), med([x["Pss"] for x in qt])
        add("2. QEMU Pss, uefi+tpm vs bios", mib(pt), mib(pb), pt / pb, "MiB",
            f"+{mib(pt - pb):.1f} MiB")
        rb, rt = med([x["VmRSS"] for x in qb]), med([x["VmRSS"] for x in qt])
        add("2. QEMU VmRSS, uefi+tpm vs bios", mib(rt), mib(rb), rt / rb, "MiB",
            f"+{mib(rt - rb):.1f} MiB")
        tot_t = pt + med([x["Pss"] for x in sw])
        add("2. VM total Pss (QEMU + swtpm) vs bios", mib(tot_t), mib(pb), tot_t / pb, "MiB",
            f"+{mib(tot_t - pb):.1f} MiB per VM")
        ev = m["tpm"][0]["efivars"]
        add("2. efivars.fd on disk (per VM)", ev["bytes"] / 1024, None, None, "KiB",
            f"allocated {ev['allocated'] / 1024:.0f} KiB")
        tp = m["tpm"][0]["tpm_permall"]
        td = m["tpm"][0]["tpm_dir"]
        if tp:
            add("2. TPM state tpm2-00.permall (per VM)", tp["bytes"] / 1024, None, None, "KiB",
                f"tpm/ dir {td['allocated'] / 1024:.0f} KiB allocated, {td['files']} file(s)")
        kv = {v["name"]: v for v in (m.get("ksm") or {}).get("vms", [])}
        kb = [kv[r["name"]]["merging_bytes"] / 1024 for r in m["bios"] if r["name"] in kv]
        kt = [kv[r["name"]]["merging_bytes"] / 1024 for r in m["tpm"] if r["name"] in kv]
        if kb and kt:
            add("2. KSM merging per VM (GET /v1/ksm), uefi+tpm vs bios", mib(med(kt)),
                mib(med(kb)), med(kt) / med(kb), "MiB", f"KSM phase {m['ksm'].get('phase')}")
        mq = med([x["mergeable_rss_kib"] for x in qt])
        ms = med([x["mergeable_rss_kib"] for x in sw])
        add("2. KSM-mergeable RSS per process: QEMU (uefi+tpm)", mib(mq), None, None, "MiB",
            f"swtpm {mib(ms):.2f} MiB mergeable")
    s = res.get("snapshots")
    if s:
        b, t = s["wall"]["bios"]["median_ms"], s["wall"]["tpm"]["median_ms"]
        add("3. live disk snapshot, uefi+tpm vs bios", t, b, t / b, "ms",
            f"hsd seconds {s['hsd_seconds']['tpm']['median_ms']:.1f} vs "
            f"{s['hsd_seconds']['bios']['median_ms']:.1f} ms")
    a = res.get("agent")
    if a:
        on, off = a["get"]["agent"]["median_ms"], a["get"]["none"]["median_ms"]
        add("4. GET /v1/vms/NAME, agent (absent) vs none", on, off, on / off, "ms",
            f"p90 {a['get']['agent']['p90_ms']:.3f} vs {a['get']['none']['p90_ms']:.3f}")
        add("4. GET /v1/vms/NAME/agent, no agent", a["agent_call"]["median_ms"], None, None, "ms",
            f"HTTP {a['agent_call_status']}")
    return rows


def fmt(x, unit):
    if x is None:
        return "-"
    nd = 3 if unit == "ms" and x < 10 else (1 if unit in ("ms", "KiB") else 2)
    return f"{x:.{nd}f}"


def print_table(rows):
    if not rows:
        return
    w = max(len(r["metric"]) for r in rows)
    log("")
    log(f"{'metric':<{w}}  {'value':>9}  {'baseline':>9}  {'ratio':>6}  {'unit':<4}  note")
    log("-" * (w + 70))
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        log(f"{r['metric']:<{w}}  {fmt(r['value'], r['unit']):>9}  "
            f"{fmt(r['baseline'], r['unit']):>9}  {ratio:>6}  {r['unit']:<4}  {r['note']}")
    log("-" * (w + 70))


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2 boot rounds, 2+2 VMs, 3 snapshots, 100 GETs")
    ap.add_argument("--reps", type=int, help="boot rounds of each kind (5; quick 2)")
    ap.add_argument("--vms", type=int, help="VMs of each kind for memory (4; quick 2)")
    ap.add_argument("--snap-reps", type=int, help="snapshots per VM (10; quick 3)")
    ap.add_argument("--requests", type=int, help="GETs per VM for the agent (500; quick 100)")
    ap.add_argument("--settle", type=float, default=5, help="s after the guests booted")
    ap.add_argument("--boot-timeout", type=float, default=300, help="s per guest boot")
    ap.add_argument("--budget", type=float,
                    help="s for the whole run (1800; quick 900) (SIGALRM; the clean-up and "
                    "results still follow)")
    ap.add_argument("--base", help="work dir (default /tmp/hsf-PID)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--output", help="results file (default bench/results/firmware.json)")
    args = ap.parse_args()
    q = args.quick
    p = {"reps": args.reps or (2 if q else 5), "vms": args.vms or (2 if q else 4),
         "snap_reps": args.snap_reps or (3 if q else 10),
         "requests": args.requests or (100 if q else 500),
         "settle": args.settle, "boot_timeout": args.boot_timeout,
         "budget": args.budget or (900 if q else 1800)}
    if p["snap_reps"] > 60:
        sys.exit("firmware.py: --snap-reps: at most 60 (a VM has at most 64 snapshots)")
    for f in (OVMF_CODE, SWTPM):
        if not f.exists():
            log(f"firmware.py: SKIP: {f} is missing (Debian's ovmf and swtpm; "
                f"scripts/install-deps.sh installs them)")
            return SKIP
    need_files("firmware.py", HSD, HSCTL, hint=" (build first: ninja -C build)")
    outp = Path(args.output) if args.output else RESULTS / "firmware.json"
    base = new_workdir("firmware.py", args.base, "hsf")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    bin_before = binary_info(HSD)
    reg = Registry()
    res = {"loadavg": {"start": loadavg()}}
    error = None
    at = ["setup"]
    h = b = None
    t_start = time.monotonic()

    def step(what):
        at[0] = what
        log(f"-- {what}")
    catch_signals(p["budget"])
    try:
        base.mkdir(parents=True)
        step("building the test guest")
        guest = build_guest()
        step("starting hsd")
        h = Hsd(base / "d", reg, hsd_extra_args(guest))
        h.start()
        b = Bench(h, reg, guest)
        step(f"1. start -> guest ready, bios / uefi / uefi+tpm, {p['reps']} rounds (+1 warm-up)")
        res["boot"] = b.phase_boot(p["reps"], p["boot_timeout"])
        bt = res["boot"]
        for k in KINDS:
            log(f"{LABEL[k]}: ready median {bt['ready'][k]['median_ms'] / 1000:.2f} s, "
                f"start call median {bt['call'][k]['median_ms']:.1f} ms")
        res["loadavg"]["after_1"] = loadavg()
        step(f"2. memory: {p['vms']} bios + {p['vms']} uefi+tpm VMs running")
        res["memory"] = b.phase_memory(p["vms"], p["settle"] + 5, p["boot_timeout"] * 2)
        res["loadavg"]["after_2"] = loadavg()
        step(f"3. live disk snapshots, bios vs uefi+tpm, {p['snap_reps']} each (+1 warm-up)")
        res["snapshots"] = b.phase_snapshots(p["snap_reps"], p["settle"], p["boot_timeout"])
        step(f"4. GET /v1/vms/NAME with an absent agent vs none, {p['requests']} each")
        res["agent"] = b.phase_agent(p["requests"], p["settle"], p["boot_timeout"])
    except RUN_ERRORS as e:
        traceback.print_exc()
        error = f"{run_error(e)} (step: {at[0]})"
    finally:
        with uninterrupted():
            if h is not None and h.alive():
                # Kill what still runs through hsd first: swtpm goes with it.
                try:
                    _, js = api(h.socket, "GET", "/v1/vms", timeout=5)
                    for vm in js["vms"]:
                        if vm.get("state") in ("running", "paused", "starting"):
                            if b:
                                b.note_pids(vm)
                            api(h.socket, "POST", f"/v1/vms/{vm['name']}/kill", timeout=15,
                                expect=None)
                except Exception as e:  # the Registry kills them anyway
                    log(f"cleanup: killing the VMs through hsd: {type(e).__name__}: {e}")
            collect_hsd_logs(reg, res, error)
            reg.cleanup(log)
            cleanup_swtpms(b, h, base)
            remove_workdir(base, args.keep, log)
    res["loadavg"]["end"] = loadavg()
    elapsed = time.monotonic() - t_start
    try:
        rows = summary_rows(res)
    except (KeyError, TypeError, ZeroDivisionError, IndexError, ValueError) as e:
        log(f"summary: {type(e).__name__}: {e}")  # a partial phase of a failed run
        rows = []
    print_table(rows)
    la = res["loadavg"]
    log(f"  run took {elapsed:.0f} s; load average (1/5/15 min): "
        + ", ".join(f"{k} {'/'.join(v)}" for k, v in la.items() if v))
    m = res.get("memory")
    if m and m.get("ksm") and "error" not in m["ksm"]:
        k = m["ksm"]
        log(f"  KSM: present {k.get('present')}, phase {k.get('phase')}, /sys/kernel/mm/ksm/run "
            f"{m.get('ksm_sysfs_run')}; swtpm's memory is in no mergeable mapping: only "
            f"QEMU's guest RAM is KSM's to merge")
    a = res.get("agent")
    if a:
        log(f"  agent VM's 'agent' field (guest without qemu-ga): {a['agent_field_after']}")
    report_run_end(HSD, bin_before, error, res)
    write_results(outp, {"when": stamp, "error": error, "summary": rows, "results": res,
                         "params": p, "elapsed_s": elapsed, "git": git_rev(),
                         "hsd": binary_info(HSD), "qemu": version_line("/usr/bin/qemu-system-x86_64"),
                         "swtpm": version_line(str(SWTPM)) if SWTPM.exists() else None,
                         "host": host_info()})
    return 2 if error else 0


if __name__ == "__main__":
    sys.exit(main())
