# SPDX-License-Identifier: Apache-2.0
"""Least privilege for QEMU, and bridge NICs through taps that hsd makes
and hands to QEMU as descriptors (tested inside a network namespace)."""
import os
import pwd
import subprocess
import uuid

import pytest

from conftest import pid_alive, wait_for


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch QEMU's user")
def test_qemu_runs_unprivileged(hsd, guest):
    hsd.create_guest(guest, "lp")
    hsd.hsctl("start", "lp", check=True)
    pid = hsd.vm("lp")["pid"]
    st = proc_status(pid)
    user = pwd.getpwnam("hsd-qemu")
    assert st["Uid"].split() == [str(user.pw_uid)] * 4
    assert st["Gid"].split()[0] == str(user.pw_gid)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"  # QEMU's own -sandbox
    # QEMU opened no path of hsd's: its files are descriptors hsd passed.
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert not any(str(hsd.state_dir).encode() in a for a in argv)
    assert any(a.startswith(b"/proc/self/fd/") for a in argv)
    # ... and it could not open them itself: the state dir is hsd's alone.
    assert (os.stat(hsd.state_dir).st_mode & 0o077) == 0
    r = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                        "--clear-groups", "cat", str(hsd.state_dir / "vms" / "lp" / "spec.json")],
                       capture_output=True, timeout=10)
    assert r.returncode != 0
    hsd.console_wait("lp", "HS-GUEST-READY")
    hsd.hsctl("kill", "lp", check=True)


def test_unreadable_disk_is_a_clear_error(hsd, guest, tmp_path):
    hsd.create_guest(guest, "nodisk")
    img = tmp_path / "d.img"
    img.write_bytes(b"\0" * 1048576)
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "d1", "accel": "tcg",
                                                "kernel": guest["kernel"],
                                                "disks": [{"path": str(img), "format": "raw"}]})
    assert st == 201, js
    img.unlink()
    r = hsd.hsctl("start", "d1")
    assert r.returncode == 1 and "disks[0]: cannot open" in r.stderr, r.stderr
    st, js, _ = hsd.request("POST", "/v1/vms/d1/start")
    assert st == 409 and js["error"]["code"] == "file-unavailable", (st, js)
    assert hsd.state("d1") in ("defined", "stopped", "crashed")


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"hs-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {r.stderr}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def ns(netns, *cmd):
    return subprocess.run(["ip", "-n", netns, *cmd], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def test_bridge_nic_through_tap_fd(hsd_factory, guest, netns):
    ns(netns, "link", "set", "lo", "up")
    ns(netns, "link", "add", "hsbr0", "type", "bridge")
    # Addresses exist only inside our own namespace.
    ns(netns, "addr", "add", "192.168.77.1/24", "dev", "hsbr0")
    ns(netns, "link", "set", "hsbr0", "up")
    hsd = hsd_factory(prefix=["ip", "netns", "exec", netns])
    # unknown bridge: clear error at start
    hsd.create_guest(guest, "nobr", extra=["--nic", "bridge:nosuchbr"])
    r = hsd.hsctl("start", "nobr")
    assert r.returncode == 1 and "bridge 'nosuchbr' does not exist" in r.stderr, r.stderr

    hsd.create_guest(guest, "br1", extra=["--nic", "bridge:hsbr0"])
    hsd.hsctl("start", "br1", check=True)
    pid = hsd.vm("br1")["pid"]
    # The tap is enslaved to the bridge and QEMU holds it; QEMU itself has
    # no capability (so it could not have made it).
    assert "hstap" in ns(netns, "link", "show", "master", "hsbr0")
    assert int(proc_status(pid)["CapEff"], 16) == 0
    assert not any(b"bridge" in a for a in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0"))
    hsd.console_wait("br1", "HS-GUEST-READY")
    r = hsd.hsctl("console", "br1", "--no-replay", "--wait-for", "3 packets received",
                  "--timeout", "60",
                  input="ip link set eth0 up; ip addr add 192.168.77.2/24 dev eth0; "
                        "ping -c 3 -W 5 192.168.77.1\n", timeout=90)
    assert r.returncode == 0, r.stdout[-2000:]
    hsd.hsctl("stop", "br1", "--force", check=True)
    # The tap goes away with QEMU.
    wait_for(lambda: "hstap" not in ns(netns, "link", "show", "master", "hsbr0"), 10,
             "tap removed")


@pytest.fixture
def groups():
    if os.geteuid() != 0:
        pytest.skip("making groups needs root")
    names = [f"hst{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for n in names:
        subprocess.run(["groupadd", n], check=True, timeout=30)
    try:
        import grp
        yield [(n, grp.getgrnam(n).gr_gid) for n in names]
    finally:
        for n in names:
            subprocess.run(["groupdel", n], timeout=30)


def test_api_and_admin_groups_and_audit(hsd_factory, guest, groups):
    import json
    from conftest import HSCTL
    (api_name, api_gid), (adm_name, adm_gid) = groups
    hsd = hsd_factory(extra_args=["--api-group", api_name, "--admin-group", adm_name])
    st = os.stat(hsd.socket)
    assert st.st_gid == api_gid and (st.st_mode & 0o777) == 0o660
    hsd.create_guest(guest, "g1")
    hsd.hsctl("start", "g1", check=True)

    def as_nobody(groups, *args):
        g = ",".join(str(x) for x in groups)
        pre = ["setpriv", "--reuid=65534", "--regid=65534"]
        pre += [f"--groups={g}"] if groups else ["--clear-groups"]
        return subprocess.run(pre + [str(HSCTL), "--socket", hsd.socket, *args],
                              capture_output=True, text=True, timeout=60)

    # Not in the group: the socket's mode keeps it out.
    r = as_nobody([], "list")
    assert r.returncode == 3 and "Permission denied" in r.stderr, r.stderr
    # API group: may list and act, but not use QMP passthrough.
    r = as_nobody([api_gid], "list")
    assert r.returncode == 0 and "g1" in r.stdout, r.stderr
    r = as_nobody([api_gid], "pause", "g1")
    assert r.returncode == 0, r.stderr
    r = as_nobody([api_gid], "qmp", "g1", '{"execute": "query-status"}')
    assert r.returncode == 1 and "admin group" in r.stderr, r.stderr
    # Admin group (and API group, to pass the socket's mode): QMP too.
    r = as_nobody([api_gid, adm_gid], "qmp", "g1", '{"execute": "query-status"}')
    assert r.returncode == 0 and json.loads(r.stdout)["return"]["status"] == "paused", r.stderr
    hsd.hsctl("kill", "g1", check=True)

    audit = [json.loads(line) for line in
             (hsd.state_dir / "audit.log").read_text().splitlines()]
    def seen(**kw):
        return any(all(e.get(k) == v for k, v in kw.items()) for e in audit)
    assert seen(uid=65534, method="POST", path="/v1/vms/g1/pause", status=200, result="ok")
    assert seen(uid=65534, method="POST", path="/v1/vms/g1/qmp", status=403, result="forbidden")
    assert seen(uid=65534, method="POST", path="/v1/vms/g1/qmp", status=200)
    assert seen(uid=0, method="POST", path="/v1/vms", status=201)
    assert seen(uid=0, method="POST", path="/v1/vms/g1/kill", status=200)
    assert not any(e["method"] == "GET" and e["status"] == 200 and "console" not in e["path"]
                   for e in audit)


def test_spec_paths_must_stay_in_allowed_dirs(hsd_factory, guest, tmp_path):
    import shutil
    hsd = hsd_factory(allowed_dirs=False, extra_args=["--allowed-dir", str(tmp_path / "ok")])
    ok = tmp_path / "ok"
    ok.mkdir()
    shutil.copy(guest["kernel"], ok / "vmlinuz")
    (ok / "sub").mkdir()
    # inside: fine
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "in", "accel": "tcg",
                                                "kernel": str(ok / "vmlinuz")})
    assert st == 201, js
    # outside
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "out", "accel": "tcg",
                                                "kernel": guest["kernel"]})
    assert st == 403 and js["error"]["code"] == "path-not-allowed", js
    assert "kernel" in js["error"]["message"] and "outside" in js["error"]["message"]
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "out", "accel": "tcg",
                                                "kernel": "/etc/passwd"})
    assert st == 403, js
    # a symlink inside that leads out
    os.symlink("/etc/passwd", ok / "escape")
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "out", "accel": "tcg",
                                                "kernel": str(ok / "escape")})
    assert st == 403 and "symlink" in js["error"]["message"], js
    os.symlink("../../../../../../etc/passwd", ok / "sub" / "rel")
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "out", "accel": "tcg",
                                                "kernel": str(ok / "sub" / "rel")})
    assert st == 403, js
    # '..' in the path itself
    st, js, _ = hsd.request("POST", "/v1/vms", {"name": "out", "accel": "tcg",
                                                "kernel": str(ok) + "/../../etc/passwd"})
    assert st == 400 and "normalised" in js["error"]["message"], js
    # a file swapped for an escaping symlink after create is refused at start
    (ok / "vmlinuz").unlink()
    os.symlink(guest["kernel"], ok / "vmlinuz")
    r = hsd.hsctl("start", "in")
    assert r.returncode == 1 and "leads outside" in r.stderr, r.stderr
