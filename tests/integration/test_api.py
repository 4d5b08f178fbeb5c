# SPDX-License-Identifier: Apache-2.0
"""The REST API and hsctl: bad input, QMP passthrough, the event stream,
isolation of a frozen QEMU, many clients, access control, KVM."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import HSCTL, pid_alive, wait_for


def raw(hsd, data, timeout=10):
    """Send raw bytes, return everything hsd answers until it closes or
    goes quiet."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(hsd.socket)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and out.count(b"\n") > 5 and b"}" in out:
                break
    except socket.timeout:
        pass
    s.close()
    return out


def curl(hsd, *args):
    return subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket",
                           hsd.socket, *args], capture_output=True, text=True, timeout=30)


def test_bad_input_http(hsd, guest):
    # malformed JSON
    r = curl(hsd, "-X", "POST", "-d", "{nope", "http://hsd/v1/vms")
    body, code = r.stdout.rsplit("\n", 1)
    assert code == "400"
    err = json.loads(body)["error"]
    assert err["code"] == "invalid-json" and "line 1" in err["message"]
    # unknown field, named
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "x", "kernel": guest["kernel"],
                                                "colour": "blue"})
    assert st == 400 and "colour" in js["error"]["message"]
    # bad field value, named
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "x", "kernel": guest["kernel"],
                                                "cpus": 0})
    assert st == 400 and js["error"]["code"] == "invalid-spec" and "cpus" in js["error"]["message"]
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "Bad Name", "kernel": guest["kernel"]})
    assert st == 400 and "name" in js["error"]["message"]
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "x", "kernel": "/nonexistent/k"})
    assert st == 400 and "kernel" in js["error"]["message"]
    st, js, _ = hsd.request("POST", "/v1/vms", [1, 2])
    assert st == 400
    # oversized body
    # (hsd answers 413 as soon as it sees the size, before the body)
    out = raw(hsd, b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 2097152\r\n\r\n{\"name\": ")
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert b'"body-too-large"' in out
    # the same without a Content-Length (chunked), caught while reading
    chunk = b"{" + b" " * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    out = raw(hsd, b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    # unknown path, wrong method, unknown VM, unknown action
    assert hsd.request("GET", "/v2/vms")[0] == 404
    assert hsd.request("PUT", "/v1/vms")[0] == 405
    st, js, _ = hsd.request("GET", "/v1/vms/nosuch")
    assert st == 404 and "no VM named 'nosuch'" in js["error"]["message"]
    hsd.create_guest(guest, "a1")
    assert hsd.request("POST", "/v1/vms/a1/fly")[0] == 404
    assert hsd.request("GET", "/v1/vms/a1/start")[0] == 405
    st, js, _ = hsd.request("POST", "/v1/vms/a1/stop", {"timeout": "soon"})
    assert st == 400 and "timeout" in js["error"]["message"]
    st, js, _ = hsd.request("POST", "/v1/vms/a1/start", {"bogus": 1})
    assert st == 400 and "bogus" in js["error"]["message"]
    # duplicate name
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "a1", "kernel": guest["kernel"]})
    assert st == 409 and js["error"]["code"] == "conflict"
    # a MAC already used by another VM
    mac = hsd.vm("a1")["spec"]["nics"][0]["mac"]
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "a2", "kernel": guest["kernel"],
                                                "nics": [{"type": "user", "mac": mac}]})
    assert st == 409 and js["error"]["code"] == "mac-in-use", js
    assert "already used by VM 'a1'" in js["error"]["message"], js
    # malformed HTTP: a clear 400 for that client, others unaffected
    out = raw(hsd, b"GARBAGE\x00\x01 / HTTP/9\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:100]
    assert hsd.request("GET", "/v1/vms")[0] == 200
    # a client that sends half a request and stalls does not block others
    s = socket.socket(socket.AF_UNIX)
    s.connect(hsd.socket)
    s.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na")
    t0 = time.monotonic()
    assert hsd.request("GET", "/v1/host")[0] == 200
    assert time.monotonic() - t0 < 2
    s.close()
    # clients that vanish mid-request
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX)
        s.connect(hsd.socket)
        s.sendall(b"GET /v1/vms HTTP/1.1\r\n")
        s.close()
    assert hsd.request("GET", "/v1/vms")[0] == 200


def test_bad_input_cli(hsd, guest, tmp_path):
    r = hsd.hsctl("create", "Bad!", "--kernel", guest["kernel"])
    assert r.returncode == 1 and "name: must match" in r.stderr
    r = hsd.hsctl("create", "ok1", "--kernel", guest["kernel"], "--cpus", "lots")
    assert r.returncode == 2 and "--cpus" in r.stderr
    r = hsd.hsctl("create", "ok1", "--kernel", guest["kernel"], "--cpus", "999")
    assert r.returncode == 1 and "cpus" in r.stderr
    r = hsd.hsctl("create", "ok1", "--kernel", "/no/such/file")
    assert r.returncode == 2 and "/no/such/file" in r.stderr
    r = hsd.hsctl("start", "nosuch")
    assert r.returncode == 1 and "no VM named 'nosuch'" in r.stderr
    r = hsd.hsctl("frobnicate")
    assert r.returncode == 2
    r = hsd.hsctl("qmp", "nosuch", "not json")
    assert r.returncode == 2
    r = subprocess.run([str(HSCTL), "--socket", str(tmp_path / "none.sock"), "list"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 3 and "hsd is not running at" in r.stderr
    # --json output parses
    hsd.create_guest(guest, "j1")
    r = hsd.hsctl("--json", "list", check=True)
    assert json.loads(r.stdout)["vms"][0]["name"] == "j1"
    r = hsd.hsctl("--json", "start", "nosuch")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "not-found"


def test_qmp_passthrough(hsd, guest):
    hsd.create_guest(guest, "q1")
    hsd.hsctl("start", "q1", check=True)
    r = hsd.hsctl("qmp", "q1", '{"execute": "query-status"}', check=True)
    assert json.loads(r.stdout)["return"]["status"] == "running"
    r = hsd.hsctl("qmp", "q1", '{"execute": "query-name"}', check=True)
    assert json.loads(r.stdout)["return"]["name"] == "q1"
    # the caller's id comes back
    js = hsd.json("POST", "/v1/vms/q1/qmp", {"execute": "query-version", "id": "mine-7"})
    assert js["id"] == "mine-7" and js["return"]["qemu"]["major"] >= 7
    # QEMU's error is shown, exit 1
    r = hsd.hsctl("qmp", "q1", '{"execute": "no-such-command"}')
    assert r.returncode == 1 and "CommandNotFound" in r.stdout
    # a malformed QMP command is refused by hsd
    st, js, _ = hsd.request("POST", "/v1/vms/q1/qmp", {"exec": "x"})
    assert st == 400
    # passthrough is logged
    assert "qmp passthrough: vm=q1" in hsd.log_text()
    hsd.hsctl("kill", "q1", check=True)
    r = hsd.hsctl("qmp", "q1", '{"execute": "query-status"}')
    assert r.returncode == 1 and "not running" in r.stderr


def test_event_stream(hsd, guest):
    hsd.create_guest(guest, "ev1")
    p = subprocess.Popen([str(HSCTL), "--socket", hsd.socket, "--json", "events"],
                         stdout=subprocess.PIPE, text=True)
    try:
        lines = []

        def reader():
            for line in p.stdout:
                lines.append(json.loads(line))

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        wait_for(lambda: any(e.get("type") == "hello" for e in lines), 10, "stream start")
        hsd.hsctl("start", "ev1", check=True)
        hsd.hsctl("pause", "ev1", check=True)
        hsd.hsctl("resume", "ev1", check=True)
        hsd.hsctl("kill", "ev1", check=True)

        def seen(pred):
            return any(pred(e) for e in lines)

        wait_for(lambda: seen(lambda e: e.get("state") == "stopped"), 10, "stopped event")
        states = [(e["previous"], e["state"]) for e in lines if e.get("type") == "state"]
        assert ("defined", "starting") in states
        assert ("starting", "running") in states
        assert ("running", "paused") in states
        assert ("paused", "running") in states
        assert seen(lambda e: e.get("type") == "qmp" and e["event"] == "STOP")
        assert seen(lambda e: e.get("type") == "qmp" and e["event"] == "RESUME")
        assert all(e.get("vm") in (None, "ev1") for e in lines)
    finally:
        p.kill()
        p.wait(5)


def test_frozen_qemu_only_affects_its_vm(hsd_factory, guest):
    hsd = hsd_factory(extra_args=["--qmp-timeout", "2"])
    hsd.create_guest(guest, "frozen")
    hsd.create_guest(guest, "fine")
    hsd.hsctl("start", "frozen", check=True)
    hsd.hsctl("start", "fine", check=True)
    pid = hsd.vm("frozen")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        results = {}

        def frozen_call():
            t0 = time.monotonic()
            st, js, _ = hsd.request("POST", "/v1/vms/frozen/qmp", {"execute": "query-status"})
            results["frozen"] = (st, js, time.monotonic() - t0)

        t = threading.Thread(target=frozen_call)
        t.start()
        time.sleep(0.2)
        # Meanwhile the other VM and the API answer at once.
        for _ in range(10):
            t0 = time.monotonic()
            js = hsd.json("POST", "/v1/vms/fine/qmp", {"execute": "query-status"})
            assert js["return"]["running"]
            assert time.monotonic() - t0 < 0.5
            assert hsd.request("GET", "/v1/vms")[0] == 200
        t.join(15)
        st, js, dt = results["frozen"]
        assert st == 504 and js["error"]["code"] == "timeout", (st, js)
        assert 1.5 < dt < 6
        # pause on the frozen VM also times out, cleanly
        r = hsd.hsctl("pause", "frozen", timeout=30)
        assert r.returncode == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    # once thawed it answers again
    wait_for(lambda: hsd.request("POST", "/v1/vms/frozen/qmp",
                                 {"execute": "query-status"})[0] == 200, 10, "thawed QEMU")
    hsd.hsctl("kill", "frozen", check=True)
    hsd.hsctl("kill", "fine", check=True)


def test_many_clients_and_keepalive(hsd, guest):
    for i in range(10):
        hsd.create_guest(guest, f"m{i}")
    errors = []

    def worker():
        try:
            for _ in range(20):
                st, js, _ = hsd.request("GET", "/v1/vms")
                assert st == 200 and len(js["vms"]) == 10
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    # keep-alive: several requests on one connection
    from conftest import UnixHTTPConnection
    c = UnixHTTPConnection(hsd.socket)
    for _ in range(5):
        c.request("GET", "/v1/host")
        r = c.getresponse()
        assert r.status == 200
        json.loads(r.read())
    c.close()


def test_socket_access_control(hsd):
    st = os.stat(hsd.socket)
    assert oct(st.st_mode & 0o777) == "0o660"
    # Another uid that gets through the file mode is still refused by
    # SO_PEERCRED.
    os.chmod(hsd.socket, 0o666)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        str(HSCTL), "--socket", hsd.socket, "list"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "may not use hsd" in r.stderr, r.stderr


def test_host_info(hsd):
    r = hsd.hsctl("host", check=True)
    assert "QEMU:" in r.stdout and "KVM:" in r.stdout and "NUMA nodes:" in r.stdout
    js = json.loads(hsd.hsctl("--json", "host", check=True).stdout)
    assert js["qemu"]["version"].startswith(("7.", "8.", "9."))
    assert js["cpu"]["count"] == os.cpu_count()
    assert js["memory"]["total_bytes"] > 0
    assert js["numa_nodes"] >= 1
    # no IOMMU here: hsctl host says exactly what to change
    assert "IOMMU:" in r.stdout
    if not js["iommu"]["enabled"]:
        assert "iommu=on" in js["iommu"]["advice"] and "IOMMU:      off:" in r.stdout


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this machine")
def test_kvm_path(hsd, guest):
    host = hsd.json("GET", "/v1/host")
    if not host["kvm"]["usable"]:
        pytest.skip(f"KVM not usable: {host['kvm']['reason']}")
    # accel kvm is the default where /dev/kvm is usable
    hsd.hsctl("create", "k1", "--memory", "128", "--kernel", guest["kernel"], check=True)
    assert hsd.vm("k1")["spec"]["accel"] == "kvm"
    hsd.hsctl("start", "k1", "--paused", check=True)
    assert hsd.state("k1") == "paused"
    js = hsd.json("POST", "/v1/vms/k1/qmp", {"execute": "query-kvm"})
    assert js["return"] == {"enabled": True, "present": True}
    hsd.hsctl("kill", "k1", check=True)


def test_create_from_spec_file(hsd, guest, tmp_path):
    spec = tmp_path / "vm.json"
    spec.write_text(json.dumps({"name": "fromfile", "accel": "tcg", "memory_mib": 96,
                                "kernel": guest["kernel"], "initrd": guest["initrd"],
                                "cmdline": "console=ttyS0 hs.marker=ff"}))
    hsd.hsctl("create", "--from", str(spec), check=True)
    v = hsd.vm("fromfile")
    assert v["spec"]["memory_mib"] == 96 and v["spec"]["cmdline"].endswith("hs.marker=ff")
    # a NAME and options on the command line override the file
    hsd.hsctl("create", "other", "--from", str(spec), "--memory", "80", check=True)
    assert hsd.vm("other")["spec"]["memory_mib"] == 80
    hsd.hsctl("start", "other", check=True)
    hsd.console_wait("other", "HS-MARKER ff")
    hsd.hsctl("kill", "other", check=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "kernel": 5}')
    r = hsd.hsctl("create", "--from", str(bad))
    assert r.returncode == 1 and "kernel: must be a string" in r.stderr, r.stderr
