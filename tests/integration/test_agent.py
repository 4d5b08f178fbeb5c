# SPDX-License-Identifier: Apache-2.0
"""The QEMU guest agent's port (docs/architecture.md "Guest agent", docs/api.md
"agent"): with "agent": true QEMU gets a virtserialport on hsd's qga.sock.
The test guest has no qemu-ga: the port stays closed, which must be quick to
say and must slow nothing else down."""
import socket
import time
from pathlib import Path

from conftest import guest_run, wait_for


def qmp(h, name, command, **args):
    """QMP through the API's passthrough."""
    return h.json("POST", f"/v1/vms/{name}/qmp", {"execute": command, "arguments": args})["return"]


def timed(h, method, path, body=None):
    t0 = time.monotonic()
    st, js, _ = h.request(method, path, body)
    return st, js, time.monotonic() - t0


def test_agent_absent(hsd, guest):
    h = hsd
    h.create_guest(guest, "ga1", extra=("--agent",))
    h.create_guest(guest, "ga2")
    assert h.vm("ga1")["spec"]["agent"] is True
    assert "agent" not in h.vm("ga2")["spec"]
    assert h.vm("ga1")["agent"] == {"connected": False}
    assert "agent" not in h.vm("ga2")

    h.hsctl("start", "ga1", check=True)
    h.hsctl("start", "ga2", check=True)
    h.wait_state("ga1", "running")
    h.wait_state("ga2", "running")
    vm = h.vm("ga1")

    # QEMU has the port, on the virtio-serial controller, its chardev on
    # hsd's socket (a descriptor: QEMU opens nothing by path).
    argv = Path(f"/proc/{vm['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"virtio-serial-pci,id=hs-vser" in argv
    assert (b"virtserialport,bus=hs-vser.0,chardev=hs-qga,name=org.qemu.guest_agent.0,"
            b"id=hs-qga-port") in argv
    chardevs = {c["label"]: c for c in qmp(h, "ga1", "query-chardev")}
    assert "hs-qga" in chardevs, chardevs
    assert chardevs["hs-qga"]["frontend-open"] is False  # no qemu-ga in this guest
    ids = {p["name"] for p in qmp(h, "ga1", "qom-list", path="/machine/peripheral")}
    assert {"hs-vser", "hs-qga-port"} <= ids, ids
    sock = h.run_dir / "vms" / "ga1" / "qga.sock"
    assert sock.is_socket()
    assert not (h.run_dir / "vms" / "ga2" / "qga.sock").exists()
    argv2 = Path(f"/proc/{h.vm('ga2')['pid']}/cmdline").read_bytes().split(b"\0")
    assert not any(b"hs-qga" in a for a in argv2)

    # No agent: said at once, as 409 agent-unavailable.
    assert h.vm("ga1")["agent"] == {"connected": False}
    st, js, dt = timed(h, "GET", "/v1/vms/ga1/agent")
    assert st == 409 and js["error"]["code"] == "agent-unavailable", js
    assert dt < 6, dt
    st, js, _ = timed(h, "GET", "/v1/vms/ga2/agent")
    assert st == 409 and js["error"]["code"] == "agent-unavailable", js
    assert "no guest agent port" in js["error"]["message"]
    st, js, dt = timed(h, "POST", "/v1/vms/ga1/stop", {"agent": True})
    assert st == 409 and js["error"]["code"] == "agent-unavailable", js
    assert dt < 6, dt
    st, js, _ = timed(h, "POST", "/v1/vms/ga1/stop", {"agent": True, "force": True})
    assert st == 400, js
    assert h.state("ga1") == "running"  # no fallback to ACPI
    r = h.hsctl("stop", "ga1", "--agent")
    assert r.returncode != 0 and "agent" in r.stderr, r.stderr

    # A client connected to qga.sock that never answers (a hung agent)
    # changes nothing either: hsd's calls do not wait for it.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        for path in ("/v1/vms/ga1", "/v1/vms/ga2", "/v1/vms"):
            st, _, dt = timed(h, "GET", path)
            assert st == 200 and dt < 0.5, (path, dt)
        for action in ("pause", "resume"):
            st, js, dt = timed(h, "POST", f"/v1/vms/ga1/{action}", {})
            assert st == 200 and dt < 2, (action, js, dt)
    h.wait_state("ga1", "running")

    out = h.hsctl("info", "ga1", check=True).stdout
    assert "Guest agent: not connected" in out, out
    assert "Guest OS:" not in out and "Addresses:" not in out
    assert "Guest agent" not in h.hsctl("info", "ga2", check=True).stdout

    # hsd restarts: the port is still QEMU's; the agent still absent.
    h.stop()
    h.start()
    wait_for(lambda: h.state("ga1") == "running", 15, "ga1 adopted")
    assert h.vm("ga1")["agent"] == {"connected": False}
    st, js, dt = timed(h, "GET", "/v1/vms/ga1/agent")
    assert st == 409 and js["error"]["code"] == "agent-unavailable" and dt < 6, js
    assert sock.is_socket()

    h.hsctl("stop", "ga1", "--force", check=True)
    h.hsctl("stop", "ga2", "--force", check=True)
    h.wait_state("ga1", "stopped")
    assert not sock.exists()
    assert h.vm("ga1")["agent"] == {"connected": False}
    st, js, _ = timed(h, "GET", "/v1/vms/ga1/agent")
    assert st == 409 and "not running" in js["error"]["message"], js


# A stand-in for qemu-ga in the test guest's shell (it has none): the port's
# device node made, opened as fd 3 of the shell; the sync answered with the
# id hsd sent, then each of hsd's first questions, in the order asked.
OPEN_PORT = ("d=$(cat /sys/class/virtio-ports/vport*/dev); mknod /dev/qga c ${d%:*} ${d#*:}; "
             "exec 3<>/dev/qga")
SYNC = ("read -r l <&3; id=$(echo \"$l\" | sed 's/.*\"id\":\\([0-9]*\\).*/\\1/'); "
        "printf '\\377{\"return\": %s}\\n' $id >&3")
ANSWERS = [
    '{"return": {"version": "9.9-fake"}}',
    '{"return": {"name": "Fake OS", "pretty-name": "Fake OS 1", "kernel-release": "6.1.0"}}',
    '{"return": {"host-name": "fakehost"}}',
    '{"return": [{"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]}, '
    '{"name": "eth0", "hardware-address": "52:54:00:12:34:56", "ip-addresses": '
    '[{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}]}]}',
]


def fake_agent_script():
    steps = [OPEN_PORT, SYNC]
    for a in ANSWERS:
        steps.append(f"read -r l <&3; echo \"GOT $l\"; printf '%s\\n' '{a}' >&3")
    # Leading blanks: the shell's line editor may eat the first characters.
    return "        " + "; ".join(steps)


def test_agent_scripted(hsd, guest):
    h = hsd
    h.create_guest(guest, "ga3", extra=("--agent",))
    h.hsctl("start", "ga3", check=True)
    h.wait_state("ga3", "running")
    h.console_wait("ga3", "#", timeout=60)
    out = guest_run(h, "ga3", fake_agent_script(), "fake", timeout=30)
    # One command at a time, no "id" (old agents refuse one).
    for cmd in ("guest-info", "guest-get-osinfo", "guest-get-host-name",
                "guest-network-get-interfaces"):
        assert f'GOT {{"execute":"{cmd}"}}' in out, out
    wait_for(lambda: "hostname" in h.vm("ga3")["agent"], 10, "the agent's answers cached")
    ag = h.vm("ga3")["agent"]
    assert ag["connected"] is True and ag["version"] == "9.9-fake"
    assert ag["os"] == {"name": "Fake OS", "pretty_name": "Fake OS 1", "kernel": "6.1.0"}
    assert ag["hostname"] == "fakehost"
    assert ag["interfaces"][1] == {"name": "eth0", "mac": "52:54:00:12:34:56",
                                   "addresses": ["10.0.2.15/24"]}
    assert abs(ag["updated"] - time.time()) < 60
    info = h.hsctl("info", "ga3", check=True).stdout
    assert "Guest agent: connected" in info
    assert "Guest OS:    Fake OS 1, kernel 6.1.0" in info
    assert "Hostname:    fakehost" in info
    assert "Addresses:   10.0.2.15/24 eth0" in info and "127.0.0.1" not in info

    # In the background: the stand-in reads the question it will not
    # answer, answers the sync that follows its timeout, and powers the
    # guest off at guest-shutdown.
    guest_run(h, "ga3", "        (read -r l <&3; " + SYNC + "; read -r l <&3; "
              "echo \"SHUT $l\" >/dev/console; poweroff -f) >/dev/null 2>&1 & true", "bg")
    # It does not answer: 504 within the agent's 5 s, and the API meanwhile
    # answers at once.
    st, js, dt = timed(h, "GET", "/v1/vms/ga3/agent")
    assert st == 504 and js["error"]["code"] == "timeout", js
    assert 4 < dt < 7, dt
    assert h.vm("ga3")["agent"]["hostname"] == "fakehost"  # the last answers stay
    wait_for(lambda: h.vm("ga3")["agent"]["connected"], 10, "the agent synced again")

    st, js, dt = timed(h, "POST", "/v1/vms/ga3/stop", {"agent": True, "timeout": 30})
    assert st == 200 and js["state"] == "stopped", js
    assert js["exit_reason"] == "shut down (guest agent)", js
    assert dt < 30, dt
    assert js["agent"] == {"connected": False}  # QEMU gone: nothing kept
