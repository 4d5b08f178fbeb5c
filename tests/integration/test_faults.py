# SPDX-License-Identifier: Apache-2.0
"""kill -9 of hsd at random moments of define/start/stop/delete loops: after
a restart every VM is in a true state, every state file is readable, and
there is no orphan or duplicate QEMU."""
import json
import os
import random
import signal
import threading
import time

from conftest import pid_alive, qemu_pids_of, wait_for

ROUNDS = int(os.environ.get("HS_FAULT_ROUNDS", "12"))


def check_consistent(hsd):
    # Every state file parses.
    vms_dir = hsd.state_dir / "vms"
    for d in vms_dir.iterdir():
        assert not d.name.startswith("."), f"leftover {d} after restart"
        for f in ("spec.json", "status.json"):
            json.loads((d / f).read_text())
    api = {v["name"]: v for v in hsd.json("GET", "/v1/vms")["vms"]}
    assert set(api) == {d.name for d in vms_dir.iterdir()}
    live = qemu_pids_of(hsd)
    claimed = set()
    for name, v in api.items():
        if v["state"] in ("running", "paused", "starting", "stopping"):
            assert v["pid"] and pid_alive(v["pid"]), v
            claimed.add(v["pid"])
        else:
            assert v["pid"] == 0, v
    # No orphan QEMU, no duplicate: every live QEMU of this hsd belongs to
    # exactly one active VM.
    assert live == claimed, (live, claimed, api)
    return api


def test_kill9_at_random_points(hsd, guest):
    rng = random.Random(int(os.environ.get("HS_FAULT_SEED", "1234")))
    names = [f"f{i}" for i in range(4)]
    for rnd in range(ROUNDS):
        stop = threading.Event()

        def churn():
            while not stop.is_set():
                n = rng.choice(names)
                op = rng.choice(["create", "start", "start", "stop", "kill", "delete"])
                try:
                    if op == "create":
                        hsd.request("POST", "/v1/vms", {
                            "name": n, "accel": "tcg", "memory_mib": 64,
                            "kernel": guest["kernel"], "initrd": guest["initrd"],
                            "cmdline": "console=ttyS0"}, timeout=5)
                    elif op == "delete":
                        hsd.request("DELETE", f"/v1/vms/{n}", timeout=5)
                    elif op == "stop":
                        hsd.request("POST", f"/v1/vms/{n}/stop", {"force": True}, timeout=5)
                    else:
                        hsd.request("POST", f"/v1/vms/{n}/{op}", timeout=5)
                except OSError:
                    return  # hsd is gone

        t = threading.Thread(target=churn)
        t.start()
        time.sleep(rng.uniform(0.05, 0.6))
        hsd.kill9()
        stop.set()
        t.join(10)
        hsd.start()
        # Adoption settles quickly (QMP reconnect).
        time.sleep(0.3)
        api = check_consistent(hsd)
        # Everything still controllable.
        for name, v in api.items():
            if v["state"] in ("running", "paused"):
                wait_for(lambda: hsd.vm(name).get("qmp_connected"), 10, f"{name} QMP")
                st = hsd.json("POST", f"/v1/vms/{name}/qmp", {"execute": "query-status"})
                assert st["return"]["status"] in ("running", "paused", "prelaunch"), st
    # Tidy: kill what runs, through hsd.
    for v in hsd.json("GET", "/v1/vms")["vms"]:
        if v["state"] in ("running", "paused", "starting", "stopping"):
            hsd.request("POST", f"/v1/vms/{v['name']}/kill")
    assert qemu_pids_of(hsd) == set()
