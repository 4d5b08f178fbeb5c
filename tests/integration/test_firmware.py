# SPDX-License-Identifier: Apache-2.0
"""UEFI firmware and the vTPM (docs/architecture.md "Firmware and TPM"),
with the small test guest booted by OVMF (direct kernel boot, no Secure
Boot: the test kernel is not signed by a key OVMF's store holds) and a
real swtpm per VM: the variable store and the TPM state kept with the VM,
carried by snapshots (and rolled back), templates (a clone's TPM is its
own) and live migration; swtpm supervised, re-found after an hsd restart,
stopped with QEMU. The signed Secure Boot chain, /dev/tpm0 in a guest and
the guest agent are tested with a Debian image in test_firmware_guest.py."""
import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import kill_pid, pid_alive, wait_for

OVMF = Path("/usr/share/OVMF")
SWTPM = Path("/usr/bin/swtpm")


@pytest.fixture(autouse=True)
def _need_firmware():
    if not (OVMF / "OVMF_CODE_4M.fd").exists() or not SWTPM.exists():
        pytest.skip("needs Debian's ovmf and swtpm (scripts/install-deps.sh installs them)")


def uefi_spec(guest, name, tpm=True, disk=None, memory=192):
    s = {"name": name, "memory_mib": memory, "accel": "tcg", "kernel": guest["kernel"],
         "initrd": guest["initrd"], "cmdline": "console=ttyS0 hs.counter",
         "firmware": "uefi", "tpm": tpm}
    if disk:
        s["disks"] = [disk]
    return s


def digest(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def vm_dir(h, name):
    return h.state_dir / "vms" / name


def swtpm_pid(h, name):
    fw = h.vm(name)["firmware"]
    t = fw["tpm"]
    return t.get("swtpm_pid") if t["running"] else None


def proc_uid(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def boot(h, name, marker="hs-counter 1"):
    h.json("POST", f"/v1/vms/{name}/start", timeout=120)
    h.console_wait(name, marker, timeout=180, replay=False)


def stop(h, name):
    h.json("POST", f"/v1/vms/{name}/kill", timeout=60)
    h.wait_state(name, "stopped", timeout=30)


def test_uefi_tpm_lifecycle(hsd_factory, guest):
    """Boots through OVMF, with the VM's own store (made from OVMF's
    template) and its own swtpm, as the QEMU user; the store changes as
    OVMF boots; swtpm goes with QEMU, and comes back with the next start."""
    h = hsd_factory(extra_args=os.environ.get("HS_FW_EXTRA", "").split())
    vm = h.json("POST", "/v1/vms", uefi_spec(guest, "fw"))
    assert vm["spec"]["firmware"] == "uefi" and vm["spec"]["tpm"] is True
    assert vm["firmware"]["type"] == "uefi" and vm["firmware"]["secure_boot"] is False
    assert vm["firmware"]["tpm"] == {"version": "2.0", "running": False}
    d = vm_dir(h, "fw")
    # Made at create, from OVMF's empty store.
    assert digest(d / "efivars.fd") == digest(OVMF / "OVMF_VARS_4M.fd")
    assert oct((d / "efivars.fd").stat().st_mode & 0o777) == "0o600"
    tpm = d / "tpm"
    assert tpm.is_dir() and oct(tpm.stat().st_mode & 0o777) == "0o700"

    boot(h, "fw")
    argv = Path(f"/proc/{h.vm('fw')['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"tpm-crb,tpmdev=hs-tpm,id=tpm0" in argv
    assert any(a.endswith(b"pflash0=hs-fw-code,pflash1=hs-fw-vars") for a in argv), argv
    # The guest came up through UEFI.
    out = h.hsctl("console", "fw", "--no-replay", "--wait-for", "HSQ-efi-done", "--timeout", "60",
                  input="ls -d /sys/firmware/efi && echo HSQ-efi-don$(echo e)\n", timeout=90)
    assert "/sys/firmware/efi" in out.stdout, out.stdout[-2000:]
    pid = swtpm_pid(h, "fw")
    assert pid and pid_alive(pid)
    # swtpm runs as the QEMU user (as QEMU does), on the VM's own state.
    qemu_uid = proc_uid(h.vm("fw")["pid"])
    assert proc_uid(pid) == qemu_uid
    assert os.readlink(f"/proc/{pid}/fd/4") == str(tpm)
    # QEMU initialised the TPM: swtpm made its state.
    wait_for(lambda: (tpm / "tpm2-00.permall").exists(), 30, "the TPM's state")
    assert tpm.stat().st_uid == qemu_uid
    # OVMF wrote to the VM's store while booting (its boot variables).
    assert digest(d / "efivars.fd") != digest(OVMF / "OVMF_VARS_4M.fd")

    stop(h, "fw")
    wait_for(lambda: not pid_alive(pid), 10, "swtpm to go with QEMU")
    assert h.vm("fw")["firmware"]["tpm"]["running"] is False
    vars_after = digest(d / "efivars.fd")
    tpm_after = digest(tpm / "tpm2-00.permall")
    # Another start: the same store and TPM state, a new swtpm.
    boot(h, "fw")
    pid2 = swtpm_pid(h, "fw")
    assert pid2 and pid2 != pid
    stop(h, "fw")
    wait_for(lambda: not pid_alive(pid2), 10, "swtpm to go with QEMU")
    # (OVMF counts boots in a variable: the store moved on from there.)
    assert digest(d / "efivars.fd") != vars_after
    assert (tpm / "tpm2-00.permall").exists() and tpm_after

    # QEMU's end closes swtpm's socket a moment before QEMU is gone:
    # no false alarm at a stop.
    time.sleep(2.5)
    assert "exited while QEMU runs" not in h.log_text()

    # Delete: everything goes.
    h.json("DELETE", "/v1/vms/fw", expect=(200, 204))
    assert not d.exists()


def test_firmware_bad_input(hsd, guest, tmp_path):
    h = hsd
    code, body, _ = h.request("POST", "/v1/vms", {**uefi_spec(guest, "b1"), "secure_boot": True,
                                                  "machine": "pc"})
    assert code == 400 and body["error"]["code"] == "invalid-spec", body
    assert "q35" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms", {**uefi_spec(guest, "b2"), "firmware": "efi"})
    assert code == 400 and "firmware" in body["error"]["message"], body
    code, body, _ = h.request("POST", "/v1/vms", {**uefi_spec(guest, "b3", tpm=False),
                                                  "secure_boot": "yes"})
    assert code == 400 and "secure_boot" in body["error"]["message"], body
    # No BIOS VM gets firmware files or a TPM.
    h.json("POST", "/v1/vms", {"name": "plain", "memory_mib": 128, "accel": "tcg",
                                "kernel": guest["kernel"], "initrd": guest["initrd"]})
    assert "firmware" not in h.vm("plain")
    assert not (vm_dir(h, "plain") / "efivars.fd").exists()
    assert not (vm_dir(h, "plain") / "tpm").exists()


def test_firmware_missing_files(hsd_factory, guest, tmp_path):
    empty = tmp_path / "no-ovmf"
    empty.mkdir()
    h = hsd_factory(extra_args=["--ovmf-dir", str(empty), "--swtpm", str(tmp_path / "no-swtpm")])
    code, body, _ = h.request("POST", "/v1/vms", uefi_spec(guest, "m1", tpm=False))
    assert code == 409 and body["error"]["code"] == "no-firmware", body
    assert "OVMF_CODE_4M.fd" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms", {**uefi_spec(guest, "m2"), "firmware": "bios"})
    assert code == 409 and body["error"]["code"] == "no-swtpm", body
    assert h.json("GET", "/v1/vms")["vms"] == []


@pytest.mark.slow  # (the ASan run has the other tests of this file)
def test_snapshots_rollback_templates_clones(hsd, guest):
    """Snapshots carry the store and the TPM state, a rollback puts them
    back (stopped and memory snapshots); a template carries the store and
    never the TPM: a clone's TPM is a new one."""
    h = hsd
    h.json("POST", "/v1/vms", uefi_spec(guest, "sv", disk={"size": "16M"}))
    d = vm_dir(h, "sv")
    boot(h, "sv")
    stop(h, "sv")
    v1, t1 = digest(d / "efivars.fd"), digest(d / "tpm" / "tpm2-00.permall")
    h.json("POST", "/v1/vms/sv/snapshots", {"name": "s1"}, timeout=120)
    assert digest(d / "snapshots" / "s1.efivars") == v1
    assert digest(d / "snapshots" / "s1.tpm") == t1
    # The guest moves on: another boot changes the store and the TPM.
    boot(h, "sv")
    stop(h, "sv")
    assert digest(d / "efivars.fd") != v1
    t2 = digest(d / "tpm" / "tpm2-00.permall")
    r = h.json("POST", "/v1/vms/sv/snapshots/s1/rollback", timeout=180)
    assert r["restarted"] is False
    assert digest(d / "efivars.fd") == v1
    assert digest(d / "tpm" / "tpm2-00.permall") == t1
    assert not list(d.glob(".rb-*")) and not list((d / "tpm").glob(".rb-*"))
    assert (d / "tpm" / "tpm2-00.permall").stat().st_uid == (d / "tpm").stat().st_uid

    # A memory snapshot of the running VM, rolled back live.
    boot(h, "sv")
    h.json("POST", "/v1/vms/sv/snapshots", {"name": "m1", "memory": True}, timeout=180)
    vm1 = digest(d / "snapshots" / "m1.efivars")
    assert (d / "snapshots" / "m1.tpm").exists()
    r = h.json("POST", "/v1/vms/sv/snapshots/m1/rollback", timeout=180)
    assert r["restarted"] is True and h.state("sv") == "running"
    assert swtpm_pid(h, "sv"), "no swtpm after the rollback"
    # Deleting a snapshot deletes its copies.
    h.json("DELETE", "/v1/vms/sv/snapshots/s1", timeout=120, expect=(200, 204))
    assert not (d / "snapshots" / "s1.efivars").exists()
    assert not (d / "snapshots" / "s1.tpm").exists()
    assert (d / "snapshots" / "m1.efivars").exists() and vm1
    stop(h, "sv")

    # A template of the disk takes the store along, not the TPM.
    t = h.json("POST", "/v1/templates", {"name": "uefi-t", "vm": "sv"}, timeout=300)
    assert t["efivars"] is True
    tdir = h.state_dir / "templates" / "uefi-t"
    assert digest(tdir / "efivars.fd") == digest(d / "efivars.fd")
    assert not (tdir / "tpm").exists()
    h.json("POST", "/v1/vms", uefi_spec(guest, "cl", disk={"template": "uefi-t"}))
    c = vm_dir(h, "cl")
    assert digest(c / "efivars.fd") == digest(tdir / "efivars.fd")
    boot(h, "cl")
    wait_for(lambda: (c / "tpm" / "tpm2-00.permall").exists(), 30, "the clone's TPM state")
    stop(h, "cl")
    # A TPM of its own: new seeds, another state.
    assert digest(c / "tpm" / "tpm2-00.permall") != digest(d / "tpm" / "tpm2-00.permall")


def test_swtpm_survives_hsd_restart(hsd, guest):
    h = hsd
    h.json("POST", "/v1/vms", uefi_spec(guest, "rs"))
    boot(h, "rs")
    pid = swtpm_pid(h, "rs")
    qemu = h.vm("rs")["pid"]
    h.stop()
    assert pid_alive(pid) and pid_alive(qemu), "swtpm and QEMU outlive hsd"
    h.start()
    assert h.state("rs") == "running"
    assert swtpm_pid(h, "rs") == pid
    stop(h, "rs")
    wait_for(lambda: not pid_alive(pid), 10, "swtpm to go with QEMU")
    # swtpm killed under a running guest: said, and the next start has a new one.
    boot(h, "rs")
    pid = swtpm_pid(h, "rs")
    kill_pid(pid)
    wait_for(lambda: h.vm("rs")["firmware"]["tpm"]["running"] is False, 10,
             "hsd to see swtpm gone")
    wait_for(lambda: "exited while QEMU runs" in h.log_text(), 10, "hsd to say the TPM is lost")
    stop(h, "rs")
    boot(h, "rs")
    assert swtpm_pid(h, "rs") not in (None, pid)
    stop(h, "rs")


@pytest.mark.slow  # (the ASan run has the other tests of this file)
def test_migration_carries_firmware_and_tpm(hsd_factory, guest):
    """Live migration to another hsd: QEMU carries the flash contents (RAM
    of its ROM device, written back into the destination's store) and the
    TPM's state (swtpm's blobs in the device state); the destination's
    files are the source's after it, and a cold boot there still has them."""
    from test_migration import counter, drop_hosts, make_hosts, migrate
    hosts = make_hosts(hsd_factory)
    try:
        a, b = hosts["A"], hosts["B"]
        s = uefi_spec(guest, "mv", disk={"size": "16M"})
        a.json("POST", "/v1/vms", s)
        boot(a, "mv", "hs-counter 2")
        da, db = vm_dir(a, "mv"), vm_dir(b, "mv")
        wait_for(lambda: (da / "tpm" / "tpm2-00.permall").exists(), 30, "the TPM's state")
        src_pid = swtpm_pid(a, "mv")
        before = counter(a, "mv")
        r = migrate(a, b, "mv")
        assert r.returncode == 0, r.stderr + r.stdout
        assert b.state("mv") == "running" and counter(b, "mv") > before
        assert swtpm_pid(b, "mv")
        wait_for(lambda: not pid_alive(src_pid), 15, "the source's swtpm to go")
        # The destination's store and TPM are the source's.
        assert digest(db / "efivars.fd") == digest(da / "efivars.fd")
        wait_for(lambda: (db / "tpm" / "tpm2-00.permall").exists()
                 and digest(db / "tpm" / "tpm2-00.permall")
                 == digest(da / "tpm" / "tpm2-00.permall"), 15, "the TPM state on B")
        # A cold boot on B goes on from them.
        stop(b, "mv")
        moved = digest(db / "tpm" / "tpm2-00.permall")
        boot(b, "mv")
        stop(b, "mv")
        assert (db / "tpm" / "tpm2-00.permall").exists() and moved
    finally:
        drop_hosts(hosts)


def test_rollback_leftovers_after_a_crash(hsd, guest):
    """hsd killed between recording a rollback and putting the snapshot's
    firmware state in place: the next start finishes it; copies of a
    snapshot that does not exist are swept."""
    h = hsd
    h.json("POST", "/v1/vms", uefi_spec(guest, "cr", disk={"size": "16M"}))
    d = vm_dir(h, "cr")
    boot(h, "cr")
    stop(h, "cr")
    h.json("POST", "/v1/vms/cr/snapshots", {"name": "s1"}, timeout=120)
    snap_vars = (d / "snapshots" / "s1.efivars").read_bytes()
    snap_tpm = (d / "snapshots" / "s1.tpm").read_bytes()
    boot(h, "cr")
    stop(h, "cr")
    assert (d / "efivars.fd").read_bytes() != snap_vars
    h.kill9()
    # What a rollback leaves when hsd dies right after recording it.
    (d / ".rb-efivars.fd").write_bytes(snap_vars)
    rb = d / "tpm" / ".rb-tpm2-00.permall"
    rb.write_bytes(snap_tpm)
    st = (d / "tpm").stat()
    os.chown(rb, st.st_uid, st.st_gid)  # as hsd makes it: the QEMU user's
    (d / "snapshots" / "ghost.efivars").write_bytes(b"x")
    (d / "snapshots" / "ghost.tpm").write_bytes(b"x")
    h.start()
    assert (d / "efivars.fd").read_bytes() == snap_vars
    assert (d / "tpm" / "tpm2-00.permall").read_bytes() == snap_tpm
    assert not (d / ".rb-efivars.fd").exists()
    assert not (d / "tpm" / ".rb-tpm2-00.permall").exists()
    assert not (d / "snapshots" / "ghost.efivars").exists()
    assert not (d / "snapshots" / "ghost.tpm").exists()
    assert (d / "snapshots" / "s1.efivars").exists() and (d / "snapshots" / "s1.tpm").exists()
    boot(h, "cr")
    stop(h, "cr")
