# SPDX-License-Identifier: Apache-2.0
"""Helpers for the benchmarks (bench/run.py, storage.py, density.py and
load.py): the frame of a run (signals and time budget, a clean-up nothing
interrupts, the results file and what it says of the host and the build),
statistics, a minimal HTTP/1.1 client over a UNIX socket (less client-side
overhead than http.client, so the latencies are mostly hsd's), an hsd
process wrapper, the test guest, a raw QEMU launcher mirroring what hsd
does, /proc readers, and a registry of every process started so that they
can all be cleaned up by pid.

Python 3 standard library only."""
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("HS_BUILD_DIR", ROOT / "build"))
HSD = BUILD / "daemon" / "hsd"
HSCTL = BUILD / "cli" / "hsctl"
QEMU = "/usr/bin/qemu-system-x86_64"


class BenchError(Exception):
    pass


def now():
    return time.perf_counter()


def wait_for(pred, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def rounds(h, n, kinds):
    """n rounds of measures of each of `kinds`, interleaved: yields (i, the
    kinds in round i's order), after checking that hsd (h) still runs. The
    kinds take turns at going first, so they share the machine's noise."""
    for i in range(n):
        h.check_alive()
        k = i % len(kinds)
        yield i, kinds[k:] + kinds[:k]


# ---------------------------------------------------------------- a run

class Interrupted(Exception):
    """A signal, or the end of the run's time budget (see catch_signals)."""


def log(msg=""):
    print(msg, flush=True)


# What ends a run early: it is reported as the run's error, and the clean-up
# and the results file still follow.
RUN_ERRORS = (Interrupted, KeyboardInterrupt, BenchError, OSError, subprocess.TimeoutExpired,
              ValueError, KeyError)


def run_error(e):
    """The words for one of RUN_ERRORS."""
    if isinstance(e, (Interrupted, KeyboardInterrupt)):
        return f"interrupted: {e or 'Ctrl-C'}"
    return f"{type(e).__name__}: {e}"


def catch_signals(budget):
    """From now on SIGINT, SIGTERM and SIGHUP raise Interrupted, and so does
    SIGALRM once `budget` seconds have passed."""
    def on_signal(sig, frame):
        raise Interrupted(f"signal {signal.Signals(sig).name}")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(int(budget))


@contextlib.contextmanager
def uninterrupted():
    """For the clean-up, which nothing may interrupt (it is bounded on its
    own): the budget's alarm is off, and SIGINT, SIGTERM and SIGHUP wait
    until the block ends."""
    signal.alarm(0)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def need_files(prog, *paths, hint=""):
    """Exits the script `prog` if one of the paths is missing."""
    for f in paths:
        if not Path(f).exists():
            sys.exit(f"{prog}: {f} is missing{hint}")


def new_workdir(prog, given, prefix):
    """The run's work dir: `given` (--base) or /tmp/PREFIX-PID, which must
    not exist yet (made by the caller, inside its clean-up's reach). Short:
    UNIX socket paths live under it."""
    base = Path(given or f"/tmp/{prefix}-{os.getpid()}")
    if base.exists():
        sys.exit(f"{prog}: {base} exists; pick another --base")
    return base


def write_results(path, out):
    """The results file, written whole or not at all (a temporary file
    renamed over it); says where it is."""
    outp = Path(path)
    outp.parent.mkdir(parents=True, exist_ok=True)
    tmp = outp.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
    tmp.replace(outp)
    log(f"results: {outp}")


def exit_status(error, rows):
    """A run's exit status: 2 it failed (error), 1 a target of the summary
    rows was missed, 0 all were met."""
    if error:
        return 2
    return 1 if any(r["pass"] is False for r in rows) else 0


def version_line(prog):
    """The first line `prog --version` prints, or None."""
    lines = subprocess.run([prog, "--version"], capture_output=True, text=True,
                           timeout=30).stdout.splitlines()
    return lines[0] if lines else None


def host_info(**more):
    """What the results say of the host, with `more`."""
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), **more}


def git_rev():
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        d = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() + ("-dirty" if d.stdout.strip() else "")
    except Exception:
        return None


def binary_info(path):
    try:
        data = Path(path).read_bytes()
        st = Path(path).stat()
        return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
                "mtime": datetime.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")}
    except OSError:
        return None


# ---------------------------------------------------------------- statistics

def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarize(values):
    """Seconds in, a dict of milliseconds out."""
    if not values:
        return {"n": 0}
    ms = [x * 1000.0 for x in values]
    return {
        "n": len(ms),
        "min_ms": min(ms),
        "median_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


# ---------------------------------------------------------------- processes

def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def kill_and_wait(pid, timeout=5.0, sig=signal.SIGKILL, reap=False):
    """Signals one process by pid and waits (bounded) until it is gone.
    reap: it is our child, so waitpid() it."""
    try:
        if sig == signal.SIGKILL:
            os.kill(pid, signal.SIGCONT)
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return True
            except ChildProcessError:
                reap = False
        if not pid_alive(pid):
            return True
        time.sleep(0.01)
    return not pid_alive(pid)


def proc_cpu_s(pid):
    """User + system CPU time of a process in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def qemu_in_dir(pid, base):
    """A QEMU whose argv, or one of its open files (qemu.log, console.log:
    hsd may pass them as fds), names a path under `base`."""
    argv = proc_cmdline(pid)
    if not argv or b"qemu-system" not in argv[0]:
        return False
    marker = str(base).rstrip("/") + "/"
    return any(marker.encode() in a for a in argv) or has_file_under(pid, base)


def has_file_under(pid, base):
    """Whether one of the process's open files is under `base`."""
    marker = str(base).rstrip("/") + "/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(marker):
                return True
        except OSError:
            pass
    return False


def proc_starttime(pid):
    """Field 22 of /proc/PID/stat: with the pid, a process's identity."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Registry:
    """Every process this run started, or that hsd started for it, by pid.
    cleanup() kills what is left, each by its pid. For pids we did not fork
    ourselves, it first checks that the pid is still the same process (start
    time recorded when hsd reported it) and a QEMU of our hsd's work dir. As
    a safety net it also looks for QEMUs of an hsd's work dir that hsd never
    reported (orphans: an hsd bug), and reports and kills them."""

    def __init__(self):
        self.hsds = []              # Hsd objects
        self.raw_children = set()   # raw QEMUs we spawned (our children)
        self.hsd_qemus = {}         # pid -> start time, QEMUs reported by hsd

    def add_qemu(self, pid):
        if pid and int(pid) not in self.hsd_qemus:
            st = proc_starttime(int(pid))
            if st is not None:
                self.hsd_qemus[int(pid)] = st

    def _ours(self, pid, starttime):
        """Still the process hsd reported (a pidfile may be stale, its pid
        reused), and a QEMU of one of our hsds."""
        if proc_starttime(pid) != starttime:
            return False
        return any(qemu_in_dir(pid, h.base) for h in self.hsds)

    def _collect(self):
        for h in self.hsds:
            try:
                h.collect_qemu_pids(self)
            except Exception:
                pass

    def cleanup(self, log=print):
        self._collect()
        for h in self.hsds:
            h.terminate(log)
        self._collect()  # pidfiles of starts hsd did just before it exited
        for pid in sorted(self.raw_children):
            if not kill_and_wait(pid, reap=True):
                log(f"cleanup: raw QEMU pid {pid} did not die")
        self.raw_children.clear()
        left = 0
        for pid, st in sorted(self.hsd_qemus.items()):
            if pid_alive(pid) and self._ours(pid, st):
                left += 1
                if not kill_and_wait(pid):
                    log(f"cleanup: QEMU pid {pid} did not die")
        if left:
            log(f"cleanup: killed {left} QEMU(s) left running by hsd")
        orphans = [int(d) for d in os.listdir("/proc")
                   if d.isdigit() and int(d) not in self.hsd_qemus
                   and any(qemu_in_dir(int(d), h.base) for h in self.hsds)]
        for pid in orphans:
            kill_and_wait(pid)
        if orphans:
            log(f"cleanup: WARNING: {len(orphans)} QEMU(s) that hsd did not report were "
                f"still running (killed): {orphans}")
        self.hsd_qemus.clear()


def remove_workdir(base, keep=False, log=print):
    """The end of a run, after Registry.cleanup(): the work dir goes, unless
    it is to be kept."""
    if keep:
        log(f"work dir kept: {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- HTTP

class HttpError(BenchError):
    pass


class RawHttp:
    """HTTP/1.1 over a UNIX socket, Content-Length framed responses only
    (what hsd sends for everything but streams and upgrades)."""

    def __init__(self, path, timeout=30.0):
        self.path = path
        self.timeout = timeout
        self.sock = None
        self.buf = b""

    def connect(self):
        deadline = time.monotonic() + self.timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
                break
            except BlockingIOError:
                # A full listen backlog answers EAGAIN on a UNIX socket.
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
            except BaseException:
                s.close()
                raise
        self.sock = s
        self.buf = b""

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed by hsd")
        self.buf += chunk

    def request(self, method, target, body=None, close=False):
        if self.sock is None:
            self.connect()
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\nHost: hsd\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        if close:
            head += "Connection: close\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + data)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        hdr, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = hdr.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" not in headers:
            raise HttpError(f"{method} {target}: no Content-Length in the answer")
        n = int(headers["content-length"])
        self.buf = rest
        while len(self.buf) < n:
            self._fill()
        payload, self.buf = self.buf[:n], self.buf[n:]
        if close or headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload


def timed_request(sock_path, method, target, body=None, timeout=60.0):
    """One request on a new connection: (seconds until the answer, connect
    included; status; the answer's bytes)."""
    c = RawHttp(sock_path, timeout)
    try:
        t0 = now()
        st, payload = c.request(method, target, body, close=True)
        t = now() - t0
    finally:
        c.close()
    return t, st, payload


def timed_api(sock_path, method, target, body=None, timeout=60.0, expect=(200, 201)):
    """timed_request, its status checked against `expect` (None: any) and
    its answer decoded: (seconds, status, JSON answer)."""
    t, st, payload = timed_request(sock_path, method, target, body, timeout)
    js = json.loads(payload) if payload else None
    if expect and st not in expect:
        raise HttpError(f"{method} {target}: HTTP {st}: {payload[:400]!r}")
    return t, st, js


def api(sock_path, method, target, body=None, timeout=60.0, expect=(200, 201)):
    """timed_api without the time: (status, JSON answer)."""
    _, st, js = timed_api(sock_path, method, target, body, timeout, expect)
    return st, js


# ---------------------------------------------------------------- hsd

class Hsd:
    """An hsd of the bench's. prefix: a command hsd runs under (`ip netns
    exec NS`, which execs it: the pid stays hsd's); binary: another hsd
    than the build's (a copy that a rebuild does not touch)."""

    def __init__(self, base, registry, extra_args=(), prefix=(), binary=None):
        self.base = Path(base)
        self.extra_args = list(extra_args)
        self.prefix = list(prefix)
        self.binary = binary
        self.state_dir = self.base / "state"
        self.run_dir = self.base / "run"
        self.socket = str(self.run_dir / "hsd.sock")
        self.log_path = self.base / "hsd.log"
        self.proc = None
        self.log = None
        registry.hsds.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=15.0):
        self.base.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(self.binary or HSD), "--state-dir", str(self.state_dir),
             "--run-dir", str(self.run_dir), *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise BenchError(f"hsd exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                return api(self.socket, "GET", "/v1", timeout=1)[0] == 200
            except OSError:
                return False
        wait_for(up, timeout, "hsd to answer on its socket")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError(f"hsd died (status {self.proc.returncode}); log tail:\n"
                             f"{self.log_text()[-2000:]}")

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def collect_qemu_pids(self, registry):
        vms = self.run_dir / "vms"
        if vms.is_dir():
            for pf in vms.glob("*/qemu.pid"):
                try:
                    registry.add_qemu(int(pf.read_text().strip()))
                except (ValueError, OSError):
                    pass
        if self.alive():
            try:
                _, js = api(self.socket, "GET", "/v1/vms", timeout=3)
                for vm in js["vms"]:
                    registry.add_qemu(vm.get("pid"))
            except Exception:
                pass

    def terminate(self, log=print):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"cleanup: hsd pid {self.proc.pid} ignored SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(5)
        if self.log:
            self.log.close()
            self.log = None

    def request(self, method, target, body=None, timeout=60.0, expect=(200, 201)):
        """timed_api on this hsd: (seconds, status, JSON answer)."""
        return timed_api(self.socket, method, target, body, timeout, expect)

    def hsctl(self, *args, timeout=120.0):
        return subprocess.run([str(HSCTL), "--socket", self.socket, *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)


def console_has(path, text):
    """A console log (of a VM of hsd's or of a raw QEMU) holds text."""
    try:
        with open(path, "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def console_ready(h, name):
    """hsd's VM `name` has printed the test guest's HS-GUEST-READY."""
    return console_has(h.state_dir / "vms" / name / "console.log", "HS-GUEST-READY")


def build_guest():
    """Builds (or finds cached) the project's test guest: kernel + initrd."""
    script = ROOT / "tests" / "guest" / "build-guest.sh"
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BenchError(f"building the test guest failed:\n{r.stderr[-3000:]}")
    out = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    return {"kernel": out["KERNEL"], "initrd": out["INITRD"]}


def hsd_extra_args(guest):
    """Options this hsd build needs to run the test guest: builds that
    confine VM files to allowed directories get the guest's directory."""
    r = subprocess.run([str(HSD), "--help"], capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    args = []
    if "--allowed-dir" in out:
        args += ["--allowed-dir", os.path.dirname(guest["kernel"])]
        if os.path.dirname(guest["initrd"]) != os.path.dirname(guest["kernel"]):
            args += ["--allowed-dir", os.path.dirname(guest["initrd"])]
    return args


# ---------------------------------------------------------------- /proc

def proc_memory(pid):
    """VmRSS/VmHWM/RssAnon/RssFile from status, Pss* from smaps_rollup, in KiB;
    plus the number of open fds."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "VmData"):
                out[k] = int(v.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Private_Clean"):
                out[k] = int(v.split()[0])
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


# ---------------------------------------------------------------- raw QEMU

def hsd_exec_line(qemu_log):
    """The last command line hsd logged in a VM's qemu.log ("--- start T ---"
    then the shell-quoted argv)."""
    lines = Path(qemu_log).read_text(errors="replace").splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("--- start ") and i + 1 < len(lines):
            return lines[i + 1]
    raise BenchError(f"no exec line in {qemu_log}")


def raw_argv(name, memory, kernel, initrd, cmdline, serial_log, sandbox=True):
    """The argv hsd builds (daemon/argv.c) for a 1-vCPU TCG guest with a
    kernel, an initrd and one user NIC: -S, -nodefaults, q35 + TCG, QMP and
    serial on listening sockets passed as fds 3 and 4, ... Built here rather
    than copied from hsd's log so that the baseline does not move when hsd's
    launch mechanics change; run.py reports how hsd's own argv differs."""
    argv = [QEMU, "-name", f"guest={name},debug-threads=on", "-nodefaults", "-no-user-config",
            "-S", "-no-shutdown", "-machine", "q35,accel=tcg", "-m", f"{memory}M", "-smp", "1",
            "-display", "none"]
    if sandbox:
        argv += ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    argv += ["-chardev", "socket,id=hs-qmp,fd=3,server=on,wait=off",
             "-mon", "chardev=hs-qmp,mode=control",
             "-chardev", f"socket,id=hs-serial0,fd=4,server=on,wait=off,logfile={serial_log},logappend=on",
             "-serial", "chardev:hs-serial0",
             "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
             "-netdev", "user,id=hs-net0",
             "-device", "virtio-net-pci,netdev=hs-net0,id=net0,mac=52:54:00:12:34:56"]
    return argv


def argv_option_diff(hsd_argv, raw):
    """Options (words starting with '-') in one argv and not the other."""
    def opts(v):
        out = {}
        for a in v[1:]:
            if a.startswith("-") and not a[1:2].isdigit():
                out[a] = out.get(a, 0) + 1
        return out
    a, b = opts(hsd_argv), opts(raw)
    only_hsd = sorted(k for k in a if a[k] > b.get(k, 0))
    only_raw = sorted(k for k in b if b[k] > a.get(k, 0))
    return only_hsd, only_raw


def _high_fd(fd):
    """A CLOEXEC duplicate >= 10, so that posix_spawn's dup2 onto 3/4 cannot
    be a no-op that keeps CLOEXEC set."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def unix_listen(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    return s


class LineReader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("QMP: timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("QMP: connection closed by QEMU")
            self.buf += chunk
        ln, _, self.buf = self.buf.partition(b"\n")
        return json.loads(ln)

    def reply(self, deadline):
        """The next command reply, skipping events."""
        while True:
            m = self.line(deadline)
            if "return" in m:
                return m
            if "error" in m:
                raise BenchError(f"QMP error: {m['error']}")


class RawQemu:
    """One QEMU started the way hsd starts it: listening QMP and serial
    sockets bound first and passed as fds 3 and 4, stdin /dev/null,
    stdout/stderr to a log, new session, default signal dispositions; then
    connect, greeting, qmp_capabilities, cont."""

    def __init__(self, argv, run_dir, registry):
        self.argv = argv
        self.dir = Path(run_dir)
        self.registry = registry
        self.pid = None
        self.qmp = None

    def start(self, timeout=30.0):
        """Returns seconds from spawn to the 'cont' reply."""
        self.dir.mkdir(parents=True, exist_ok=True)
        qpath, spath = str(self.dir / "qmp.sock"), str(self.dir / "console.sock")
        ql, sl = unix_listen(qpath), unix_listen(spath)
        qfd, sfd = _high_fd(ql.fileno()), _high_fd(sl.fileno())
        logfd = os.open(self.dir / "qemu.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        logfd2 = _high_fd(logfd)
        deadline = time.monotonic() + timeout
        try:
            t0 = now()
            self.pid = os.posix_spawn(
                self.argv[0], self.argv, os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDWR, 0),
                    (os.POSIX_SPAWN_DUP2, logfd2, 1),
                    (os.POSIX_SPAWN_DUP2, logfd2, 2),
                    (os.POSIX_SPAWN_DUP2, qfd, 3),
                    (os.POSIX_SPAWN_DUP2, sfd, 4),
                ],
                setsid=True, setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM))
            self.registry.raw_children.add(self.pid)
            # Only QEMU holds the listeners from now on: if it dies, our
            # connection is reset instead of waiting for the deadline.
            for fd in (qfd, sfd, logfd2):
                os.close(fd)
            qfd = sfd = logfd2 = None
            ql.close()
            sl.close()
            # Like hsd: connect right after the fork, before QEMU accepts.
            q = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            q.settimeout(timeout)
            q.connect(qpath)
            self.qmp = q
            rd = LineReader(q)
            greeting = rd.line(deadline)
            if "QMP" not in greeting:
                raise BenchError(f"QMP: unexpected greeting {greeting}")
            q.sendall(b'{"execute":"qmp_capabilities"}\r\n')
            rd.reply(deadline)
            q.sendall(b'{"execute":"cont"}\r\n')
            rd.reply(deadline)
            t1 = now()
        except (OSError, BenchError) as e:
            tail = ""
            try:
                tail = (self.dir / "qemu.log").read_text(errors="replace")[-500:]
            except OSError:
                pass
            raise BenchError(f"raw QEMU start failed: {e}; qemu.log: {tail}") from e
        finally:
            for fd in (qfd, sfd, logfd, logfd2):
                if fd is not None:
                    os.close(fd)
            ql.close()
            sl.close()
        return t1 - t0

    def stop(self, timeout=10.0):
        """SIGTERM, then wait until it is reaped. Returns seconds."""
        pidfd = os.pidfd_open(self.pid)
        try:
            t0 = now()
            os.kill(self.pid, signal.SIGTERM)
            r, _, _ = select.select([pidfd], [], [], timeout)
            if not r:
                raise BenchError(f"raw QEMU pid {self.pid} did not exit within {timeout}s of SIGTERM")
            os.waitpid(self.pid, 0)
            t1 = now()
        finally:
            os.close(pidfd)
        self.registry.raw_children.discard(self.pid)
        if self.qmp:
            self.qmp.close()
            self.qmp = None
        return t1 - t0


# ---------------------------------------------------------------- extras

def atomic_write_cost(dirpath, n=20):
    """What hsd does per status save (hs_write_file_atomic): write a temp
    file, fsync it, rename it over, fsync the directory. Seconds each."""
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    out = []
    try:
        for i in range(n):
            t0 = now()
            fd = os.open(d / ".status.json.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, b'{"exit_reason": "", "pid": %d, "state": "running"}\n' % i)
            os.fsync(fd)
            os.rename(d / ".status.json.tmp", d / "status.json")
            os.fsync(dfd)
            os.close(fd)
            out.append(now() - t0)
    finally:
        os.close(dfd)
    return out


class Prober(threading.Thread):
    """GET /v1 over one keep-alive connection every `interval` seconds, in
    the background: how long hsd's single-threaded loop leaves a trivial
    request waiting while it does other work."""

    def __init__(self, sock_path, interval=0.002):
        super().__init__(daemon=True)
        self.sock_path = sock_path
        self.interval = interval
        self.samples = []
        self.error = None
        self._stop_ev = threading.Event()

    def run(self):
        c = RawHttp(self.sock_path, timeout=30)
        try:
            while not self._stop_ev.is_set():
                t0 = now()
                st, _ = c.request("GET", "/v1")
                self.samples.append(now() - t0)
                if st != 200:
                    raise HttpError(f"GET /v1: HTTP {st}")
                self._stop_ev.wait(self.interval)
        except Exception as e:  # reported by the caller
            self.error = e
        finally:
            c.close()

    def finish(self, timeout=35):
        self._stop_ev.set()
        self.join(timeout)
        return self.samples


def collect_hsd_logs(reg, res, error):
    """After a run: how long each hsd's log got, its warnings and errors,
    and its tail when the run failed (into res)."""
    for hh in reg.hsds:
        txt = hh.log_text()
        res["hsd_log_lines"] = txt.count("\n")
        res["hsd_log_problems_all"] = [ln for ln in txt.splitlines()
                                       if ln[:3] in ("<0>", "<1>", "<2>", "<3>", "<4>")][:200]
        if error:
            res["hsd_log_tail"] = txt[-4000:]


def report_run_end(hsd_path, bin_before, error, res):
    """The notes every benchmark prints at its end."""
    if binary_info(hsd_path) != bin_before:
        log(f"\nnote: {hsd_path} was rebuilt during the run; this run's hsd (started once) "
            f"kept the build it was started from")
    if error:
        log(f"\nERROR: {error}")
        if res.get("hsd_log_tail"):
            log("hsd log tail:\n" + res["hsd_log_tail"][-1500:])
