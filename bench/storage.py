#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Storage benchmark: templates, thin clones, snapshots and rollbacks
through hsd's API, each against a target and, where there is one, a
baseline.

  1. clone: POST /v1/vms with {"disks":[{"template":T}]} (answers once the
     qcow2 overlay exists), client wall time, from a 1 GiB and a 20 GiB
     template holding real data; ratio 20G/1G (independent of size?)
  2. snapshot create (POST /v1/vms/NAME/snapshots) on a stopped VM and on a
     running TCG guest, for both templates
  3. rollback (POST .../snapshots/S/rollback): disk_seconds of the answer,
     and for a running VM the total with the kill and the restart
  4. N VMs (50) from one template: defined (POST /v1/vms xN) and started
     (POST start xN; start answers once QEMU runs, guest boot excluded)
  5. disk space: allocated blocks of the N clones' layers vs N full copies
     of the template (computed, not made)
  6. baselines: `qemu-img create -f qcow2 -b T -F qcow2 overlay` run
     directly (a clone's floor) and `cp --reflink=never` of the 1 GiB
     template (what a full copy costs)

Usage: /usr/bin/python3 bench/storage.py [--quick] [--keep] [--base DIR]
See bench/README.md ("Storage benchmark"). Python 3 standard library only."""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    collect_hsd_logs, report_run_end,
    BenchError, HSD, Hsd, QEMU, RUN_ERRORS, Registry, atomic_write_cost, binary_info, build_guest,
    catch_signals, console_ready, exit_status, git_rev, host_info, hsd_extra_args, log, need_files,
    new_workdir, now, remove_workdir, rounds, run_error, summarize, uninterrupted, version_line,
    write_results)

RESULTS = Path(__file__).resolve().parent / "results"
QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
QEMU_IO = shutil.which("qemu-io") or "/usr/bin/qemu-io"
GIB = 1 << 30
MIB = 1 << 20

# As bench/run.py: no_timer_check avoids the IO-APIC timer check failing on
# overcommitted TCG guests.
GUEST_CMDLINE = "console=ttyS0 quiet no_timer_check"

TARGETS = {
    "clone_ms": 50.0,          # POST /v1/vms with a template disk, median
    "clone_size_ratio": 1.5,   # clone 20 GiB / clone 1 GiB, medians
    "snapshot_ms": 50.0,       # snapshot create, median
    "rollback_disk_ms": 100.0,  # disk_seconds of a rollback, median
    "fleet_s": 10.0,           # N x define + N x start
}

FULL = dict(reps=15, snap_reps=10, fleet=50, fleet_memory=64, settle=3.0, boot_timeout=180, big=True,
            big_write_mib=192, small_write_mib=512, deletes=3, budget=2400)
QUICK = dict(reps=4, snap_reps=4, fleet=10, fleet_memory=64, settle=3.0, boot_timeout=180, big=False,
             big_write_mib=192, small_write_mib=512, deletes=2, budget=600)


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


# ------------------------------------------------------------------ helpers

def run_cmd(argv, timeout, what):
    """A command of ours (qemu-img, qemu-io, cp); seconds it took.
    subprocess.run kills it if the timeout (or a signal) cuts it short."""
    t0 = now()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    t = now() - t0
    if r.returncode != 0:
        raise BenchError(f"{what}: {' '.join(argv)}: rc={r.returncode}: {r.stderr.strip()[-500:]}")
    return t


def blocks_bytes(path):
    """Allocated bytes (st_blocks * 512) of a file, or of everything under a
    directory (what `du -s` counts, without following links)."""
    p = Path(path)
    if not p.exists():
        return 0
    if p.is_file():
        return p.stat().st_blocks * 512
    total = 0
    for dirpath, dirnames, filenames in os.walk(p):
        for n in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                pass
    return total


def cpu_jiffies():
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def vm_spec(name, guest, memory, template=None):
    spec = {"name": name, "cpus": 1, "memory_mib": memory, "accel": "tcg",
            "kernel": guest["kernel"], "initrd": guest["initrd"],
            "cmdline": GUEST_CMDLINE, "nics": [{"type": "user"}]}
    if template:
        spec["disks"] = [{"template": template}]
    return spec


def put(res, key, values):
    """Statistics (ms) under res[key], the raw samples (s) under
    res["samples_s"][key]."""
    res[key] = summarize(values)
    res.setdefault("samples_s", {})[key] = list(values)


def stat_line(label, s, extra=""):
    if not s or not s.get("n"):
        return f"  {label}: no samples"
    return (f"  {label}: median {s['median_ms']:.1f} ms, p90 {s['p90_ms']:.1f} ms, "
            f"min {s['min_ms']:.1f}, max {s['max_ms']:.1f} (n={s['n']}){extra}")


class HsdLog:
    """Slices of hsd's -v log by phase, parsed for step timings:
    "tool: qemu-img create ..." / "tool qemu-img (pid N): done in X s",
    "vm V: create done in N ms", "vm V: snapshot S done in N ms", and
    warnings/errors (<4>, <3>, ...)."""

    TOOL_CMD = re.compile(r"^<\d>tool: (\S+)(?: (\S+))?")
    TOOL_DONE = re.compile(r"^<\d>tool (\S+) \(pid \d+\): (done|failed) in ([0-9.]+) s")
    OP_DONE = re.compile(r"^<\d>vm (\S+): (create|snapshot|rollback|delete-snapshot)(?: (\S+))? "
                         r"done in ([0-9.]+) ms")
    TEMPLATE_DONE = re.compile(r"^<\d>template (\S+): made in ([0-9.]+) ms")

    def __init__(self, h):
        self.h = h
        self.mark = 0
        self.cpu0 = cpu_jiffies()

    def size(self):
        try:
            return self.h.log_path.stat().st_size
        except OSError:
            return 0

    def start_phase(self):
        self.mark = self.size()
        self.cpu0 = cpu_jiffies()

    def phase(self):
        """Parses the log since start_phase()."""
        try:
            with open(self.h.log_path, "rb") as f:
                f.seek(self.mark)
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        tools, ops, templates, problems, pacing = {}, {}, {}, [], []
        pending = []
        for line in text.splitlines():
            m = self.TOOL_CMD.match(line)
            if m:
                pending.append(f"{os.path.basename(m.group(1))} {m.group(2) or ''}".strip())
                continue
            m = self.TOOL_DONE.match(line)
            if m:
                # Tools of this bench run one at a time: the oldest unpaired
                # command line is this one.
                key = pending.pop(0) if pending else m.group(1)
                if m.group(2) == "failed":
                    key += " (failed)"
                tools.setdefault(key, []).append(float(m.group(3)))
                continue
            m = self.OP_DONE.match(line)
            if m:
                ops.setdefault(m.group(2), []).append(float(m.group(4)) / 1000.0)
                continue
            m = self.TEMPLATE_DONE.match(line)
            if m:
                templates[m.group(1)] = float(m.group(2)) / 1000.0
                continue
            if "waiting for memory" in line or "memory available after" in line:
                pacing.append(line)
            if line[:3] in ("<0>", "<1>", "<2>", "<3>", "<4>"):
                problems.append(line)
        b1, t1 = cpu_jiffies()
        busy = (b1 - self.cpu0[0]) / (t1 - self.cpu0[1]) if t1 > self.cpu0[1] else None
        return {"tools": {k: summarize(v) for k, v in tools.items()},
                "ops": {k: summarize(v) for k, v in ops.items()},
                "templates_s": templates, "problems": problems, "pacing": pacing,
                "host_cpu_busy": busy, "loadavg": os.getloadavg()}


def report_log(name, parsed, res):
    res.setdefault("hsd_log", {})[name] = parsed
    parts = [f"{k} x{v['n']} p50 {v['median_ms']:.1f} ms max {v['max_ms']:.1f}"
             for k, v in parsed["tools"].items() if v.get("n")]
    if parts:
        log("  hsd log, tools: " + "; ".join(parts))
    parts = [f"{k} x{v['n']} p50 {v['median_ms']:.1f} ms max {v['max_ms']:.1f}"
             for k, v in parsed["ops"].items() if v.get("n")]
    if parts:
        log("  hsd log, storage ops (server side): " + "; ".join(parts))
    if parsed.get("host_cpu_busy") is not None:
        log(f"  host CPU busy meanwhile (all processes, {os.cpu_count()} CPUs): "
            f"{100 * parsed['host_cpu_busy']:.0f} %; load average "
            f"{'/'.join(f'{x:.2f}' for x in parsed['loadavg'])}")
    if parsed.get("pacing"):
        log(f"  hsd paced starts (admission): {len(parsed['pacing'])} log lines, e.g. "
            f"{parsed['pacing'][0]}")
    for ln in parsed["problems"][:10]:
        log(f"  hsd log: {ln}")
    if len(parsed["problems"]) > 10:
        log(f"  hsd log: ... {len(parsed['problems']) - 10} more warnings/errors")


# ------------------------------------------------------------------ phases

def make_templates(h, p, img_dir, res, hl):
    """Builds the source images with qemu-img/qemu-io, imports them
    (POST /v1/templates: hsd copies them into its state dir), then removes
    the sources. Returns {size_label: template name}."""
    plans = [("1g", 1, [(0, p["small_write_mib"])])]
    if p["big"]:
        # At the start of each GiB: the data is spread over the whole disk.
        plans.append(("20g", 20, [(i * 1024, p["big_write_mib"]) for i in range(20)]))
    need = sum(2 * sum(n for _, n in w) for _, _, w in plans) * MIB + p["small_write_mib"] * MIB
    avail = free_bytes(img_dir)
    log(f"\n== templates: need at most {need / GIB:.1f} GiB (sources, imported "
        f"copies, the cp baseline); {avail / GIB:.1f} GiB free on {img_dir}")
    res["disk_free_before"] = avail
    if avail < need + 10 * GIB:
        raise BenchError(f"not enough free space: {avail / GIB:.1f} GiB free, want "
                         f"{(need + 10 * GIB) / GIB:.1f} (the images + 10 GiB margin)")
    out = {}
    res["templates"] = {}
    for label, vsize, writes in plans:
        src = img_dir / f"src-{label}.qcow2"
        run_cmd([QEMU_IMG, "create", "-q", "-f", "qcow2", str(src), f"{vsize}G"], 60,
                "qemu-img create")
        cmds = []
        for off_mib, n_mib in writes:
            cmds += ["-c", f"write -P 0xab {off_mib}M {n_mib}M"]
        t_write = run_cmd([QEMU_IO, "-f", "qcow2", *cmds, str(src)], 900, "qemu-io write")
        written = sum(n for _, n in writes)
        src_blocks = blocks_bytes(src)
        desc = (f"{written} MiB of 0xab at offset 0" if len(writes) == 1 else
                f"{writes[0][1]} MiB of 0xab at the start of each of the {len(writes)} GiB "
                f"({written} MiB)")
        log(f"  source {src.name}: virtual {vsize} GiB, wrote {desc} in {t_write:.1f}s; "
            f"allocated {src_blocks / MIB:.0f} MiB")
        name = f"t{label}"
        hl.start_phase()
        t_imp, _, js = h.request("POST", "/v1/templates",
                                 {"name": name, "file": str(src), "format": "qcow2"},
                                 timeout=1800, expect=(201,))
        image = h.state_dir / "templates" / name / "image"
        tb = blocks_bytes(image)
        log(f"  template {name}: imported in {t_imp:.1f}s; virtual_size "
            f"{js.get('virtual_size', 0) / GIB:.1f} GiB, actual_size "
            f"{js.get('actual_size', 0) / MIB:.0f} MiB (st_blocks {tb / MIB:.0f} MiB)")
        res["templates"][label] = {
            "name": name, "virtual_gib": vsize, "written_mib": written, "writes_mib": writes,
            "pattern": "0xab", "qemu_io_s": t_write, "source_blocks": src_blocks,
            "import_s": t_imp, "api": js, "image": str(image), "image_blocks": tb,
            "import_log": hl.phase()}
        src.unlink()
        out[label] = name
    _, _, js = h.request("GET", "/v1/templates")
    res["templates_listed"] = [t.get("name") for t in js.get("templates", [])]
    return out


def phase_clone(h, guest, p, res, tmpl, hl):
    labels = list(tmpl)
    n = p["reps"]
    log(f"\n== 1. clone: POST /v1/vms with a template disk, {n} per template, interleaved "
        f"({', '.join(tmpl.values())}); plus a define without disks as the API's floor")
    hl.start_phase()
    # Warm-up, not recorded (first use of each template; first define).
    first = {}
    for lb in labels:
        t, _, _ = h.request("POST", "/v1/vms", vm_spec(f"cw-{lb}", guest, 64, tmpl[lb]),
                            expect=(201,))
        first[lb] = t
    t, _, _ = h.request("POST", "/v1/vms", vm_spec("cw-plain", guest, 64), expect=(201,))
    samples = {lb: [] for lb in labels}
    plain = []
    names = []
    for i, order in rounds(h, n, labels):
        line = []
        for lb in order:
            nm = f"c{lb}-{i:02d}"
            t, _, js = h.request("POST", "/v1/vms", vm_spec(nm, guest, 64, tmpl[lb]), expect=(201,))
            samples[lb].append(t)
            names.append(nm)
            line.append(f"{lb} {t * 1000:6.1f}")
        nm = f"cp-{i:02d}"
        t, _, _ = h.request("POST", "/v1/vms", vm_spec(nm, guest, 64), expect=(201,))
        plain.append(t)
        names.append(nm)
        log(f"  [{i + 1:2}/{n}] clone ms: " + "  ".join(line) + f"  | no disk {t * 1000:5.1f}")
    res["clone_first_ms"] = {lb: first[lb] * 1000 for lb in labels}
    for lb in labels:
        put(res, f"clone_{lb}", samples[lb])
        log(stat_line(f"clone from {tmpl[lb]}", res[f"clone_{lb}"]))
    put(res, "define_plain", plain)
    log(stat_line("define without disks", res["define_plain"]))
    if "20g" in labels:
        res["clone_ratio_20g_1g"] = res["clone_20g"]["median_ms"] / res["clone_1g"]["median_ms"]
        log(f"  ratio 20G/1G (medians): {res['clone_ratio_20g_1g']:.2f}")
    # What one clone is: its layer, and the chain QEMU will open.
    for lb in labels:
        vmdir = h.state_dir / "vms" / f"c{lb}-00"
        layers = sorted((vmdir / "layers").glob("*.qcow2"))
        info = {}
        if layers:
            out = subprocess.run([QEMU_IMG, "info", "--output=json", "-U", str(layers[0])],
                                 capture_output=True, text=True, timeout=60)
            try:
                info = json.loads(out.stdout)
            except ValueError:
                info = {"error": out.stderr.strip()}
        res[f"clone_{lb}_layer"] = {
            "files": [x.name for x in layers], "blocks": sum(blocks_bytes(x) for x in layers),
            "virtual_size": info.get("virtual-size"), "backing": info.get("backing-filename"),
            "cluster_size": info.get("cluster-size")}
        c = res[f"clone_{lb}_layer"]
        log(f"  clone layer ({lb}): {c['files']} {c['blocks'] / 1024:.0f} KiB allocated, virtual "
            f"{(c['virtual_size'] or 0) / GIB:.1f} GiB, backing {c['backing']}")
    report_log("clone", hl.phase(), res)
    # Clean-up of this phase (timed: informational).
    hl.start_phase()
    dels = []
    for nm in names + [f"cw-{lb}" for lb in labels] + ["cw-plain"]:
        t, _, _ = h.request("DELETE", f"/v1/vms/{nm}")
        dels.append(t)
    put(res, "delete_vm", dels)
    log(stat_line("DELETE /v1/vms/NAME (clones and plain)", res["delete_vm"]))
    report_log("clone_delete", hl.phase(), res)


def snapshot_round(h, n, vms, keys, tmpl, res, hl, what):
    """n snapshots per VM of `keys`, interleaved."""
    snaps = {k: [] for k in keys}
    server = {k: [] for k in keys}
    hl.start_phase()
    for i, order in rounds(h, n, keys):
        line = []
        for k in order:
            nm = vms[k]
            t, _, js = h.request("POST", f"/v1/vms/{nm}/snapshots", {"name": f"snap{i:02d}"},
                                 expect=(201,))
            snaps[k].append(t)
            if js and js.get("seconds") is not None:
                server[k].append(js["seconds"])
            if (k[0] == "running") != bool(js.get("live")):
                log(f"  warning: snapshot of {k[0]} {nm} answered live={js.get('live')}")
            line.append(f"{k[1]} {t * 1000:6.1f}")
        log(f"  [{i + 1:2}/{n}] snapshot ms: " + "  ".join(line))
    for k in keys:
        key = f"snapshot_{k[0]}_{k[1]}"
        put(res, key, snaps[k])
        put(res, key + "_server", server[k])
        log(stat_line(f"snapshot, {k[0]} VM on {tmpl[k[1]]}", res[key],
                      f"; hsd's 'seconds' median {res[key + '_server'].get('median_ms', 0):.1f} ms"))
    report_log(f"snapshot_{what}", hl.phase(), res)


def rollback_round(h, reg, n, vms, keys, tmpl, res, hl, what, pause):
    """n rollbacks per VM of `keys`, interleaved, to the snapshots in
    reverse order (the newest first)."""
    rb_client = {k: [] for k in keys}
    rb_disk = {k: [] for k in keys}
    rb_total = {k: [] for k in keys}
    restarted = {k: 0 for k in keys}
    hl.start_phase()
    for i, order in rounds(h, n, keys):
        line = []
        for k in order:
            nm = vms[k]
            snap = f"snap{(n - 1 - i):02d}"
            t, _, js = h.request("POST", f"/v1/vms/{nm}/snapshots/{snap}/rollback", {},
                                 timeout=120, expect=(200,))
            rb_client[k].append(t)
            if js.get("disk_seconds") is not None:
                rb_disk[k].append(js["disk_seconds"])
            if js.get("seconds") is not None:
                rb_total[k].append(js["seconds"])
            restarted[k] += bool(js.get("restarted"))
            line.append(f"{k[1]} {js.get('disk_seconds', 0) * 1000:6.1f}"
                        + (f"/{js['seconds'] * 1000:6.1f}" if js.get("seconds") is not None else "")
                        + f"/{t * 1000:6.1f}")
            if k[0] == "running":
                # Running again on its new layers: record its new QEMU.
                _, _, vj = h.request("GET", f"/v1/vms/{nm}")
                reg.add_qemu(vj.get("pid"))
                if vj.get("state") != "running":
                    log(f"  warning: {nm} is {vj.get('state')} after its rollback")
        log(f"  [{i + 1:2}/{n}] rollback ms (disk_seconds[/seconds]/client): " + "  ".join(line))
        if pause:
            time.sleep(pause)
    for k in keys:
        key = f"rollback_{k[0]}_{k[1]}"
        put(res, key + "_disk", rb_disk[k])
        put(res, key + "_client", rb_client[k])
        res[key + "_restarted"] = restarted[k]
        if rb_total[k]:
            put(res, key + "_total", rb_total[k])
        log(stat_line(f"rollback, {k[0]} VM on {tmpl[k[1]]}: disk_seconds", res[key + "_disk"]))
        if rb_total[k]:
            log(stat_line(f"rollback, {k[0]} VM on {tmpl[k[1]]}: seconds (with restart)",
                          res[key + "_total"]))
        log(stat_line(f"rollback, {k[0]} VM on {tmpl[k[1]]}: client wall", res[key + "_client"]))
    report_log(f"rollback_{what}", hl.phase(), res)


def phase_snapshots(h, reg, guest, p, res, tmpl, hl):
    labels = list(tmpl)
    n = p["snap_reps"]
    vms = {}
    for kind in ("stopped", "running"):
        for lb in labels:
            nm = f"s-{kind[0]}-{lb}"
            h.request("POST", "/v1/vms", vm_spec(nm, guest, 128, tmpl[lb]), expect=(201,))
            vms[(kind, lb)] = nm
    stopped = [k for k in vms if k[0] == "stopped"]
    running = [k for k in vms if k[0] == "running"]

    # Stopped VMs first, while no guest runs: the figures are hsd's and
    # qemu-img's, not 2 cores shared with booting TCG guests.
    log(f"\n== 2a. snapshot create, stopped VMs (no QEMU running): {n} per VM, interleaved "
        f"({', '.join(tmpl.values())})")
    snapshot_round(h, n, vms, stopped, tmpl, res, hl, "stopped")
    log(f"\n== 3a. rollback, stopped VMs: {n} per VM, to the snapshots newest first")
    rollback_round(h, reg, n, vms, stopped, tmpl, res, hl, "stopped", 0)

    t0 = time.monotonic()
    for k in running:
        _, _, js = h.request("POST", f"/v1/vms/{vms[k]}/start", {}, expect=(200,))
        reg.add_qemu(js.get("pid"))
    # A booted guest: its console says HS-GUEST-READY (bounded wait), then
    # --settle s more.
    deadline = time.monotonic() + p["boot_timeout"]
    while time.monotonic() < deadline and not all(console_ready(h, vms[k]) for k in running):
        time.sleep(0.2)
    booted = all(console_ready(h, vms[k]) for k in running)
    res["running_guests_boot_s"] = time.monotonic() - t0 if booted else None
    if not booted:
        log(f"  warning: the guests did not print HS-GUEST-READY within {p['boot_timeout']:g}s; "
            f"going on with guests still booting")
    log(f"\n== 2b. snapshot create, running VMs (TCG guests booted "
        f"{'in ' + format(res['running_guests_boot_s'], '.1f') + 's' if booted else '(not seen)'}, "
        f"then {p['settle']:g}s more; live: overlay made, added to QEMU, one transaction "
        f"switches): {n} per VM")
    time.sleep(p["settle"])
    snapshot_round(h, n, vms, running, tmpl, res, hl, "running")
    log(f"\n== 3b. rollback, running VMs (killed, disk rolled back, started again; 1 s between "
        f"rounds): {n} per VM")
    rollback_round(h, reg, n, vms, running, tmpl, res, hl, "running", 1.0)

    # Snapshot deletion (informational): merges a layer into the next.
    keys = stopped + running
    nd = min(p["deletes"], n)
    log(f"\n== snapshot delete (informational): the {nd} oldest per VM")
    hl.start_phase()
    dels = {k: [] for k in keys}
    for i in range(nd):
        for k in keys:
            t, _, js = h.request("DELETE", f"/v1/vms/{vms[k]}/snapshots/snap{i:02d}",
                                 timeout=300, expect=(200,))
            dels[k].append(t)
    for k in keys:
        put(res, f"snapshot_delete_{k[0]}_{k[1]}", dels[k])
        log(stat_line(f"delete snapshot, {k[0]} VM on {tmpl[k[1]]}",
                      res[f"snapshot_delete_{k[0]}_{k[1]}"]))
    report_log("snapshot_delete", hl.phase(), res)
    for k in keys:
        _, _, js = h.request("GET", f"/v1/vms/{vms[k]}")
        res[f"storage_{k[0]}_{k[1]}"] = js.get("storage")
        res[f"state_{k[0]}_{k[1]}"] = js.get("state")
    for k in running:
        h.request("POST", f"/v1/vms/{vms[k]}/stop", {"force": True}, timeout=60, expect=(200,))
    for nm in vms.values():
        h.request("DELETE", f"/v1/vms/{nm}")


def phase_fleet(h, reg, guest, p, res, tmpl, hl):
    nf, mem = p["fleet"], p["fleet_memory"]
    t1 = tmpl["1g"]
    log(f"\n== 4. {nf} VMs from {t1}: POST /v1/vms x{nf}, then POST start x{nf} "
        f"({mem} MiB, 1 vCPU, TCG), one call at a time")
    names = [f"f-{i:03d}" for i in range(nf)]
    hl.start_phase()
    defs, starts = [], []
    t0 = now()
    for nm in names:
        t, _, _ = h.request("POST", "/v1/vms", vm_spec(nm, guest, mem, t1), expect=(201,))
        defs.append(t)
    t_def = now() - t0
    layers_defined = sum(blocks_bytes(h.state_dir / "vms" / nm / "layers") for nm in names)
    t0 = now()
    for nm in names:
        t, _, js = h.request("POST", f"/v1/vms/{nm}/start", {}, timeout=180, expect=(200,))
        reg.add_qemu(js.get("pid"))
        if js.get("state") != "running":
            raise BenchError(f"start {nm}: state {js.get('state')}")
        starts.append(t)
    t_start = now() - t0
    res["fleet_define_s"] = t_def
    res["fleet_start_s"] = t_start
    res["fleet_total_s"] = t_def + t_start
    put(res, "fleet_define", defs)
    put(res, "fleet_start", starts)
    log(f"  define {nf}: {t_def:.2f}s (per call median {res['fleet_define']['median_ms']:.1f} ms, "
        f"max {res['fleet_define']['max_ms']:.1f})")
    log(f"  start  {nf}: {t_start:.2f}s (per call median {res['fleet_start']['median_ms']:.1f} ms, "
        f"max {res['fleet_start']['max_ms']:.1f})")
    log(f"  total: {t_def + t_start:.2f}s")
    k = max(1, nf // 5)
    res["fleet_start_first_ms"] = summarize(starts[:k])["median_ms"]
    res["fleet_start_last_ms"] = summarize(starts[-k:])["median_ms"]
    log(f"  start call median, first {k}: {res['fleet_start_first_ms']:.0f} ms; last {k} (with "
        f"{nf - k} guests booting or running): {res['fleet_start_last_ms']:.0f} ms")
    _, _, js = h.request("GET", "/v1/vms")
    running = sum(vm["state"] == "running" for vm in js["vms"] if vm["name"] in names)
    res["fleet_running"] = running
    if running != nf:
        log(f"  warning: hsd says {running} of {nf} running")
    report_log("fleet", hl.phase(), res)

    log(f"\n== 5. disk space of the {nf} clones")
    time.sleep(1.0)
    layers_running = sum(blocks_bytes(h.state_dir / "vms" / nm / "layers") for nm in names)
    vmdirs = sum(blocks_bytes(h.state_dir / "vms" / nm) for nm in names)
    timg = h.state_dir / "templates" / t1 / "image"
    tb = blocks_bytes(timg)
    full = nf * tb
    res["disk"] = {"layers_defined": layers_defined, "layers_running": layers_running,
                   "vm_dirs_running": vmdirs, "template_blocks": tb,
                   "template_apparent": timg.stat().st_size, "full_copies": full,
                   "ratio_full_over_layers": full / layers_running if layers_running else None,
                   "layers_over_full": layers_running / full if full else None}
    d = res["disk"]
    log(f"  {nf} clones' layers: {layers_defined / MIB:.2f} MiB after define, "
        f"{layers_running / MIB:.2f} MiB with the VMs running ({layers_running / nf / 1024:.0f} KiB "
        f"each); whole VM dirs {vmdirs / MIB:.2f} MiB")
    log(f"  {nf} full copies of {t1} ({tb / MIB:.0f} MiB allocated each): {full / MIB:.0f} MiB "
        f"(computed) -> {d['ratio_full_over_layers']:.0f}x more "
        f"(layers = {100 * d['layers_over_full']:.3f} % of full copies)")

    hl.start_phase()
    stops, dels = [], []
    for nm in names:
        t, _, _ = h.request("POST", f"/v1/vms/{nm}/stop", {"force": True}, timeout=60, expect=(200,))
        stops.append(t)
    report_log("fleet_stop", hl.phase(), res)

    # The same starts with {"paused": true}: QEMU is launched and answers,
    # but no guest runs, so the starts do not share the CPUs with N booting
    # guests (informational: how much of the start time above is that).
    log(f"\n== 4b. (informational) the same {nf} VMs started with {{\"paused\": true}} (no guest "
        f"CPU), one at a time")
    hl.start_phase()
    paused = []
    t0 = now()
    for nm in names:
        t, _, js = h.request("POST", f"/v1/vms/{nm}/start", {"paused": True}, timeout=180,
                             expect=(200,))
        reg.add_qemu(js.get("pid"))
        if js.get("state") != "paused":
            raise BenchError(f"start paused {nm}: state {js.get('state')}")
        paused.append(t)
    res["fleet_start_paused_s"] = now() - t0
    put(res, "fleet_start_paused", paused)
    log(f"  start paused {nf}: {res['fleet_start_paused_s']:.2f}s (per call median "
        f"{res['fleet_start_paused']['median_ms']:.1f} ms, max {res['fleet_start_paused']['max_ms']:.1f})")
    report_log("fleet_paused", hl.phase(), res)
    hl.start_phase()
    for nm in names:
        h.request("POST", f"/v1/vms/{nm}/stop", {"force": True}, timeout=60, expect=(200,))
    for nm in names:
        t, _, _ = h.request("DELETE", f"/v1/vms/{nm}")
        dels.append(t)
    put(res, "fleet_stop", stops)
    put(res, "fleet_delete", dels)
    log(f"  forced stop x{nf}: {sum(stops):.2f}s, DELETE x{nf}: {sum(dels):.2f}s")
    report_log("fleet_teardown", hl.phase(), res)


def phase_baselines(h, p, res, tmpl, base):
    n = p["reps"]
    bdir = base / "baseline"
    bdir.mkdir()
    log(f"\n== 6. baselines: `qemu-img create -f qcow2 -b T -F qcow2 overlay` run directly "
        f"({n} per template), the same with hsd's options, and `cp --reflink=never` of "
        f"{tmpl['1g']} (one run)")
    for lb, name in tmpl.items():
        timg = h.state_dir / "templates" / name / "image"
        plain, hsdlike = [], []
        vsize = res["templates"][lb]["api"].get("virtual_size")
        for i in range(n):
            ov = bdir / f"ov-{lb}-{i}.qcow2"
            plain.append(run_cmd([QEMU_IMG, "create", "-f", "qcow2", "-b", str(timg), "-F", "qcow2",
                                  str(ov)], 60, "qemu-img create overlay"))
            ov.unlink()
            # What hsd runs (daemon/storage.c run_create_layer): -q, the
            # size given, backing by relative name.
            hsdlike.append(run_cmd([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o",
                                    f"backing_file={timg},backing_fmt=qcow2", str(ov), str(vsize)],
                                   60, "qemu-img create overlay (hsd's options)"))
            ov.unlink()
        put(res, f"baseline_qemu_img_{lb}", plain)
        put(res, f"baseline_qemu_img_hsd_opts_{lb}", hsdlike)
        log(stat_line(f"qemu-img create -b {name}", res[f"baseline_qemu_img_{lb}"]))
        log(stat_line(f"qemu-img create -q -o backing_file=...,backing_fmt=qcow2 ... SIZE ({name})",
                      res[f"baseline_qemu_img_hsd_opts_{lb}"]))
    res["status_write_cost"] = summarize(atomic_write_cost(h.state_dir / ".fsync-probe", 30))
    c = res["status_write_cost"]
    log(f"  one fsync'd atomic file save on the state dir (write, fsync, rename, fsync dir; a clone "
        f"does 2 of disks.json, a snapshot 3, a rollback 3): median {c['median_ms']:.2f} ms, "
        f"p90 {c['p90_ms']:.2f} ms")
    shutil.rmtree(h.state_dir / ".fsync-probe", ignore_errors=True)
    timg = h.state_dir / "templates" / tmpl["1g"] / "image"
    dst = bdir / "copy.qcow2"
    t_cp = run_cmd(["cp", "--reflink=never", str(timg), str(dst)], 600, "cp")
    t_sync = run_cmd(["sync", str(dst)], 600, "sync")
    res["baseline_cp_1g_s"] = t_cp
    res["baseline_cp_1g_sync_s"] = t_sync
    res["baseline_cp_1g_blocks"] = blocks_bytes(dst)
    log(f"  cp --reflink=never {tmpl['1g']} ({blocks_bytes(dst) / MIB:.0f} MiB): {t_cp * 1000:.0f} ms "
        f"(+ {t_sync * 1000:.0f} ms to sync it to disk; the source was in the page cache)")
    dst.unlink()


# ------------------------------------------------------------------ report

def summary_rows(res, p, tmpl):
    rows = []

    def add(metric, med, p90, base, target, ok, unit="ms"):
        rows.append({"metric": metric, "median": med, "p90": p90, "baseline": base,
                     "unit": unit, "target": target, "pass": None if ok is None else bool(ok)})

    for lb in tmpl:
        s = res.get(f"clone_{lb}")
        b = res.get(f"baseline_qemu_img_{lb}")
        if s and s.get("n"):
            add(f"1. clone from {lb.upper()} template (POST /v1/vms)", s["median_ms"], s["p90_ms"],
                b["median_ms"] if b and b.get("n") else None, f"<= {TARGETS['clone_ms']:g} ms",
                s["median_ms"] <= TARGETS["clone_ms"])
    if res.get("clone_ratio_20g_1g") is not None:
        r = res["clone_ratio_20g_1g"]
        add("1. clone 20G / 1G (medians)", r, None, None,
            f"<= {TARGETS['clone_size_ratio']:g}", r <= TARGETS["clone_size_ratio"], unit="x")
    for kind in ("stopped", "running"):
        for lb in tmpl:
            s = res.get(f"snapshot_{kind}_{lb}")
            if s and s.get("n"):
                add(f"2. snapshot, {kind} VM, {lb.upper()}", s["median_ms"], s["p90_ms"], None,
                    f"<= {TARGETS['snapshot_ms']:g} ms", s["median_ms"] <= TARGETS["snapshot_ms"])
    for kind in ("stopped", "running"):
        for lb in tmpl:
            s = res.get(f"rollback_{kind}_{lb}_disk")
            if s and s.get("n"):
                add(f"3. rollback disk_seconds, {kind} VM, {lb.upper()}", s["median_ms"], s["p90_ms"],
                    None, f"<= {TARGETS['rollback_disk_ms']:g} ms",
                    s["median_ms"] <= TARGETS["rollback_disk_ms"])
    for lb in tmpl:
        s = res.get(f"rollback_running_{lb}_total")
        if s and s.get("n"):
            add(f"3. rollback total with restart, running, {lb.upper()}", s["median_ms"], s["p90_ms"],
                None, "-", None)
    nf = p["fleet"]
    if res.get("fleet_total_s") is not None:
        add(f"4. {nf} VMs: define x{nf}", res["fleet_define_s"], None, None, "-", None, unit="s")
        add(f"4. {nf} VMs: start x{nf}", res["fleet_start_s"], None, None, "-", None, unit="s")
        add(f"4. {nf} VMs: define + start", res["fleet_total_s"], None, None,
            f"<= {TARGETS['fleet_s']:g} s", res["fleet_total_s"] <= TARGETS["fleet_s"], unit="s")
    if res.get("fleet_start_paused_s") is not None:
        add(f"4. {nf} VMs: start x{nf} paused (no guest CPU)", res["fleet_start_paused_s"], None, None,
            "-", None, unit="s")
    d = res.get("disk")
    if d:
        add(f"5. disk: {nf} clones' layers", d["layers_running"] / MIB, None, d["full_copies"] / MIB,
            "-", None, unit="MiB")
        add(f"5. disk: full copies / layers", d["ratio_full_over_layers"], None, None, "-", None,
            unit="x")
    if res.get("baseline_cp_1g_s") is not None:
        add("6. cp --reflink=never 1G template (1 run)", res["baseline_cp_1g_s"] * 1000, None, None,
            "-", None)
    return rows


def print_table(rows, res, p):
    log("\n" + "=" * 110)
    log("SUMMARY (targets on the median; baseline: qemu-img create -b T run directly for clones, "
        "full copies for disk)")
    log("=" * 110)
    w = max(len(r["metric"]) for r in rows) if rows else 30
    log(f"{'metric':<{w}}  {'median':>9}  {'p90':>9}  {'baseline':>9}  {'unit':<4}  {'target':<10} result")
    log("-" * (w + 62))
    for r in rows:
        nd = 2 if r["unit"] in ("s", "x", "MiB") else 1
        if r["unit"] == "x" and r["median"] and r["median"] > 100:
            nd = 0
        res_s = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        log(f"{r['metric']:<{w}}  {fmt(r['median'], nd):>9}  {fmt(r['p90'], nd):>9}  "
            f"{fmt(r['baseline'], nd):>9}  {r['unit']:<4}  {r['target']:<10} {res_s}")
    log("-" * (w + 62))
    extra = []
    if res.get("define_plain"):
        extra.append(f"POST /v1/vms without disks (the API's own cost): median "
                     f"{res['define_plain']['median_ms']:.1f} ms, p90 {res['define_plain']['p90_ms']:.1f}")
    for lb in ("1g", "20g"):
        b = res.get(f"baseline_qemu_img_hsd_opts_{lb}")
        if b and b.get("n"):
            extra.append(f"qemu-img create with hsd's options ({lb}): median {b['median_ms']:.1f} ms")
    for lb in ("1g", "20g"):
        s = res.get(f"rollback_running_{lb}_client")
        if s and s.get("n"):
            extra.append(f"rollback of a running VM ({lb}), client wall: median {s['median_ms']:.1f} ms, "
                         f"p90 {s['p90_ms']:.1f}")
    if "running_guests_boot_s" in res:
        b = res["running_guests_boot_s"]
        extra.append("running VMs' guests (TCG) booted to HS-GUEST-READY in " +
                     (f"{b:.1f}s" if b is not None else "(not seen)") + " before the live snapshots")
    if res.get("fleet_start"):
        extra.append(f"fleet: start call median {res['fleet_start']['median_ms']:.1f} ms, max "
                     f"{res['fleet_start']['max_ms']:.1f}; define call median "
                     f"{res['fleet_define']['median_ms']:.1f} ms")
    if res.get("baseline_cp_1g_sync_s") is not None:
        extra.append(f"cp of the 1G template: {res['baseline_cp_1g_s'] * 1000:.0f} ms + sync "
                     f"{res['baseline_cp_1g_sync_s'] * 1000:.0f} ms")
    tm = res.get("templates") or {}
    for lb, t in tm.items():
        extra.append(f"template {t['name']}: {t['virtual_gib']} GiB virtual, {t['written_mib']} MiB "
                     f"written (0xab), {t['image_blocks'] / MIB:.0f} MiB allocated, import "
                     f"{t['import_s']:.1f}s")
    if res.get("status_write_cost", {}).get("n"):
        c = res["status_write_cost"]
        extra.append(f"one fsync'd file save on the state dir: median {c['median_ms']:.2f} ms, p90 "
                     f"{c['p90_ms']:.2f} ms")
    busy = {k: v.get("host_cpu_busy") for k, v in (res.get("hsd_log") or {}).items()}
    if busy:
        extra.append("host CPU busy by phase: " + ", ".join(
            f"{k} {100 * v:.0f}%" for k, v in busy.items() if v is not None))
    probs = sum(len(v.get("problems", [])) for v in (res.get("hsd_log") or {}).values())
    extra.append(f"hsd warnings/errors in the log during the measured phases: {probs}")
    if res.get("loadavg"):
        extra.append("load average (1/5/15 min) at start and end: " +
                     ", ".join("/".join(f"{x:.2f}" for x in v) for v in res["loadavg"].values() if v))
    for e in extra:
        log("  " + e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke: 4 reps, no 20 GiB template, 10 VMs in the fleet")
    ap.add_argument("--reps", type=int, help="clones per template (and qemu-img baselines)")
    ap.add_argument("--snap-reps", type=int, help="snapshots and rollbacks per VM (<= 30)")
    ap.add_argument("--fleet", type=int, help="VMs defined and started from one template")
    ap.add_argument("--fleet-memory", type=int, help="MiB per fleet VM (default 64)")
    ap.add_argument("--settle", type=float,
                    help="s a running VM idles after its guest booted, before its snapshots (default 3)")
    ap.add_argument("--boot-timeout", type=float, help="s to wait for HS-GUEST-READY (default 180)")
    ap.add_argument("--big-write-mib", type=int,
                    help="MiB written at the start of each GiB of the 20 GiB template (default 192)")
    ap.add_argument("--no-big", action="store_true", help="skip the 20 GiB template")
    ap.add_argument("--base", help="work dir (default /tmp/hss-PID; UNIX socket paths must stay short)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--output", help="JSON results file (default bench/results/storage-<timestamp>.json)")
    args = ap.parse_args()

    p = dict(QUICK if args.quick else FULL)
    for k in ("reps", "snap_reps", "fleet", "fleet_memory", "settle", "boot_timeout", "big_write_mib"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    if args.no_big:
        p["big"] = False
    if not 1 <= p["snap_reps"] <= 30:
        sys.exit("storage.py: --snap-reps must be 1..30 (a chain holds at most 40 layers)")
    if p["big_write_mib"] > 1024:
        sys.exit("storage.py: --big-write-mib is per GiB: at most 1024")
    need_files("storage.py", HSD, QEMU, QEMU_IMG, QEMU_IO)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outp = Path(args.output) if args.output else RESULTS / f"storage-{stamp}.json"
    base = new_workdir("storage.py", args.base, "hss")
    reg = Registry()
    res = {"loadavg": {"start": os.getloadavg()}}
    error = None
    tmpl = {}
    bin_before = binary_info(HSD)
    t_start = time.monotonic()

    catch_signals(p["budget"])
    log(f"hsd storage benchmark ({'quick' if args.quick else 'full'}): {HSD}, work dir {base}, "
        f"time budget {p['budget']}s")
    try:
        base.mkdir(parents=True)
        img = base / "img"
        img.mkdir()
        guest = build_guest()
        log(f"guest: {guest['kernel']} + {guest['initrd']}")
        extra = hsd_extra_args(guest) + ["--allowed-dir", str(img), "-v"]
        res["hsd_args"] = extra
        h = Hsd(base / "d", reg, extra)
        h.start()
        log(f"hsd pid {h.pid}: {' '.join(extra)}")
        hl = HsdLog(h)
        tmpl = make_templates(h, p, img, res, hl)
        h.check_alive()
        phase_clone(h, guest, p, res, tmpl, hl)
        h.check_alive()
        phase_snapshots(h, reg, guest, p, res, tmpl, hl)
        h.check_alive()
        phase_fleet(h, reg, guest, p, res, tmpl, hl)
        h.check_alive()
        phase_baselines(h, p, res, tmpl, base)
        h.check_alive()
        res["loadavg"]["end"] = os.getloadavg()
    except RUN_ERRORS as e:
        error = run_error(e)
    finally:
        with uninterrupted():
            collect_hsd_logs(reg, res, error)
            reg.cleanup(log)
            remove_workdir(base, args.keep, log)

    elapsed = time.monotonic() - t_start
    bin_after = binary_info(HSD)
    report_run_end(HSD, bin_before, error, res)
    rows = summary_rows(res, p, tmpl)
    if rows:
        print_table(rows, res, p)
    log(f"\ntotal run time: {elapsed:.1f}s")
    out = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "params": p, "targets": TARGETS,
        "host": host_info(qemu_img=version_line(QEMU_IMG)),
        "git": git_rev(), "hsd_binary": bin_before,
        "hsd_binary_changed_during_run": bin_after != bin_before,
        "elapsed_s": elapsed, "error": error, "summary": rows, "results": res,
    }
    write_results(outp, out)
    return exit_status(error, rows)


if __name__ == "__main__":
    sys.exit(main())
