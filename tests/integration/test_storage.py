# SPDX-License-Identifier: Apache-2.0
"""Templates, managed disks and snapshots with the real guest under TCG: the
guest keeps a file system on its disk (tests/guest/init, hs.disk) and prints
what it holds at every boot, so every check is on data the guest wrote and
reads back. qemu-img check runs on every image after every step."""
import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import kill_pid, pid_alive, wait_for


def qemu_img_check_all(h):
    """Every layer and template image is consistent."""
    images = glob.glob(str(h.state_dir / "vms" / "*" / "layers" / "*.qcow2"))
    images += glob.glob(str(h.state_dir / "templates" / "*" / "image"))
    assert images
    for img in images:
        # -U: a running QEMU may have the image open.
        r = subprocess.run(["qemu-img", "check", "-U", "-q", img], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0 and not os.path.exists(img):
            continue  # a layer hsd dropped meanwhile (garbage of a finished operation)
        assert r.returncode == 0, f"qemu-img check {img}: {r.stdout}{r.stderr}"
    return images


def disk_spec(guest, name, disk, append="", memory=128):
    return {"name": name, "memory_mib": memory, "accel": "tcg", "kernel": guest["kernel"],
            "initrd": guest["initrd"], "cmdline": f"console=ttyS0 hs.disk {append}".strip(),
            "disks": [disk]}


def console_log(h, name):
    try:
        return (h.state_dir / "vms" / name / "console.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def boots(h, name):
    return console_log(h, name).count("HS-DISK-READY")


def boot_lines(h, name, after, timeout=240):
    """Waits for boot number after+1 (counted in the VM's console log) and
    returns the data lines the guest found on its disk then."""
    wait_for(lambda: boots(h, name) > after, timeout, f"{name} to boot")
    last = console_log(h, name).rsplit("HS-GUEST-READY", 1)[-1]
    assert "HS-DISK-FAILED" not in last
    return re.findall(r"HS-DISK-LINE (\S+)", last)


def guest_write(h, name, word):
    """Appends a line to the guest's data file, synced to its disk."""
    tag = f"HS-W-{word}"
    r = h.hsctl("console", name, "--no-replay", "--wait-for", f"{tag}-ok", "--timeout", "60",
                input=f"echo {word} >> /mnt/disk/data; sync; echo {tag}-$(echo ok)\n",
                timeout=90)
    assert r.returncode == 0, f"writing {word}: {r.stderr}{r.stdout[-1500:]}"


def start(h, name):
    h.json("POST", f"/v1/vms/{name}/start", timeout=120)


def rollback(h, vm, snap):
    return h.json("POST", f"/v1/vms/{vm}/snapshots/{snap}/rollback", timeout=180)


def snapshot(h, vm, snap, memory=False):
    return h.json("POST", f"/v1/vms/{vm}/snapshots", {"name": snap, "memory": memory},
                  timeout=180)


def make_golden(h, guest):
    """A VM whose disk holds a file system with one line, made a template."""
    h.json("POST", "/v1/vms", disk_spec(guest, "gold", {"size": "64M"}))
    start(h, "gold")
    out = h.console_wait("gold", "HS-DISK-READY")
    assert "HS-DISK-FORMATTED" in out
    guest_write(h, "gold", "golden-1")
    h.json("POST", "/v1/vms/gold/kill", timeout=60)
    t = h.json("POST", "/v1/templates", {"name": "gold-t", "vm": "gold"}, timeout=300)
    assert t["name"] == "gold-t" and t["format"] == "qcow2"
    assert t["virtual_size"] == 64 << 20
    img = h.state_dir / "templates" / "gold-t" / "image"
    assert oct(img.stat().st_mode & 0o777) == "0o444"
    # Standalone: no backing file.
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(img)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info
    return "gold-t"


def test_templates_clones_snapshots_rollback_tree(hsd, guest):
    h = hsd
    make_golden(h, guest)

    # 20 VMs from one template: each a thin layer on it.
    t0 = time.monotonic()
    for i in range(20):
        vm = h.json("POST", "/v1/vms", disk_spec(guest, f"c{i}", {"template": "gold-t"}))
        assert vm["storage"][0]["template"] == "gold-t" and len(vm["storage"][0]["chain"]) == 1
    define_s = time.monotonic() - t0
    layers = glob.glob(str(h.state_dir / "vms" / "c*" / "layers" / "*.qcow2"))
    assert len(layers) == 20
    # Each clone costs a few hundred KiB, not the template's size.
    assert all(os.stat(p).st_blocks * 512 < 2 << 20 for p in layers)
    qemu_img_check_all(h)
    t = h.json("GET", "/v1/templates/gold-t")
    # The VM it was made from does not depend on it; the clones do.
    assert sorted(t["users"]) == sorted(f"c{i}" for i in range(20))

    # Two clones boot and see the template's data.
    start(h, "c1")
    start(h, "c2")
    assert boot_lines(h, "c1", 0) == ["golden-1"]
    assert boot_lines(h, "c2", 0) == ["golden-1"]
    h.json("POST", "/v1/vms/c2/kill", timeout=60)

    # Live snapshot, more writes, rollback: exactly the snapshot's data.
    guest_write(h, "c1", "after-template")
    s = snapshot(h, "c1", "s1")
    assert s["live"] is True and s["memory"] is False
    qemu_img_check_all(h)
    guest_write(h, "c1", "after-s1")
    n = boots(h, "c1")
    r = rollback(h, "c1", "s1")
    assert r["restarted"] is True and r["disk_seconds"] < 5
    assert h.state("c1") == "running"
    assert boot_lines(h, "c1", n) == ["golden-1", "after-template"]
    qemu_img_check_all(h)

    # A branch: write, snapshot s2 on it, back to s1, then to s2.
    guest_write(h, "c1", "branch-b")
    snapshot(h, "c1", "s2")
    guest_write(h, "c1", "after-s2")
    n = boots(h, "c1")
    rollback(h, "c1", "s1")
    assert boot_lines(h, "c1", n) == ["golden-1", "after-template"]
    guest_write(h, "c1", "branch-c")
    snapshot(h, "c1", "s3")
    n = boots(h, "c1")
    rollback(h, "c1", "s2")
    assert boot_lines(h, "c1", n) == ["golden-1", "after-template", "branch-b"]
    snaps = {s["name"]: s for s in h.json("GET", "/v1/vms/c1/snapshots")["snapshots"]}
    assert snaps["s2"]["parent"] == "s1" and snaps["s3"]["parent"] == "s1"
    assert snaps["s2"]["current"] and not snaps["s3"]["current"]
    qemu_img_check_all(h)

    # Deleting s1, the branch point, with the VM running: its layer merges
    # into both branches (live into the running one, offline into the
    # other); nothing the guest sees changes.
    guest_write(h, "c1", "before-delete")
    d = h.json("DELETE", "/v1/vms/c1/snapshots/s1", timeout=180)
    assert d["deleted"] == "s1"
    assert h.state("c1") == "running"
    guest_write(h, "c1", "after-delete")
    qemu_img_check_all(h)
    n = boots(h, "c1")
    rollback(h, "c1", "s3")
    assert boot_lines(h, "c1", n) == ["golden-1", "after-template", "branch-c"]
    n = boots(h, "c1")
    rollback(h, "c1", "s2")
    assert boot_lines(h, "c1", n) == ["golden-1", "after-template", "branch-b"]
    # Delete the rest; the chain shrinks back to one layer over the template.
    h.json("DELETE", "/v1/vms/c1/snapshots/s3", timeout=180)
    h.json("DELETE", "/v1/vms/c1/snapshots/s2", timeout=180)
    assert h.json("GET", "/v1/vms/c1/snapshots")["snapshots"] == []
    st = h.vm("c1")["storage"][0]
    assert len(st["chain"]) == 1 and st["layers"] == 1, st
    guest_write(h, "c1", "final")
    h.json("POST", "/v1/vms/c1/kill", timeout=60)
    n = boots(h, "c1")
    start(h, "c1")
    assert boot_lines(h, "c1", n) == ["golden-1", "after-template", "branch-b", "final"]
    h.json("POST", "/v1/vms/c1/kill", timeout=60)
    assert len(glob.glob(str(h.state_dir / "vms" / "c1" / "layers" / "*.qcow2"))) == 1
    qemu_img_check_all(h)

    # The template stays while anything stands on it; the error names users.
    code, body, _ = h.request("DELETE", "/v1/templates/gold-t")
    assert code == 409 and body["error"]["code"] == "in-use"
    assert "c1" in body["error"]["message"] and "20 VM" in body["error"]["message"]
    for i in range(20):
        h.json("DELETE", f"/v1/vms/c{i}")
    h.json("DELETE", "/v1/vms/gold")
    h.json("DELETE", "/v1/templates/gold-t")
    assert not (h.state_dir / "templates" / "gold-t").exists()
    print(f"20 clones defined in {define_s:.2f} s")


def test_memory_snapshot_resumes_guest(hsd, guest):
    h = hsd
    spec = disk_spec(guest, "mem", {"size": "16M"}, append="hs.counter")
    spec["cmdline"] = "console=ttyS0 hs.counter"
    h.json("POST", "/v1/vms", spec)
    start(h, "mem")
    h.console_wait("mem", "hs-counter 3")
    s = snapshot(h, "mem", "m1", memory=True)
    assert s["memory"] is True and s["live"] is True
    assert h.state("mem") == "running"
    out = h.console_wait("mem", "HS-GUEST-READY")
    at_snap = max(int(n) for n in re.findall(r"hs-counter (\d+)", out))
    # Let the counter run on well past the snapshot, then go back.
    h.console_wait("mem", f"hs-counter {at_snap + 4}", timeout=60)
    r = rollback(h, "mem", "m1")
    assert r["memory"] is True and r["restarted"] is True
    assert h.state("mem") == "running"
    # The guest goes on from the saved moment: no new boot, and the counter
    # continues from where the snapshot was taken, not from 1.
    rr = h.hsctl("console", "mem", "--no-replay", "--wait-for", "hs-counter", "--timeout", "30",
                 input="", timeout=40)
    assert rr.returncode == 0, rr.stderr
    n = int(re.findall(r"hs-counter (\d+)", rr.stdout)[0])
    assert at_snap <= n <= at_snap + 3, (at_snap, n, rr.stdout[-500:])
    assert "HS-GUEST-READY" not in rr.stdout
    qemu_img_check_all(h)
    h.json("POST", "/v1/vms/mem/kill", timeout=60)


def test_storage_bad_input(hsd, guest, tmp_path):
    h = hsd
    code, body, _ = h.request("POST", "/v1/vms",
                           disk_spec(guest, "x1", {"template": "no-such"}))
    assert code == 400 and "no-such" in body["error"]["message"]
    assert h.request("GET", "/v1/vms/x1")[0] == 404
    img = tmp_path / "t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "32M"], check=True)
    h.json("POST", "/v1/templates", {"name": "t", "file": str(img)})
    assert h.request("POST", "/v1/templates", {"name": "t", "file": str(img)})[0] == 409
    code, body, _ = h.request("POST", "/v1/vms", disk_spec(guest, "x2", {"template": "t", "size": "16M"}))
    assert code == 400 and "smaller" in body["error"]["message"]
    # An image with a backing file is refused at import (it would name a host file).
    ov = tmp_path / "ov.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(img), "-F", "qcow2",
                    str(ov)], check=True)
    code, body, _ = h.request("POST", "/v1/templates", {"name": "ov", "file": str(ov)})
    assert code == 400 and "backing file" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/templates", {"name": "../x", "file": str(img)})
    assert code == 400
    code, body, _ = h.request("POST", "/v1/templates", {"name": "y", "file": "/etc/shadow"})
    assert code == 403, body
    # Snapshots need a managed disk; names are checked; duplicates refused.
    h.create_guest(guest, "plain")
    code, body, _ = h.request("POST", "/v1/vms/plain/snapshots", {"name": "s"})
    assert code == 400 and body["error"]["code"] == "no-managed-disk"
    h.json("POST", "/v1/vms", disk_spec(guest, "x3", {"template": "t"}))
    assert h.request("POST", "/v1/vms/x3/snapshots", {"name": "a/b"})[0] in (400, 404)
    assert h.request("POST", "/v1/vms/x3/snapshots", {"name": "bad name"})[0] == 400
    snapshot(h, "x3", "s")
    assert h.request("POST", "/v1/vms/x3/snapshots", {"name": "s"})[0] == 409
    code, body, _ = h.request("POST", "/v1/vms/x3/snapshots", {"name": "m", "memory": True})
    assert code == 409 and body["error"]["code"] == "not-running"
    # A qcow2 declared raw is refused (it would become a template of its metadata).
    code, body, _ = h.request("POST", "/v1/templates", {"name": "r", "file": str(img), "format": "raw"})
    assert code == 400 and "qcow2" in body["error"]["message"]
    assert h.request("POST", "/v1/vms/x3/snapshots/nope/rollback")[0] == 404
    assert h.request("DELETE", "/v1/vms/x3/snapshots/nope")[0] == 404
    assert h.request("POST", "/v1/vms/x3/snapshots/s/explode")[0] == 404
    qemu_img_check_all(h)


def test_kill9_during_storage_operations(hsd_factory, guest):
    """kill -9 of hsd in the middle of snapshot, rollback and delete, and of
    QEMU in the middle of a live merge: every image stays consistent, and
    the restarted hsd leaves no half-done operation behind."""
    h = hsd_factory()
    h.json("POST", "/v1/vms", disk_spec(guest, "k", {"size": "32M"}))
    start(h, "k")
    h.console_wait("k", "HS-DISK-READY")
    guest_write(h, "k", "one")
    snapshot(h, "k", "base")
    for i, (op, delay) in enumerate([("snapshot", 0.0), ("snapshot", 0.02), ("snapshot", 0.06),
                                     ("rollback", 0.01), ("rollback", 0.05),
                                     ("delete", 0.0), ("delete", 0.03)]):
        if op == "delete":
            snapshot(h, "k", f"d{i}")
            guest_write(h, "k", f"w{i}")
        # Fire the request without waiting for its answer, then kill -9.
        path, body, method = {
            "snapshot": (f"/v1/vms/k/snapshots", {"name": f"x{i}"}, "POST"),
            "rollback": ("/v1/vms/k/snapshots/base/rollback", None, "POST"),
            "delete": (f"/v1/vms/k/snapshots/d{i}", None, "DELETE"),
        }[op]
        args = ["curl", "-s", "-m", "30", "--unix-socket", h.socket, "-X", method,
                f"http://hsd{path}"]
        if body:
            args += ["-d", json.dumps(body)]
        c = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        h.kill9()
        c.wait(timeout=40)
        h.start()
        # Whatever was cut short was finished or undone at start (a merge is
        # carried on once QEMU answers: wait for it; it drops layers).
        wait_for(lambda: "intent" not in json.loads(
            (h.state_dir / "vms" / "k" / "disks.json").read_text()), 60, "intent cleared")
        qemu_img_check_all(h)
        # A rollback cut short after its QEMU was started again leaves that
        # QEMU "starting" until the restarted hsd has re-adopted it.
        wait_for(lambda: h.state("k") != "starting", 60, "k settled")
        vm = h.vm("k")
        if vm["state"] != "running":
            n = boots(h, "k")
            start(h, "k")
            lines = boot_lines(h, "k", n)
            assert lines[0] == "one", lines
        # The files the model names are exactly the files there.
        d = json.loads((h.state_dir / "vms" / "k" / "disks.json").read_text())
        ids = {l["id"] for l in d["disks"][0]["layers"]}
        files = {int(os.path.basename(p).split(".")[0])
                 for p in glob.glob(str(h.state_dir / "vms" / "k" / "layers" / "*.qcow2"))}
        assert ids == files, (op, delay, ids, files)

    # QEMU killed during a live merge: the merge fails cleanly or finishes;
    # the VM boots from consistent layers with its data.
    guest_write(h, "k", "pre-merge")
    snapshot(h, "k", "m-a")
    guest_write(h, "k", "pre-merge-2")
    snapshot(h, "k", "m-b")
    pid = h.vm("k")["pid"]
    args = ["curl", "-s", "-m", "60", "--unix-socket", h.socket, "-X", "DELETE",
            "http://hsd/v1/vms/k/snapshots/m-a"]
    c = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    c.wait(timeout=70)
    wait_for(lambda: h.state("k") in ("stopped", "crashed"), 30, "QEMU gone")
    qemu_img_check_all(h)
    n = boots(h, "k")
    start(h, "k")
    lines = boot_lines(h, "k", n)
    assert lines[0] == "one" and "pre-merge-2" in lines, lines
    # Deleting again (offline now if it failed) finishes the job.
    h.json("POST", "/v1/vms/k/kill", timeout=60)
    names = [s["name"] for s in h.json("GET", "/v1/vms/k/snapshots")["snapshots"]]
    if "m-a" in names:
        h.json("DELETE", "/v1/vms/k/snapshots/m-a", timeout=120)
    qemu_img_check_all(h)
    n = boots(h, "k")
    start(h, "k")
    assert "pre-merge-2" in boot_lines(h, "k", n)
    h.json("POST", "/v1/vms/k/kill", timeout=60)


def test_cloud_init_volume_and_instance_id(hsd, guest):
    """The NoCloud volume as the guest sees it (the real cloud-init is
    tested in test_cloud_init.py with a Debian guest)."""
    h = hsd
    ci = {"user_data": "#cloud-config\nruncmd:\n  - [echo, hi]\n", "hostname": "web-1",
          "network_config": "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
          "ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t@x"}

    def make(name):
        spec = {"name": name, "memory_mib": 128, "accel": "tcg", "kernel": guest["kernel"],
                "initrd": guest["initrd"], "cmdline": "console=ttyS0 hs.cidata",
                "cloud_init": ci}
        h.json("POST", "/v1/vms", spec)
        start(h, name)
        out = h.console_wait(name, "HS-CIDATA-END")
        assert "HS-CIDATA-FAILED" not in out
        meta = dict(re.findall(r"HS-CIDATA (\S+): (\S+)", out))
        files = dict(re.findall(r"HS-CIDATA-FILE (\S+) (\d+)", out))
        h.json("POST", f"/v1/vms/{name}/kill", timeout=60)
        return meta, files

    m1, f1 = make("ci1")
    assert m1["local-hostname"].strip('"') == "web-1"
    assert m1["instance-id"].strip('"').startswith("hs-")
    assert int(f1["user-data"]) == len(ci["user_data"])
    assert int(f1["network-config"]) == len(ci["network_config"])
    # Same data, another VM (a clone): another instance-id, so cloud-init
    # runs again there.
    m2, _ = make("ci2")
    assert m2["instance-id"] != m1["instance-id"]
    # The same VM keeps its id across starts.
    start(h, "ci1")
    out = h.hsctl("console", "ci1", "--no-replay", "--wait-for", "HS-CIDATA-END", "--timeout",
                  "60", input="", timeout=70).stdout
    assert dict(re.findall(r"HS-CIDATA (\S+): (\S+)", out))["instance-id"] == m1["instance-id"]
    h.json("POST", "/v1/vms/ci1/kill", timeout=60)
    # Bad cloud-init data is refused with the field named.
    bad = dict(ci, user_data="hello: [")
    code, body, _ = h.request("POST", "/v1/vms", {"name": "ci3", "memory_mib": 128,
                                               "kernel": guest["kernel"], "cloud_init": bad})
    assert code == 400 and "cloud_init.user_data" in body["error"]["message"]
    code, body, _ = h.request("POST", "/v1/vms", {"name": "ci3", "memory_mib": 128,
                                               "kernel": guest["kernel"],
                                               "cloud_init": dict(ci, ssh_key="-----BEGIN OPENSSH PRIVATE KEY-----")})
    assert code == 400 and "cloud_init.ssh_key" in body["error"]["message"]
