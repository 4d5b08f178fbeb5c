# SPDX-License-Identifier: Apache-2.0
"""SPICE per VM (docs/architecture.md "Graphical console (SPICE)", docs/api.md
"display" and the console-tickets route): a display's SPICE server reached
through hsd's UNIX socket, optionally on TCP with console tickets'
passwords; hsctl console --spice; a native client (remote-viewer
under Xvfb)."""
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import kill_pid, wait_for

SPICE_LINK_ERR_OK = 0
SPICE_LINK_ERR_PERMISSION_DENIED = 7
MAIN_CHANNEL = 1


def qmp(h, name, command, args=None):
    msg = {"execute": command}
    if args is not None:
        msg["arguments"] = args
    r = h.hsctl("qmp", name, json.dumps(msg), check=True)
    return json.loads(r.stdout)["return"]


def spice_link(sock, password="", timeout=10):
    """The SPICE link handshake of a main channel on a connected socket:
    the link message (no capabilities: the plain SPICE ticket follows), the
    server's reply with its RSA key, the ticket (the password encrypted with
    RSA-OAEP, which the server decrypts even with ticketing off). Returns
    the server's link result (0: in)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    sock.settimeout(timeout)
    body = struct.pack("<IBBIII", 0, MAIN_CHANNEL, 0, 0, 0, 18)
    sock.sendall(b"REDQ" + struct.pack("<III", 2, 2, len(body)) + body)

    def recv_exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    magic, major, _minor, size = struct.unpack("<4sIII", recv_exact(16))
    assert magic == b"REDQ" and major == 2, (magic, major)
    reply = recv_exact(size)
    error, = struct.unpack("<I", reply[:4])
    assert error == SPICE_LINK_ERR_OK, f"link refused: {error}"
    key = serialization.load_der_public_key(reply[4:4 + 162])
    ticket = key.encrypt(password.encode() + b"\0",
                         padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                      algorithm=hashes.SHA1(), label=None))
    sock.sendall(ticket)
    result, = struct.unpack("<I", recv_exact(4))
    return result


def tcp_link(host, port, password):
    with socket.create_connection((host, port), timeout=10) as s:
        return spice_link(s, password)


def have_cryptography():
    try:
        import cryptography  # noqa: F401
        return True
    except ImportError:
        return False


def test_spice_unix(hsd, guest):
    if not have_cryptography():
        pytest.skip("python3-cryptography is not installed (the SPICE ticket is RSA-OAEP)")
    h = hsd
    h.create_guest(guest, "sp1", extra=("--display", "virtio"))
    spec = h.vm("sp1")["spec"]
    assert spec["display"] == {"type": "virtio"}
    assert "spice" not in h.vm("sp1")  # not while stopped
    h.hsctl("start", "sp1", check=True)
    h.wait_state("sp1", "running")
    vm = h.vm("sp1")
    sock = vm["spice"]["socket"]
    assert sock == str(h.run_dir / "vms" / "sp1" / "spice.sock")
    assert set(vm["spice"]) == {"socket"}  # no TCP
    st = os.stat(sock)
    import stat as st_mod
    assert st_mod.S_ISSOCK(st.st_mode)
    assert st.st_mode & 0o777 == 0o660
    assert st.st_uid == 0

    # QEMU's SPICE server is on, ticketing off (the socket is hsd's).
    info = qmp(h, "sp1", "query-spice")
    assert info["enabled"] is True
    assert info["auth"] == "none"
    assert "port" not in info
    argv = Path(f"/proc/{vm['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"-spice" in argv and b"usb-tablet,id=hs-tablet,bus=hs-usb.0" in argv
    assert b"-display" in argv and argv[argv.index(b"-display") + 1] == b"none"

    # A client through the socket: hsd hands the connection to QEMU, the
    # main channel comes up, and QEMU lists it.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        assert spice_link(s) == SPICE_LINK_ERR_OK
        wait_for(lambda: qmp(h, "sp1", "query-spice")["channels"], 10,
                 "the SPICE channel in query-spice")

    r = h.hsctl("console", "sp1", "--spice", check=True)
    assert r.stdout.strip() == f"spice+unix://{sock}"

    # The guest sees the tablet and the agent's port.
    tree = qmp(h, "sp1", "qom-list", {"path": "/machine/peripheral"})
    ids = {p["name"] for p in tree}
    assert {"hs-video0", "hs-usb", "hs-tablet", "hs-vser"} <= ids, ids

    # A serial ticket by default? No: a display VM's default kind is spice.
    t = h.json("POST", "/v1/vms/sp1/console-tickets", {})
    assert t["kind"] == "spice" and t["vm"] == "sp1" and len(t["token"]) == 43
    assert "spice" not in t  # UNIX only: no password
    assert t["expires_at"] > time.time() + 50

    h.hsctl("stop", "sp1", "--force", check=True)
    h.wait_state("sp1", "stopped")
    assert not os.path.exists(sock)
    assert "spice" not in h.vm("sp1")


def test_spice_tcp_tickets(hsd_factory, guest):
    if not have_cryptography():
        pytest.skip("python3-cryptography is not installed (the SPICE ticket is RSA-OAEP)")
    h = hsd_factory(extra_args=["--spice-ports", "5960-5969"])
    h.create_guest(guest, "sp2", extra=("--display", "qxl", "--spice-listen", "127.0.0.1"))
    assert h.vm("sp2")["spec"]["display"] == {"type": "qxl", "listen": "127.0.0.1"}
    h.hsctl("start", "sp2", check=True)
    h.wait_state("sp2", "running")
    sp = h.vm("sp2")["spice"]
    assert sp["host"] == "127.0.0.1" and 5960 <= sp["port"] <= 5969
    port = sp["port"]
    info = qmp(h, "sp2", "query-spice")
    assert info["enabled"] is True and info["port"] == port and info["auth"] == "spice"

    # No password yet: nobody gets in over TCP.
    assert tcp_link("127.0.0.1", port, "") == SPICE_LINK_ERR_PERMISSION_DENIED
    # The UNIX socket needs none.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sp["socket"])
        assert spice_link(s) == SPICE_LINK_ERR_OK

    t = h.json("POST", "/v1/vms/sp2/console-tickets", {"kind": "spice", "ttl": 30})
    pw = t["spice"]["password"]
    assert t["spice"]["host"] == "127.0.0.1" and t["spice"]["port"] == port
    assert len(pw) >= 16
    assert tcp_link("127.0.0.1", port, pw + "x") == SPICE_LINK_ERR_PERMISSION_DENIED
    assert tcp_link("127.0.0.1", port, pw) == SPICE_LINK_ERR_OK

    # hsctl: a fresh password each time, printed as a URI.
    r = h.hsctl("console", "sp2", "--spice", "--ttl", "5", check=True)
    uri = r.stdout.strip()
    prefix = f"spice://127.0.0.1:{port}/?password="
    assert uri.startswith(prefix), uri
    pw2 = uri[len(prefix):]
    assert pw2 != pw
    assert tcp_link("127.0.0.1", port, pw) == SPICE_LINK_ERR_PERMISSION_DENIED
    assert tcp_link("127.0.0.1", port, pw2) == SPICE_LINK_ERR_OK
    # ... which expires with the ticket.
    time.sleep(6)
    assert tcp_link("127.0.0.1", port, pw2) == SPICE_LINK_ERR_PERMISSION_DENIED

    # A second VM takes another port of the range.
    h.create_guest(guest, "sp3", extra=("--spice-listen", "127.0.0.1"))
    h.hsctl("start", "sp3", check=True)
    h.wait_state("sp3", "running")
    p3 = h.vm("sp3")["spice"]["port"]
    assert 5960 <= p3 <= 5969 and p3 != port

    # Requests hsd refuses.
    for body, status, code in (
            ({"kind": "vnc"}, 400, "invalid-request"),
            ({"ttl": 4}, 400, "invalid-request"),
            ({"ttl": 601}, 400, "invalid-request"),
            ({"ttl": "60"}, 400, "invalid-request"),
            ({"other": 1}, 400, None)):
        st, js, text = h.request("POST", "/v1/vms/sp2/console-tickets", body)
        assert st == status, (body, st, text)
        if code:
            assert js["error"]["code"] == code, (body, js)
    st, js, _ = h.request("GET", "/v1/vms/sp2/console-tickets")
    assert st == 405
    st, js, _ = h.request("POST", "/v1/vms/nosuch/console-tickets", {})
    assert st == 404

    # Stopped: the port is free again, tickets go.
    h.hsctl("stop", "sp2", "--force", check=True)
    h.wait_state("sp2", "stopped")
    st, js, _ = h.request("POST", "/v1/vms/sp2/console-tickets", {"kind": "spice"})
    assert st == 409 and js["error"]["code"] == "not-running", js
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    h.hsctl("stop", "sp3", "--force", check=True)
    h.wait_state("sp3", "stopped")


def test_no_display(hsd, guest):
    h = hsd
    h.create_guest(guest, "nd")
    assert "display" not in h.vm("nd")["spec"]
    h.hsctl("start", "nd", check=True)
    h.wait_state("nd", "running")
    vm = h.vm("nd")
    assert "spice" not in vm
    argv = Path(f"/proc/{vm['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"-spice" not in argv
    assert not (h.run_dir / "vms" / "nd" / "spice.sock").exists()
    st, js, _ = h.request("POST", "/v1/vms/nd/console-tickets", {"kind": "spice"})
    assert st == 409 and js["error"]["code"] == "no-display", js
    r = h.hsctl("console", "nd", "--spice")
    assert r.returncode != 0 and "no display" in r.stderr, r.stderr
    # The default kind of a headless VM: serial.
    t = h.json("POST", "/v1/vms/nd/console-tickets", {"ttl": 5})
    assert t["kind"] == "serial" and "spice" not in t

    # PATCH: a display from the next start.
    h.json("PATCH", "/v1/vms/nd", {"display": {"type": "virtio"}})
    assert h.vm("nd")["spec"]["display"] == {"type": "virtio"}
    st, js, _ = h.request("POST", "/v1/vms/nd/console-tickets", {"kind": "spice"})
    assert st == 409 and js["error"]["code"] == "no-display", js
    st, js, _ = h.request("PATCH", "/v1/vms/nd", {"display": {"type": "vga"}})
    assert st == 400 and js["error"]["code"] == "invalid-spec"
    h.hsctl("stop", "nd", "--force", check=True)
    h.wait_state("nd", "stopped")
    h.hsctl("start", "nd", check=True)
    h.wait_state("nd", "running")
    assert "socket" in h.vm("nd")["spice"]
    h.hsctl("stop", "nd", "--force", check=True)
    h.wait_state("nd", "stopped")


def test_adopted_after_restart(hsd, guest):
    """hsd restarts while a display VM runs: the socket is made again and
    connections reach the same QEMU."""
    if not have_cryptography():
        pytest.skip("python3-cryptography is not installed (the SPICE ticket is RSA-OAEP)")
    h = hsd
    h.create_guest(guest, "sp4", extra=("--spice-listen", "127.0.0.1"))
    h.hsctl("start", "sp4", check=True)
    h.wait_state("sp4", "running")
    before = h.vm("sp4")
    h.stop()
    h.start()
    wait_for(lambda: "spice" in h.vm("sp4"), 15, "the SPICE socket after hsd's restart")
    after = h.vm("sp4")
    assert after["pid"] == before["pid"]
    assert after["spice"] == before["spice"]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(after["spice"]["socket"])
        assert spice_link(s) == SPICE_LINK_ERR_OK
    h.hsctl("stop", "sp4", "--force", check=True)
    h.wait_state("sp4", "stopped")


def test_remote_viewer(hsd, guest, tmp_path):
    """A native client: remote-viewer under Xvfb connects with what
    `hsctl console --spice` prints, and a screenshot shows its window."""
    missing = [t for t in ("xvfb-run", "remote-viewer", "xwininfo", "import")
               if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian: xvfb virt-viewer "
                    "x11-utils imagemagick; scripts/install-deps.sh --tests)")
    h = hsd
    h.create_guest(guest, "rv", extra=("--display", "virtio"), append="console=tty0")
    h.hsctl("start", "rv", check=True)
    h.wait_state("rv", "running")
    uri = h.hsctl("console", "rv", "--spice", check=True).stdout.strip()
    assert uri.startswith("spice+unix://")

    shot = tmp_path / "remote-viewer.png"
    script = tmp_path / "view.sh"
    # In the X session: the viewer, a wait for its window, a screenshot.
    script.write_text(f"""#!/bin/bash
remote-viewer --title hs-spice-test '{uri}' 2>/tmp/rv-$$.log &
rv=$!
for i in $(seq 1 200); do
    xwininfo -root -tree 2>/dev/null | grep -q hs-spice-test && break
    kill -0 $rv 2>/dev/null || {{ cat /tmp/rv-$$.log >&2; exit 3; }}
    sleep 0.1
done
sleep 3
xwininfo -root -tree | grep hs-spice-test
import -window root '{shot}'
kill $rv; wait $rv 2>/dev/null
rm -f /tmp/rv-$$.log
""")
    script.chmod(0o755)
    p = subprocess.Popen(["xvfb-run", "-a", "-s", "-screen 0 1024x768x24", str(script)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
            p.wait(10)
    assert p.returncode == 0, f"rc={p.returncode}\n{out}\n{err}"
    assert "hs-spice-test" in out
    # While it was connected, QEMU had its channels.
    assert shot.exists() and shot.stat().st_size > 1000
    # The screen is not all one colour: the viewer's window is on it.
    r = subprocess.run(["convert", str(shot), "-format", "%k", "info:"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and int(r.stdout.strip()) > 1, r.stdout
    art = os.environ.get("HS_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(art) / "spice-remote-viewer.png")
    h.hsctl("stop", "rv", "--force", check=True)
    h.wait_state("rv", "stopped")
