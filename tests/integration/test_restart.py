# SPDX-License-Identifier: Apache-2.0
"""QEMUs outlive hsd: re-adoption after kill -9 and SIGTERM, and VMs that
died or powered off while hsd was away."""
import json
import os
import signal
import socket
import time

from conftest import pid_alive, qemu_pids_of, wait_for


def test_kill9_hsd_readopts_five_vms(hsd, guest):
    names = [f"r{i}" for i in range(5)]
    for n in names:
        hsd.create_guest(guest, n, append="hs.counter", memory=128)
        hsd.hsctl("start", n, check=True)
    before = {n: hsd.vm(n)["pid"] for n in names}
    assert qemu_pids_of(hsd) == set(before.values())

    hsd.kill9()
    for pid in before.values():
        assert pid_alive(pid), "QEMU must outlive hsd"
    hsd.start()

    after = {}
    for n in names:
        wait_for(lambda: hsd.vm(n).get("qmp_connected"), 15, f"{n} QMP re-connected")
        v = hsd.vm(n)
        assert v["state"] == "running", v
        after[n] = v["pid"]
    assert after == before
    # No duplicate QEMU was started.
    assert qemu_pids_of(hsd) == set(before.values())

    # Still controllable: console, QMP, pause/resume, stop.
    hsd.console_wait("r0", "hs-counter", replay=False, timeout=30)
    assert hsd.json("POST", "/v1/vms/r1/qmp", {"execute": "query-status"})["return"]["running"]
    hsd.hsctl("pause", "r2", check=True)
    assert hsd.json("POST", "/v1/vms/r2/qmp", {"execute": "query-status"})["return"]["status"] == "paused"
    hsd.hsctl("resume", "r2", check=True)
    hsd.hsctl("stop", "r3", "--force", check=True)
    assert not pid_alive(before["r3"])
    # Starting a running VM is refused: no duplicate.
    r = hsd.hsctl("start", "r4")
    assert r.returncode == 1 and "already running" in r.stderr
    # Exit of an adopted (non-child) QEMU is noticed too.
    os.kill(before["r4"], signal.SIGKILL)
    hsd.wait_state("r4", "crashed", timeout=10)


def test_sigterm_leaves_vms_running(hsd, guest):
    hsd.create_guest(guest, "keep")
    hsd.hsctl("start", "keep", check=True)
    pid = hsd.vm("keep")["pid"]
    hsd.stop(signal.SIGTERM)
    assert hsd.proc.returncode == 0
    time.sleep(0.3)
    assert pid_alive(pid)
    hsd.start()
    wait_for(lambda: hsd.vm("keep").get("qmp_connected"), 15, "QMP re-connected")
    assert hsd.vm("keep")["pid"] == pid and hsd.state("keep") == "running"
    hsd.hsctl("kill", "keep", check=True)


def test_vm_died_while_hsd_away_is_crashed(hsd, guest):
    hsd.create_guest(guest, "gone")
    hsd.hsctl("start", "gone", check=True)
    pid = hsd.vm("gone")["pid"]
    hsd.stop(signal.SIGTERM)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 5, "QEMU gone")
    hsd.start()
    v = hsd.vm("gone")
    assert v["state"] == "crashed" and "not running" in v["exit_reason"], v
    assert v["pid"] == 0


def test_guest_poweroff_while_hsd_away_is_stopped(hsd, guest):
    hsd.create_guest(guest, "offaway")
    hsd.hsctl("start", "offaway", check=True)
    hsd.console_wait("offaway", "HS-GUEST-READY")
    pid = hsd.vm("offaway")["pid"]
    hsd.stop(signal.SIGTERM)
    # hsd is away: type into the guest's serial socket ourselves.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(hsd.run_dir / "vms" / "offaway" / "console.sock"))
    s.sendall(b"\npoweroff -f\n")
    time.sleep(3)
    s.close()
    # -no-shutdown keeps QEMU alive in 'shutdown' until hsd comes back.
    hsd.start()
    hsd.wait_state("offaway", "stopped", timeout=20)
    v = hsd.vm("offaway")
    assert "guest powered off" in v["exit_reason"], v
    wait_for(lambda: not pid_alive(pid), 10, "QEMU to exit")


def test_runs_as_ordinary_user(tmp_path, guest):
    """No root, no options: paths come from XDG_RUNTIME_DIR / XDG_STATE_HOME."""
    import shutil
    import subprocess
    from conftest import HSCTL, HSD, kill_pid
    import tempfile
    from pathlib import Path
    # Not under pytest's tmp_path: its parents are 0700 root.
    base = Path(tempfile.mkdtemp(prefix="hs-user-", dir="/tmp"))
    os.chmod(base, 0o755)
    (base / "run").mkdir(parents=True)
    (base / "state").mkdir()
    for f in ("kernel", "initrd"):
        shutil.copy(guest[f], base / f)
    subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(base), "XDG_RUNTIME_DIR": str(base / "run"),
           "XDG_STATE_HOME": str(base / "state")}
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    hsd = subprocess.Popen(setpriv + [str(HSD)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    sock = base / "run" / "hsd" / "hsd.sock"
    qemu_pid = 0

    def ctl(*args, timeout=60):
        return subprocess.run(setpriv + [str(HSCTL), *args], env=env, capture_output=True,
                              text=True, timeout=timeout)
    try:
        wait_for(lambda: ctl("list").returncode == 0, 15, "user hsd to answer")
        assert sock.exists()
        assert (base / "state" / "hsd" / "vms").is_dir()
        r = ctl("create", "u1", "--accel", "tcg", "--memory", "128", "--kernel",
                str(base / "kernel"), "--initrd", str(base / "initrd"), "--append",
                "console=ttyS0 hs.marker=user")
        assert r.returncode == 0, r.stderr
        r = ctl("start", "u1")
        assert r.returncode == 0, r.stderr
        js = json.loads(ctl("--json", "info", "u1").stdout)
        qemu_pid = js["pid"]
        assert os.stat(f"/proc/{qemu_pid}").st_uid == 65534
        r = ctl("console", "u1", "--wait-for", "HS-MARKER user", "--timeout", "60",
                timeout=90)
        assert r.returncode == 0, r.stderr
        assert ctl("kill", "u1").returncode == 0
    finally:
        if qemu_pid:
            kill_pid(qemu_pid)
        hsd.kill()
        hsd.wait(10)
        shutil.rmtree(base, ignore_errors=True)
