# SPDX-License-Identifier: Apache-2.0
"""UEFI Secure Boot, the vTPM and the guest agent with a real Debian 12
guest (tests/guest/build-efi-guest.sh, cached): OVMF's Secure Boot build
with Microsoft's keys -> shim-signed -> grub-efi-amd64-signed -> Debian's
signed kernel, a TPM 2.0 from hsd's swtpm, qemu-guest-agent. The guest
says Secure Boot is on (mokutil) and reads its TPM (tpm2-tools); the agent
reports its host name and address; a TPM NV index and a UEFI variable the
guest writes survive stop/start, a memory snapshot's rollback and a live
migration to another hsd; a disk snapshot freezes the guest's file systems
(the freeze hook's lines in the agent's log) and, with qemu-ga stopped,
is taken anyway and says it was not quiesced; a clone of a template made
of the VM has the VM's UEFI variables and a TPM of its own (another
endorsement key)."""
import json
import os
import re
from pathlib import Path

import pytest

from conftest import guest_run, guest_script, wait_for

pytestmark = pytest.mark.slow

NV = "0x1500016"
EFIVAR = "/sys/firmware/efi/efivars/HsTest-5d8bd1c7-1a5c-4c8a-9f3e-1c5a4e2b7a11"
TCTI = "TPM2TOOLS_TCTI=device:/dev/tpmrm0"


@pytest.fixture(scope="module")
def efi_guest():
    for f in ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/bin/swtpm"):
        if not os.path.exists(f):
            pytest.skip(f"{f} is missing (scripts/install-deps.sh installs ovmf and swtpm)")
    return guest_script("build-efi-guest.sh", "the EFI Secure Boot guest", 3000)


def spec(name, template="efi"):
    return {"name": name, "memory_mib": 768, "cpus": 1, "accel": "tcg",
            "firmware": "uefi", "secure_boot": True, "tpm": True, "agent": True,
            "disks": [{"template": template}], "nics": [{"type": "user"}]}


def run(h, name, cmd, tag, timeout=90):
    return guest_run(h, name, cmd, tag, timeout=timeout)


def value(out, key):
    found = re.findall(rf"^{key}=(\S*)", out, re.M)
    return found[-1] if found else None


def write_state(h, name, nv, ev, define=False):
    """Writes `nv` (8 bytes) into the TPM NV index and `ev` into a UEFI
    variable of the test's own GUID."""
    cmd = ""
    if define:
        cmd += (f"{TCTI} tpm2_nvdefine {NV} -C o -s 8 -a 'ownerread|ownerwrite' >/dev/null; ")
    cmd += (f"echo -n {nv} | {TCTI} tpm2_nvwrite {NV} -C o -i - && "
            f"{{ chattr -i {EFIVAR} 2>/dev/null; printf '\\x07\\x00\\x00\\x00{ev}' > {EFIVAR}; }}"
            f" && echo WROTE=ok")
    out = run(h, name, cmd, "w")
    assert value(out, "WROTE") == "ok", out[-2000:]


def read_state(h, name):
    # (efivarfs files cannot seek: tail reads them through a pipe)
    out = run(h, name, f"echo NV=$({TCTI} tpm2_nvread {NV} -C o -s 8); "
                       f"echo EV=$(cat {EFIVAR} | tail -c +5)", "r")
    return value(out, "NV"), value(out, "EV")


def ek_digest(h, name):
    out = run(h, name, f"{TCTI} tpm2_createek -c /tmp/ek.ctx -G rsa -u /tmp/ek.pub >/dev/null "
                       f"&& echo EK=$(sha256sum /tmp/ek.pub | cut -c1-64)", "ek", timeout=180)
    ek = value(out, "EK")
    assert ek and len(ek) == 64, out[-2000:]
    return ek


def boot(h, name):
    h.json("POST", f"/v1/vms/{name}/start", timeout=120)
    # The root shell's prompt (autologin): input before it is flushed.
    return h.console_wait(name, "hs-efi# ", timeout=600, replay=False)


def agent(h, name, timeout=120):
    def up():
        a = h.vm(name).get("agent") or {}
        return a if a.get("connected") and a.get("hostname") else None
    return wait_for(up, timeout, f"{name}'s guest agent")


def import_template(h, image):
    t = h.json("POST", "/v1/templates", {"name": "efi", "file": image, "format": "qcow2"},
               timeout=600)
    assert t["name"] == "efi"


def test_secure_boot_tpm_agent(hsd_factory, efi_guest):
    from test_migration import drop_hosts, make_hosts, migrate
    image = efi_guest["EFI_IMAGE"]
    hosts = make_hosts(hsd_factory, extra=["--allowed-dir", os.path.dirname(image)])
    try:
        a, b = hosts["A"], hosts["B"]
        import_template(a, image)
        a.json("POST", "/v1/vms", spec("sb"))
        out = boot(a, "sb")
        # Through the signed chain, Secure Boot on, a TPM.
        log = (a.state_dir / "vms" / "sb" / "console.log").read_text(errors="replace")
        assert "HS-EFI-GRUB linux" in log, log[-3000:]
        assert "HS-EFI secureboot=SecureBoot enabled" in log, log[-3000:]
        assert "HS-EFI tpm=/dev/tpm0" in log
        o = run(a, "sb", f"mokutil --sb-state; {TCTI} tpm2_pcrread sha256:0", "sb")
        assert "SecureBoot enabled" in o and re.search(r"0 : 0x[0-9A-F]{64}", o), o[-2000:]
        info = a.vm("sb")["firmware"]
        assert info["secure_boot"] is True and info["tpm"]["running"] is True

        # The agent: host name and address, in GET and hsctl info.
        ag = agent(a, "sb")
        assert ag["hostname"] == "hs-efi-guest"
        wait_for(lambda: any(x.startswith("10.0.2.15/") for i in
                             (a.vm("sb").get("agent") or {}).get("interfaces", [])
                             for x in i.get("addresses", [])), 90, "the guest's address")
        r = a.hsctl("info", "sb", check=True)
        assert "Hostname:    hs-efi-guest" in r.stdout and "10.0.2.15" in r.stdout, r.stdout
        assert "Firmware:    UEFI, Secure Boot" in r.stdout and "TPM:" in r.stdout, r.stdout
        fresh = a.json("GET", "/v1/vms/sb/agent", timeout=30)
        assert fresh["connected"] is True and fresh["os"], fresh

        ek_sb = ek_digest(a, "sb")
        write_state(a, "sb", "NV1aaaaa", "EV1", define=True)
        assert read_state(a, "sb") == ("NV1aaaaa", "EV1")

        # A disk snapshot while the guest writes: frozen and thawed by its agent.
        run(a, "sb", "(while :; do date >> /root/writes; sync; sleep 0.1; done) & "
                     "echo $! > /tmp/writer", "wr")
        s = a.json("POST", "/v1/vms/sb/snapshots", {"name": "q1"}, timeout=180)
        assert s["live"] is True and s["quiesced"] is True, s
        run(a, "sb", "kill $(cat /tmp/writer)", "wk")
        o = run(a, "sb", "cat /var/log/qemu-ga.log", "galog")
        assert "hs-fsfreeze-hook: freeze" in o and "hs-fsfreeze-hook: thaw" in o, o[-2000:]
        listed = {x["name"]: x for x in a.json("GET", "/v1/vms/sb/snapshots")["snapshots"]}
        assert listed["q1"]["quiesced"] is True

        # A memory snapshot; the guest moves on; rolled back: the TPM and
        # the UEFI variable are back as they were (no reboot).
        s = a.json("POST", "/v1/vms/sb/snapshots", {"name": "m1", "memory": True}, timeout=300)
        assert s["quiesced"] is False and "memory" in s["quiesce_note"], s
        write_state(a, "sb", "NV2bbbbb", "EV2")
        assert read_state(a, "sb") == ("NV2bbbbb", "EV2")
        r = a.json("POST", "/v1/vms/sb/snapshots/m1/rollback", timeout=300)
        assert r["restarted"] is True and a.state("sb") == "running"
        assert read_state(a, "sb") == ("NV1aaaaa", "EV1")

        # qemu-ga stopped: a snapshot is taken anyway and says so.
        run(a, "sb", "systemctl stop qemu-guest-agent", "gastop")
        wait_for(lambda: not (a.vm("sb").get("agent") or {}).get("connected"), 60,
                 "hsd to see the agent gone")
        s = a.json("POST", "/v1/vms/sb/snapshots", {"name": "q2"}, timeout=180)
        assert s["quiesced"] is False and "not connected" in s["quiesce_note"], s
        code, body, _ = a.request("GET", "/v1/vms/sb/agent")
        assert code == 409 and body["error"]["code"] == "agent-unavailable", body
        run(a, "sb", "systemctl start qemu-guest-agent", "gastart")
        agent(a, "sb")

        # Stopped through the agent, started again: the state survived.
        r = a.hsctl("stop", "sb", "--agent", timeout=300)
        assert r.returncode == 0, r.stderr
        assert a.state("sb") == "stopped"
        boot(a, "sb")
        assert read_state(a, "sb") == ("NV1aaaaa", "EV1")
        assert "SecureBoot enabled" in run(a, "sb", "mokutil --sb-state", "sb2")

        # Live migration to B (its own copy of the template): the TPM and
        # the variable go along.
        import_template(b, image)
        r = migrate(a, b, "sb", timeout=900)
        assert r.returncode == 0, r.stderr + r.stdout
        assert b.state("sb") == "running"
        assert read_state(b, "sb") == ("NV1aaaaa", "EV1")
        assert agent(b, "sb")["hostname"] == "hs-efi-guest"

        # A template of the VM, and a clone of it: the variables come
        # along, the TPM is its own.
        b.json("POST", "/v1/vms/sb/kill", timeout=60)
        t = b.json("POST", "/v1/templates", {"name": "sb-t", "vm": "sb"}, timeout=900)
        assert t["efivars"] is True
        b.json("POST", "/v1/vms", spec("sbc", template="sb-t"))
        boot(b, "sbc")
        out = run(b, "sbc", f"echo EV=$(cat {EFIVAR} | tail -c +5); "
                            f"{TCTI} tpm2_nvread {NV} -C o -s 8 >/dev/null 2>&1 "
                            f"&& echo NVC=present || echo NVC=absent", "c")
        assert value(out, "EV") == "EV1" and value(out, "NVC") == "absent", out[-2000:]
        assert ek_digest(b, "sbc") != ek_sb
        b.json("POST", "/v1/vms/sbc/kill", timeout=60)
    finally:
        drop_hosts(hosts)
