# SPDX-License-Identifier: Apache-2.0
"""Fixtures for integration tests: a real hsd (in temporary state and run
dirs), the real hsctl, real QEMU, and the project's test guest.

Every process a test starts is cleaned up by its pid: hsd by the pid we
spawned, QEMUs by the pids hsd reports and the pidfiles in our own run dir.
Every wait is bounded."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("HS_BUILD_DIR", ROOT / "build"))
HSD = BUILD / "daemon" / "hsd"
HSCTL = BUILD / "cli" / "hsctl"


def wait_for(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes. (A process reaped between the
    # kill and the read: ENOENT at the open, or ESRCH at the read.)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_pid(pid, timeout=5):
    """SIGKILL a process by pid and wait (bounded) until it is gone."""
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)


def proc_argv(pid):
    """A process's argv as bytes ([] once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def qemu_pids_of(hsd):
    """Every live QEMU of this hsd (by pid), orphans included: its argv or
    one of its open files (its stderr is the VM's qemu.log under the state
    dir; console.log, which hsd may pass as an fd) is under the hsd's work
    dir."""
    pids, marker = set(), str(hsd.base) + "/"
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        argv = proc_argv(d)
        if not argv or not argv[0].endswith(b"qemu-system-x86_64"):
            continue
        ours = any(marker.encode() in a for a in argv)
        if not ours:
            try:
                ours = any(os.readlink(f"/proc/{d}/fd/{fd}").startswith(marker)
                           for fd in os.listdir(f"/proc/{d}/fd"))
            except OSError:
                pass
        if ours and pid_alive(int(d)):
            pids.add(int(d))
    return pids


CGROUP2 = None
for _line in open("/proc/self/mountinfo"):
    _f = _line.split(" - ")
    if len(_f) == 2 and _f[1].split()[0] == "cgroup2":
        CGROUP2 = _f[0].split()[4]
        break


def remove_cgroups(name):
    """The test hsd's cgroup base (hs-test/NAME), bottom up (empty groups
    only: rmdir is all cgroupfs allows)."""
    if not CGROUP2:
        return
    top = os.path.join(CGROUP2, "hs-test", name)
    # A QEMU killed a moment ago may still be leaving its group (EBUSY):
    # try again for a few seconds.
    deadline = time.monotonic() + 5
    while os.path.isdir(top):
        for root, dirs, _ in os.walk(top, topdown=False):
            for d in dirs:
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass
        try:
            os.rmdir(top)
        except OSError:
            if time.monotonic() > deadline:
                print(f"cgroup {top} left behind: not empty")
                return
            time.sleep(0.1)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("hsd", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Hsd:
    def __init__(self, base, extra_args=(), prefix=()):
        self.base = Path(base)
        # HS_HSD_WRAPPER: e.g. "strace -o /tmp/x" to run hsd under a tool.
        self.prefix = list(prefix) + os.environ.get("HS_HSD_WRAPPER", "").split()
        self.state_dir = self.base / "state"
        self.run_dir = self.base / "run"
        self.socket = str(self.run_dir / "hsd.sock")
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = self.base / "hsd.log"
        self.qemu_pids = set()

    # -- process --
    def start(self, timeout=15):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(HSD), "--state-dir", str(self.state_dir), "--run-dir", str(self.run_dir),
             *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers() or self._died(), timeout, "hsd to listen")
        assert self.proc.poll() is None, f"hsd exited: {self.log_text()}"
        return self

    def _died(self):
        return self.proc.poll() is not None

    def _answers(self):
        try:
            return self.get("/v1", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.remember_qemu_pids()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def kill9(self):
        self.stop(signal.SIGKILL)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def remember_qemu_pids(self):
        vms = self.run_dir / "vms"
        if vms.is_dir():
            for pf in vms.glob("*/qemu.pid"):
                try:
                    self.qemu_pids.add(int(pf.read_text().strip()))
                except (ValueError, OSError):
                    pass
        try:
            if self.proc and self.proc.poll() is None:
                for vm in self.json("GET", "/v1/vms", timeout=5)["vms"]:
                    if vm["pid"]:
                        self.qemu_pids.add(vm["pid"])
        except Exception:
            pass

    def cleanup(self):
        self.remember_qemu_pids()
        if self.proc and self.proc.poll() is None:
            # SIGTERM, so that a sanitizer build reports leaks at exit.
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()
        for pid in self.qemu_pids:
            kill_pid(pid)
        remove_cgroups(self.base.name)

    # -- API --
    def request(self, method, path, body=None, timeout=60, raw_body=None, headers=None):
        c = UnixHTTPConnection(self.socket, timeout=timeout)
        try:
            data = raw_body if raw_body is not None else (
                json.dumps(body).encode() if body is not None else None)
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            hdrs.update(headers or {})
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            text = r.read()
            try:
                js = json.loads(text) if text else None
            except ValueError:
                js = None
            return r.status, js, text
        finally:
            c.close()

    def get(self, path, timeout=30):
        return self.request("GET", path, timeout=timeout)

    def json(self, method, path, body=None, timeout=60, expect=(200, 201)):
        st, js, text = self.request(method, path, body, timeout=timeout)
        assert st in expect, f"{method} {path}: HTTP {st}: {text!r}"
        return js

    def vm(self, name):
        return self.json("GET", f"/v1/vms/{name}")

    def state(self, name):
        return self.vm(name)["state"]

    def wait_state(self, name, state, timeout=30):
        return wait_for(lambda: self.state(name) == state, timeout, f"{name} to be {state}")

    # -- CLI --
    def hsctl(self, *args, timeout=120, input=None, check=False):
        r = subprocess.run([str(HSCTL), "--socket", self.socket, *args], capture_output=True,
                           text=True, timeout=timeout, input=input)
        if check:
            assert r.returncode == 0, f"hsctl {args}: rc={r.returncode} {r.stderr}"
        return r

    def console_wait(self, name, text, timeout=60, replay=True):
        args = ["console", name, "--wait-for", text, "--timeout", str(timeout)]
        if not replay:
            args.append("--no-replay")
        r = self.hsctl(*args, timeout=timeout + 10, input="")
        assert r.returncode == 0, f"'{text}' not seen on {name}'s console: {r.stderr}\n{r.stdout[-2000:]}"
        return r.stdout

    def create_guest(self, guest, name, append="", memory=256, accel="tcg", extra=()):
        r = self.hsctl("create", name, "--memory", str(memory), "--accel", accel,
                       "--kernel", guest["kernel"], "--initrd", guest["initrd"],
                       "--append", f"console=ttyS0 {append}".strip(), *extra)
        assert r.returncode == 0, r.stderr
        return name


def guest_run(h, name, cmd, tag, timeout=60):
    """Runs cmd in the test guest's serial shell; returns the console output
    up to the end marker (the marker as printed differs from the command
    line echoed back)."""
    r = h.hsctl("console", name, "--no-replay", "--wait-for", f"HSQ-{tag}-done", "--timeout",
                str(timeout), input=f"{cmd}; echo HSQ-{tag}-don$(echo e)\n",
                timeout=timeout + 10)
    assert r.returncode == 0, f"{cmd}: {r.stderr}{r.stdout[-1500:]}"
    return r.stdout


def guest_script(name, what, timeout):
    """Runs tests/guest/NAME, which builds `what` (a test guest) or finds it
    in its cache, and returns the KEY=VALUE lines it prints as a dict, each
    value unquoted (the scripts quote them with printf %q). The test fails
    if the script does."""
    script = ROOT / "tests" / "guest" / name
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"building {what} failed:\n{r.stderr[-3000:]}")
    out = {}
    for line in r.stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            # printf %q quoting: let bash undo it.
            out[k] = subprocess.run(["bash", "-c", f"printf '%s' {v}"], capture_output=True,
                                    text=True, check=True).stdout
    return out


@pytest.fixture(scope="session")
def guest():
    out = guest_script("build-guest.sh", "the test guest", 1200)
    return {"kernel": out["KERNEL"], "initrd": out["INITRD"]}


@pytest.fixture(scope="session", autouse=True)
def _binaries():
    if not HSD.exists() or not HSCTL.exists():
        pytest.fail(f"build first: {HSD} / {HSCTL} missing")
    if not Path("/usr/bin/qemu-system-x86_64").exists():
        pytest.skip("qemu-system-x86_64 is not installed")


@pytest.fixture
def hsd_factory(tmp_path, guest):
    made = []
    # VM files may come from the guest cache and temp dirs (tests' disks).
    allowed = ["--allowed-dir", os.path.dirname(guest["kernel"]), "--allowed-dir", "/tmp"]

    def make(name="hsd", extra_args=(), start=True, prefix=(), allowed_dirs=True):
        if allowed_dirs:
            extra_args = [*allowed, *extra_args]
        # Short base paths: UNIX socket paths are limited to 108 bytes.
        base = Path(os.environ.get("HS_TEST_TMP", "/tmp")) / f"hs-{os.getpid()}-{len(made)}-{time.monotonic_ns() % 100000}"
        base.mkdir(parents=True)
        # Each test hsd keeps its VMs' cgroups under a base of its own.
        extra_args = ["--cgroup-base", f"hs-test/{base.name}", *extra_args]
        h = Hsd(base, extra_args, prefix)
        made.append(h)
        if start:
            h.start()
        return h

    yield make
    problems = []
    for h in made:
        h.cleanup()
        log = h.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                problems.append(f"{h.base}: {marker}\n{log[log.index(marker) - 200:][:4000]}")
        if os.environ.get("HS_KEEP_TMP") is None and not problems:
            subprocess.run(["rm", "-rf", str(h.base)], timeout=60)
    assert not problems, "sanitizer reports from hsd:\n" + "\n".join(problems)


@pytest.fixture
def hsd(hsd_factory):
    return hsd_factory()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: minutes-long tests (a real Debian guest); scripts/test.sh runs them "
        "once, on the normal build")
