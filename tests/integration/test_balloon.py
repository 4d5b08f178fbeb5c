# SPDX-License-Identifier: Apache-2.0
"""Guest memory statistics and the automatic balloon policy, with the real
guest under TCG: the guest's stats appear in GET /v1/vms/NAME and hsctl
info and follow what it does; with the policy on and watermarks above the
host's MemAvailable (forced pressure) a VM with a floor gives memory to its
balloon (never below the floor: the guest's own MemTotal shrinks), a VM
without one is untouched; with tiny watermarks it all comes back."""
import re

from conftest import wait_for
from test_limits import guest_run, meminfo_total_kib

MEM = 256
FLOOR = 160  # above what the idle guest uses plus the policy's 64 MiB margin


def stats(h, name):
    return h.vm(name).get("balloon", {}).get("stats")


def guest_available_mib(h, name, tag):
    out = guest_run(h, name, f"echo MA-{tag} $(grep MemAvailable /proc/meminfo)", tag)
    return int(re.findall(rf"MA-{tag} MemAvailable: +(\d+) kB", out)[-1]) // 1024


def test_balloon_stats_and_policy(hsd_factory, guest):
    h = hsd_factory(extra_args=["--balloon-stats-interval", "1"])
    h.create_guest(guest, "bf", memory=MEM, extra=("--balloon-floor", f"{FLOOR}M"))
    h.create_guest(guest, "bn", memory=MEM)
    assert h.vm("bf")["spec"]["balloon_floor_mib"] == FLOOR
    assert "balloon_floor_mib" not in h.vm("bn")["spec"]
    for n in ("bf", "bn"):
        h.json("POST", f"/v1/vms/{n}/start", timeout=120)
    for n in ("bf", "bn"):
        h.console_wait(n, "HS-GUEST-READY", timeout=180)

    # Stats appear, and say what the guest's /proc/meminfo says.
    st = wait_for(lambda: stats(h, "bf"), 60, "guest memory stats")
    b = h.vm("bf")["balloon"]
    assert b["target_mib"] == MEM and b["floor_mib"] == FLOOR and b["auto"] is False
    assert 0 < st["free_mib"] <= st["available_mib"] <= st["total_mib"] <= MEM
    assert st["age_s"] < 30
    avail = guest_available_mib(h, "bf", "a1")
    assert abs(stats(h, "bf")["available_mib"] - avail) < 32
    info = h.hsctl("info", "bf", check=True).stdout
    assert re.search(r"Guest mem: +free \d+ MiB, available \d+ MiB", info), info
    assert f"floor {FLOOR} MiB (automatic policy off)" in info

    # They follow the guest: 64 MiB in a tmpfs is no longer available.
    guest_run(h, "bf", "mkdir -p /run/t && dd if=/dev/zero of=/run/t/f bs=1M count=64 2>/dev/null",
              "f1")
    wait_for(lambda: stats(h, "bf")["available_mib"] <= avail - 48, 30,
             "the stats to show 64 MiB less available")
    guest_run(h, "bf", "rm -f /run/t/f", "f2")
    wait_for(lambda: stats(h, "bf")["available_mib"] >= avail - 16, 30,
             "the stats to show the memory available again")

    # Forced pressure: watermarks far above the host's MemAvailable.
    before_bf = meminfo_total_kib(h, "bf", "m1")
    before_bn = meminfo_total_kib(h, "bn", "m2")
    out = h.hsctl("balloon", "--mode", "auto", "--low", "1T", "--high", "1025G", check=True).stdout
    assert "Policy:      auto, host under memory pressure" in out, out
    wait_for(lambda: h.vm("bf").get("balloon_actual_mib", MEM) <= FLOOR + 8, 120,
             "the policy to take memory from bf")
    # Settled at the floor (this guest uses far less), never below.
    assert h.json("GET", "/v1/balloon")["pressure"] is True
    vm = h.vm("bf")
    assert vm["balloon"]["auto_target_mib"] == FLOOR
    assert vm["balloon"]["auto"] is True
    assert vm["balloon_actual_mib"] >= FLOOR
    wait_for(lambda: meminfo_total_kib(h, "bf", "m3") <= before_bf - (MEM - FLOOR - 16) * 1024, 60,
             "the guest to see less memory")
    bal = h.json("GET", "/v1/balloon")
    row = [v for v in bal["vms"] if v["name"] == "bf"][0]
    assert row["reclaimed_mib"] == MEM - FLOOR
    assert bal["reclaimed_mib"] == MEM - FLOOR
    out = h.hsctl("balloon", check=True).stdout
    assert re.search(rf"^bf +{FLOOR} +{MEM} +{FLOOR} ", out, re.M), out
    # The VM without a floor is untouched.
    vn = h.vm("bn")
    assert "auto_target_mib" not in vn["balloon"]
    assert vn.get("balloon_actual_mib", MEM) == MEM
    assert meminfo_total_kib(h, "bn", "m4") == before_bn
    assert f"vm bf: balloon lowered from {MEM} to {FLOOR} MiB" in h.log_text()

    # A user's target still wins as the normal one; the floor changes live.
    vm = h.json("PATCH", "/v1/vms/bf", {"balloon_floor_mib": FLOOR + 32})
    assert vm["spec"]["balloon_floor_mib"] == FLOOR + 32
    wait_for(lambda: h.vm("bf").get("balloon_actual_mib", 0) >= FLOOR + 32, 60,
             "the floor to rise")
    assert h.vm("bf")["balloon"]["auto_target_mib"] == FLOOR + 32

    # An hsd restart keeps the policy (STATE/balloon.json); the re-adopted
    # guest reports its stats again and counts as reclaimed.
    h.stop()
    h.start()
    assert h.json("GET", "/v1/balloon")["config"]["mode"] == "auto"
    wait_for(lambda: stats(h, "bf") and stats(h, "bf")["age_s"] < 10, 60,
             "stats after the restart")
    b = h.vm("bf")["balloon"]
    assert b["auto_target_mib"] == FLOOR + 32 and b["actual_mib"] == FLOOR + 32, b

    # Pressure over: tiny watermarks, memory back to the target.
    h.hsctl("balloon", "--low", "1", "--high", "2", check=True)
    wait_for(lambda: h.vm("bf").get("balloon_actual_mib") == MEM, 120,
             "the policy to give the memory back")
    assert "auto_target_mib" not in h.vm("bf")["balloon"]
    assert h.json("GET", "/v1/balloon")["pressure"] is False
    wait_for(lambda: meminfo_total_kib(h, "bf", "m5") >= before_bf - 1024, 60,
             "the guest to see all its memory again")
    for n in ("bf", "bn"):
        h.json("POST", f"/v1/vms/{n}/kill", timeout=60)


def test_balloon_bad_input(hsd_factory, guest):
    h = hsd_factory()
    h.create_guest(guest, "b1", memory=MEM)
    bad = [({"mode": "on"}, "mode"), ({"low_mib": -1}, "low_mib"),
           ({"high_mib": "1G"}, "high_mib"), ({"low_mib": 10, "high_mib": 5}, "low_mib"),
           ({"max_step_mib": 0}, "max_step_mib"), ({"speed": 1}, "speed")]
    for body, field in bad:
        code, ans, _ = h.request("PUT", "/v1/balloon", body)
        assert code == 400 and field in ans["error"]["message"], (body, ans)
    assert h.json("GET", "/v1/balloon")["config"]["mode"] == "off"
    for body in ({"balloon_floor_mib": 8}, {"balloon_floor_mib": MEM + 1},
                 {"balloon_floor_mib": "x"}, {"balloon_floor_mib": -5},
                 {"balloon_mib": 100, "balloon_floor_mib": 200}):
        code, ans, _ = h.request("PATCH", "/v1/vms/b1", body)
        assert code == 400 and "balloon_floor_mib" in ans["error"]["message"], (body, ans)
    h.json("PATCH", "/v1/vms/b1", {"balloon_floor_mib": 100})
    # A target below the floor is refused too.
    code, ans, _ = h.request("PATCH", "/v1/vms/b1", {"balloon_mib": 64})
    assert code == 400 and "balloon_floor_mib" in ans["error"]["message"], ans
    for args, words in ((["set", "b1", "--balloon-floor", "lots"], "'lots' is not a size"),
                        (["balloon", "--mode", "on"], "not auto or off"),
                        (["balloon", "--low", "x"], "--low")):
        r = h.hsctl(*args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    r = h.hsctl("set", "b1", "--balloon-floor", "1G")
    assert r.returncode == 1 and "balloon_floor_mib" in r.stderr, r.stderr
    r = h.hsctl("set", "b1", "--balloon-floor", "none", check=True)
    assert "no balloon floor" in r.stdout
    r = h.hsctl("balloon", "--low", "2T", "--high", "1T")
    assert r.returncode == 1 and "low_mib" in r.stderr, r.stderr
