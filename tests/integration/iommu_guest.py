# SPDX-License-Identifier: Apache-2.0
"""Run a host command inside a Linux guest that has a (virtual) IOMMU.

This host has no IOMMU and no /dev/vfio. The guest booted here does: QEMU's
intel-iommu (TCG, q35, `intel_iommu=on`), Debian's cloud kernel with the
vfio modules loaded (tests/guest/build-iommu-guest.sh, /init is
tests/guest/iommu-init). The guest sees the HOST's root file system (a
read-only virtiofs share, made writable with an overlay on tmpfs), so the
project's binaries, QEMU and python3 run there unchanged, against the
guest's kernel. The command runs as root in a chroot into that view;
`out_dir` is a second, writable share mounted at the same path inside,
so whatever the command writes there is on the host afterwards.

    from iommu_guest import run_in_iommu_guest, LONE_NIC
    rc, console = run_in_iommu_guest(["/bin/sh", "-c", "ls /dev/vfio"], 600, "/tmp/out")

CLI:  python3 tests/integration/iommu_guest.py [--timeout S] [--out DIR] -- CMD ARGS...
(prints the console, exits with the command's status).

Stdlib only. Every process is started and killed by its pid; every wait is
bounded; temp dirs and sockets are removed whatever happens.
"""
import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "tests" / "guest" / "build-iommu-guest.sh"
QEMU = os.environ.get("HS_IOMMU_QEMU", "/usr/bin/qemu-system-x86_64")
VIRTIOFSD = os.environ.get("HS_VIRTIOFSD", "/usr/lib/qemu/virtiofsd")

# ---- the guest's PCI devices (bus 0000:00; q35 has no bridges here) ----
# Test devices, fixed: tests rely on these addresses and groups.
LONE_NIC = "0000:00:03.0"    # virtio-net-pci alone in its slot: its own IOMMU
                             # group; bound to virtio-pci at boot
E1000E = "0000:00:04.0"      # e1000e: its own group; unbound (the cloud
                             # kernel has no e1000e driver)
MF_FN0 = "0000:00:06.0"      # a two-function slot (a GPU + its HDMI audio,
MF_FN1 = "0000:00:06.1"      # modelled by two virtio-net-pci, multifunction=on):
                             # both in ONE group (no ACS between functions)
ICH9_FUNCS = ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3")
                             # q35's ICH9 LPC, AHCI and SMBus: one shared group
                             # (1f.0 has no driver in this kernel, .2 neither
                             # (no AHCI), .3 none)
# q35 itself: 0000:00:00.0 host bridge (own group).
# The guest's own devices, keep tests away from them:
HOSTROOT_FS = "0000:00:10.0"  # vhost-user-fs-pci, tag "hostroot" (host /, ro)
HSOUT_FS = "0000:00:11.0"     # vhost-user-fs-pci, tag "hsout" (out_dir, rw)
# MAC addresses of the NICs (52:54:00:... is QEMU's prefix).
MACS = {LONE_NIC: "52:54:00:00:03:00", E1000E: "52:54:00:00:04:00",
        MF_FN0: "52:54:00:00:06:00", MF_FN1: "52:54:00:00:06:01"}

MEMORY_MIB = 2048
EXIT_MARKER = "HS-IOMMU-EXIT="
RUN_MARKER = "HS-IOMMU-RUN"


class GuestError(RuntimeError):
    """The guest did not report the command's exit status (build failure,
    QEMU/virtiofsd failure, crash, timeout). `.console` holds what it printed."""

    def __init__(self, msg, console=""):
        super().__init__(msg)
        self.console = console


class GuestTimeout(GuestError, TimeoutError):
    pass


class Result:
    def __init__(self):
        self.rc = None          # the command's exit status
        self.console = ""       # the whole serial console
        self.timings = {}       # seconds from QEMU's start: "run" (the command
                                # starts), "exit" (HS-IOMMU-EXIT), "total"
        self.groups = {}        # from HS-IOMMU-GROUPS: {group: [addr, ...]}


def build_guest(timeout=1200, env=None):
    """(kernel, initrd), building or reusing the cached guest. env: more
    variables for the builder (HS_IOMMU_GUEST_CACHE and
    HS_IOMMU_GUEST_EXTRA_MODULES make a variant). Raises GuestError (with
    the builder's stderr) when it cannot be built."""
    try:
        r = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        raise GuestError(f"building the IOMMU guest timed out after {timeout}s") from e
    if r.returncode != 0:
        raise GuestError("building the IOMMU guest failed:\n" + r.stderr[-3000:])
    vals = {}
    for line in r.stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            vals[k] = shlex.split(v)[0] if v else ""
    return vals["KERNEL"], vals["INITRD"]


def image_or_skip(env=None):
    """(kernel, initrd) for pytest, or a skip saying what the machine lacks.
    env: as for build_guest."""
    import pytest
    miss = missing_tools()
    if miss:
        pytest.skip("IOMMU guest: missing " + ", ".join(miss))
    try:
        return build_guest(env=env)
    except GuestError as e:
        pytest.skip(f"the IOMMU guest cannot be built (kernel package not reachable?): {e}")


def missing_tools():
    """What the runner needs and does not find ([] when all is there)."""
    return [t for t in (QEMU, VIRTIOFSD, shutil.which("unshare") or "unshare")
            if not os.access(t, os.X_OK)]


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _kill(proc, timeout=5):
    """SIGKILL a child we started (by its pid) and reap it, bounded."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _wait_path(path, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise GuestError(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise GuestError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _run_script(argv, env, cwd):
    q = shlex.quote
    lines = ["# written by iommu_guest.py: the command to run in the IOMMU guest"]
    for k, v in (env or {}).items():
        lines.append(f"export {k}={q(str(v))}")
    lines.append(f"cd {q(cwd)} 2>/dev/null || cd /")
    lines.append("exec " + " ".join(q(str(a)) for a in argv))
    return "\n".join(lines) + "\n"


def run(argv, timeout=900, out_dir=None, env=None, cwd=None, kernel=None, initrd=None,
        smp=1, extra_append="", echo=None):
    """Run argv in the IOMMU guest; returns a Result. out_dir (created if
    missing; a temp dir removed afterwards when None) is writable inside at
    the same path and receives console.log; env: extra variables for the
    command (it starts from a clean environment: PATH, HOME=/root, TERM,
    LANG, HS_OUT=out_dir, HS_IOMMU_GUEST=1); cwd: where it starts (default:
    the caller's cwd, else /). echo: a file object that receives the console
    as it comes. Raises GuestTimeout after `timeout` s (from QEMU's start),
    GuestError when the guest does not report an exit status."""
    if not argv:
        raise ValueError("argv is empty")
    miss = missing_tools()
    if miss:
        raise GuestError("missing: " + ", ".join(miss))
    if kernel is None or initrd is None:
        kernel, initrd = build_guest()
    tmp = Path(tempfile.mkdtemp(prefix="hs-iommu-"))
    own_out = out_dir is None
    out = Path(out_dir) if out_dir else tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    if any(c.isspace() for c in str(out)):
        raise ValueError(f"out_dir must not contain white space (kernel cmdline): {out}")
    procs = []
    logs = []
    res = Result()
    chunks = []
    try:
        (out / "hs-run.sh").write_text(_run_script(argv, env, cwd or os.getcwd()))
        try:
            (out / "hs-exit-code").unlink()
        except FileNotFoundError:
            pass
        # virtiofsd 1: the host's root, read-only. The daemon has no
        # read-only option: it exports a read-only bind mount of / made in a
        # private mount namespace (non-recursive: /proc, /sys, /dev and other
        # mounts of the host are not in it). sandbox=chroot: one process, so
        # killing its pid ends it (namespace mode forks a child).
        rootdir = tmp / "root"
        rootdir.mkdir()
        sock_root, sock_out = tmp / "hostroot.sock", tmp / "hsout.sock"
        vlog = open(tmp / "virtiofsd.log", "wb")
        logs.append(vlog)
        script = ('mount --bind / "$1" && mount -o remount,bind,ro "$1" && '
                  'exec "$3" --socket-path="$2" -o source="$1" -o cache=auto '
                  '-o sandbox=chroot -o log_level=warn')
        p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                              script, "sh", str(rootdir), str(sock_root), VIRTIOFSD],
                             stdin=subprocess.DEVNULL, stdout=vlog, stderr=vlog)
        procs.append(p)
        _wait_path(sock_root, p, 10, "virtiofsd (hostroot)")
        # virtiofsd 2: out_dir, writable.
        p = subprocess.Popen([VIRTIOFSD, f"--socket-path={sock_out}", "-o", f"source={out}",
                              "-o", "cache=none", "-o", "sandbox=chroot", "-o", "log_level=warn"],
                             stdin=subprocess.DEVNULL, stdout=vlog, stderr=vlog)
        procs.append(p)
        _wait_path(sock_out, p, 10, "virtiofsd (hsout)")

        mem = f"{MEMORY_MIB}M"
        append = f"console=ttyS0 intel_iommu=on quiet loglevel=4 hs.out={out} {extra_append}".strip()
        qargv = [
            QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", "tcg", "-machine", "q35,kernel-irqchip=split",
            # intel-iommu must come before the PCI devices it translates.
            "-device", "intel-iommu,intremap=on",
            "-smp", str(smp), "-m", mem,
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
            "-numa", "node,memdev=mem",
            "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-serial", "stdio",
            "-chardev", f"socket,id=hostroot,path={sock_root}",
            "-device", f"vhost-user-fs-pci,chardev=hostroot,tag=hostroot,addr={HOSTROOT_FS[-4:]}",
            "-chardev", f"socket,id=hsout,path={sock_out}",
            "-device", f"vhost-user-fs-pci,chardev=hsout,tag=hsout,addr={HSOUT_FS[-4:]}",
        ]
        # Test NICs: each on its own hub with nothing else on it (no host
        # network at all).
        for i, (addr, model, extra) in enumerate([
                (LONE_NIC, "virtio-net-pci", ""),
                (E1000E, "e1000e", ""),
                (MF_FN0, "virtio-net-pci", ",multifunction=on"),
                (MF_FN1, "virtio-net-pci", "")]):
            qargv += ["-netdev", f"hubport,id=tn{i},hubid={i}",
                      "-device", f"{model},netdev=tn{i},mac={MACS[addr]},addr={addr[-4:]}{extra}"]
        qlog = open(tmp / "qemu.log", "wb")
        logs.append(qlog)
        t0 = time.monotonic()
        q = subprocess.Popen(qargv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=qlog)
        procs.append(q)

        def reader():
            for raw in iter(q.stdout.readline, b""):
                line = raw.decode(errors="replace")
                chunks.append(line)
                if echo is not None:
                    echo.write(line)
                    echo.flush()
                s = line.strip()
                if s.startswith(RUN_MARKER) and "run" not in res.timings:
                    res.timings["run"] = time.monotonic() - t0
                elif s.startswith(EXIT_MARKER) and "exit" not in res.timings:
                    res.timings["exit"] = time.monotonic() - t0
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            q.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill(q)
            th.join(5)
            raise GuestTimeout(f"the IOMMU guest did not finish within {timeout}s",
                               "".join(chunks)) from None
        th.join(5)
        res.timings["total"] = time.monotonic() - t0
        res.console = "".join(chunks)
        for line in res.console.splitlines():
            s = line.strip()
            if s.startswith(EXIT_MARKER):
                res.rc = int(s[len(EXIT_MARKER):])
            elif s.startswith("HS-IOMMU-GROUPS "):
                for item in s.split()[1:]:
                    if "=" in item:
                        g, devs = item.split("=", 1)
                        res.groups[int(g)] = devs.split(",")
        if res.rc is None:
            qerr = (tmp / "qemu.log").read_text(errors="replace")
            verr = (tmp / "virtiofsd.log").read_text(errors="replace")
            raise GuestError(f"no {EXIT_MARKER} from the guest (QEMU status {q.returncode});"
                             f"\nqemu: {qerr[-2000:]}\nvirtiofsd: {verr[-2000:]}", res.console)
        return res
    finally:
        for p in reversed(procs):
            _kill(p)
        for p in procs:
            if p.stdout:
                p.stdout.close()
        for f in logs:
            f.close()
        if chunks and not own_out:
            try:
                (out / "console.log").write_text("".join(chunks), newline="")
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def run_pytest(tests, out_dir, timeout, kernel, initrd, env, smp=2):
    """pytest on `tests` (paths) inside the guest, from the project's root.
    Returns (Result, the test cases' names, [what did not pass: failures,
    errors and skips, one line each]); the names are None when pytest
    wrote no report. Prints the console's end and the timings."""
    import xml.etree.ElementTree as ET
    junit = Path(out_dir) / "junit.xml"
    argv = ["/usr/bin/python3", "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rs",
            f"--junitxml={junit}", *map(str, tests)]
    r = run(argv, timeout=timeout, out_dir=out_dir, kernel=kernel, initrd=initrd, smp=smp,
            env=env, cwd=str(ROOT))
    print(r.console[-20000:])
    print("timings:", r.timings)
    if not junit.exists():
        return r, None, []
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    names, bad = [], []
    for c in suite.findall("testcase"):
        names.append(c.get("name"))
        for kind in ("failure", "error", "skipped"):
            e = c.find(kind)
            if e is not None:
                bad.append(f"{c.get('name')}: {kind}: {(e.get('message') or '')[:300]}")
    print(f"in the IOMMU guest: {len(names)} tests, {len(bad)} not passed")
    return r, names, bad


def run_in_iommu_guest(argv, timeout=900, out_dir=None, env=None, **kw):
    """(rc, console_text): run(...) in short."""
    r = run(argv, timeout=timeout, out_dir=out_dir, env=env, **kw)
    return r.rc, r.console


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", help="writable dir shared with the guest (same path inside)")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="do not echo the console")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    # SIGTERM / SIGHUP: clean up (run's finally kills QEMU and virtiofsd).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, f: sys.exit(128 + n))
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command (usage: ... -- CMD ARGS...)")
    try:
        r = run(cmd, timeout=a.timeout, out_dir=a.out, smp=a.smp,
                echo=None if a.quiet else sys.stdout)
    except GuestError as e:
        if a.quiet:
            sys.stdout.write(e.console)
        print(f"iommu_guest: {e}", file=sys.stderr)
        return 125
    if a.quiet:
        sys.stdout.write(r.console)
    t = r.timings
    print(f"iommu_guest: rc={r.rc} boot-to-command={t.get('run', 0):.1f}s "
          f"command={t.get('exit', 0) - t.get('run', 0):.1f}s total={t['total']:.1f}s",
          file=sys.stderr)
    return r.rc


if __name__ == "__main__":
    sys.exit(main())
