# SPDX-License-Identifier: Apache-2.0
"""The VM lifecycle through hsctl, with the real guest under TCG."""
import os
import re
import signal
import time

from conftest import pid_alive, wait_for


def test_full_lifecycle(hsd, guest):
    hsd.create_guest(guest, "life", append="hs.marker=life1")
    info = hsd.vm("life")
    assert info["state"] == "defined" and info["pid"] == 0

    r = hsd.hsctl("start", "life")
    assert r.returncode == 0, r.stderr
    assert "running" in r.stdout
    vm = hsd.vm("life")
    assert vm["state"] == "running" and pid_alive(vm["pid"])
    out = hsd.console_wait("life", "HS-MARKER life1")
    assert "HS-GUEST-READY" in out

    # info shows state, pid, uptime and the spec
    r = hsd.hsctl("info", "life", check=True)
    assert "State:       running" in r.stdout
    assert f"QEMU pid:    {vm['pid']}" in r.stdout
    assert "Uptime:" in r.stdout and "Memory:      256 MiB" in r.stdout
    # ...and how long the start took, by step (nothing to load for a boot)
    st = vm["start_timing_ms"]
    assert set(st) == {"spawn", "qemu_init", "resume", "total"}, st
    assert all(v >= 0 for v in st.values())
    assert abs(st["spawn"] + st["qemu_init"] + st["resume"] - st["total"]) < 0.5, st
    assert re.search(r"Last start:  [0-9.]+ ms \(spawn [0-9.]+, QEMU [0-9.]+, resume [0-9.]+\)",
                     r.stdout), r.stdout

    # pause / resume, checked against QEMU itself
    assert hsd.hsctl("pause", "life").returncode == 0
    assert hsd.state("life") == "paused"
    st = hsd.json("POST", "/v1/vms/life/qmp", {"execute": "query-status"})
    assert st["return"]["status"] == "paused"
    assert hsd.hsctl("pause", "life").returncode == 1  # already paused
    assert hsd.hsctl("resume", "life").returncode == 0
    assert hsd.state("life") == "running"

    # reboot: the guest boots again (a second READY marker after the reboot)
    assert hsd.hsctl("reboot", "life").returncode == 0
    hsd.console_wait("life", "HS-GUEST-READY", replay=False)
    assert hsd.vm("life")["pid"] == vm["pid"]

    # console in pipe mode drives the guest's shell
    r = hsd.hsctl("console", "life", "--no-replay", "--wait-for", "sum=42", "--timeout", "30",
                  input="echo sum=$((40+2))\n", timeout=60)
    assert r.returncode == 0, r.stderr

    # ACPI stop: the guest handles the power button
    t0 = time.monotonic()
    r = hsd.hsctl("stop", "life", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    vm2 = hsd.vm("life")
    assert vm2["state"] == "stopped"
    assert "ACPI" in vm2["exit_reason"], vm2["exit_reason"]
    assert time.monotonic() - t0 < 30
    assert not pid_alive(vm["pid"])
    assert "HS-GUEST-READY" in vm2["console_tail"] or "HS-" in vm2["console_tail"]

    # stop on a stopped VM is a clear error, exit 1
    r = hsd.hsctl("stop", "life")
    assert r.returncode == 1 and "not running" in r.stderr

    # forced stop
    hsd.hsctl("start", "life", check=True)
    pid = hsd.vm("life")["pid"]
    r = hsd.hsctl("stop", "life", "--force", check=True)
    v = hsd.vm("life")
    assert v["state"] == "stopped" and "forced" in v["exit_reason"]
    assert not pid_alive(pid)

    # kill
    hsd.hsctl("start", "life", check=True)
    pid = hsd.vm("life")["pid"]
    hsd.hsctl("kill", "life", check=True)
    v = hsd.vm("life")
    assert v["state"] == "stopped" and "killed" in v["exit_reason"]
    assert not pid_alive(pid)

    # delete
    hsd.hsctl("delete", "life", check=True)
    r = hsd.hsctl("info", "life")
    assert r.returncode == 1 and "no VM named 'life'" in r.stderr
    assert not (hsd.state_dir / "vms" / "life").exists()


def test_acpi_stop_times_out_then_forced(hsd, guest):
    # A paused guest cannot act on the power button: stop goes straight to
    # forced; a running guest that ignores it is forced after the timeout.
    hsd.create_guest(guest, "stubborn")
    hsd.hsctl("start", "stubborn", "--paused", check=True)
    assert hsd.state("stubborn") == "paused"
    hsd.hsctl("stop", "stubborn", "--timeout", "1", check=True)
    v = hsd.vm("stubborn")
    assert v["state"] == "stopped" and "forced" in v["exit_reason"]


def test_guest_poweroff_noticed(hsd, guest):
    hsd.create_guest(guest, "offvm", append="hs.poweroff")
    hsd.hsctl("start", "offvm", check=True)
    hsd.wait_state("offvm", "stopped", timeout=60)
    v = hsd.vm("offvm")
    assert "guest powered off" in v["exit_reason"], v
    assert v["pid"] == 0
    assert "HS-GUEST-POWEROFF" in v["console_tail"]


def test_qemu_sigkill_is_crashed(hsd, guest):
    hsd.create_guest(guest, "crashy", append="hs.counter")
    hsd.hsctl("start", "crashy", check=True)
    hsd.console_wait("crashy", "hs-counter 2")
    pid = hsd.vm("crashy")["pid"]
    os.kill(pid, signal.SIGKILL)
    hsd.wait_state("crashy", "crashed", timeout=10)
    v = hsd.vm("crashy")
    assert "SIGKILL" in v["exit_reason"] or "KILL" in v["exit_reason"], v["exit_reason"]
    # The last console lines are kept.
    assert "hs-counter" in v["console_tail"]
    r = hsd.hsctl("info", "crashy", check=True)
    assert "crashed" in r.stdout and "Last exit:" in r.stdout
    # It can be started again.
    hsd.hsctl("start", "crashy", check=True)
    assert hsd.state("crashy") == "running"
    hsd.hsctl("kill", "crashy", check=True)


def test_start_failure_is_reported(hsd, guest, tmp_path):
    # A disk QEMU cannot open (not qcow2 although declared qcow2).
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not a qcow2 image" * 100)
    r = hsd.hsctl("create", "baddisk", "--accel", "tcg", "--memory", "128", "--kernel",
                  guest["kernel"], "--from", "/dev/null", timeout=30)
    assert r.returncode == 2  # --from /dev/null is not JSON: usage error
    st = hsd.json("POST", "/v1/vms", {"name": "baddisk", "accel": "tcg", "memory_mib": 128,
                                      "kernel": guest["kernel"],
                                      "disks": [{"path": str(bad), "format": "qcow2"}]})
    r = hsd.hsctl("start", "baddisk")
    assert r.returncode == 1
    assert "QEMU failed to start" in r.stderr, r.stderr
    v = hsd.vm("baddisk")
    assert v["state"] == "crashed" and "qcow2" in v["exit_reason"].lower()
