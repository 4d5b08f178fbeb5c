# SPDX-License-Identifier: Apache-2.0
"""GET /metrics: valid Prometheus exposition (promtool), values that match
the kernel's and QEMU's own counters, and a scrape that a frozen QEMU does
not delay."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import wait_for


def scrape(hsd):
    st, _, text = hsd.request("GET", "/metrics", timeout=10)
    assert st == 200
    return text.decode()


def value(text, name, **labels):
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_metrics_valid_and_true(hsd, guest, tmp_path):
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True,
                   capture_output=True)
    hsd.create_guest(guest, "mx", extra=["--disk", str(disk)])
    hsd.hsctl("start", "mx", check=True)
    hsd.console_wait("mx", "HS-GUEST-READY")
    # the guest reads 8 MiB of its disk
    r = hsd.hsctl("console", "mx", "--no-replay", "--wait-for", "READ-DONE", "--timeout", "60",
                  input="dd if=/dev/vda of=/dev/null bs=1M count=8 2>/dev/null; echo READ-DONE\n",
                  timeout=90)
    assert r.returncode == 0, r.stdout[-1000:]
    text = wait_for(lambda: (t := scrape(hsd)) and
                    (value(t, "hsd_vm_block_read_bytes_total", vm="mx", disk="disk0") or 0)
                    >= 8 << 20 and t, 20, "block stats to show the read")
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=30)
        assert p.returncode == 0, p.stdout + p.stderr
    else:
        pytest.fail("promtool missing (Debian package prometheus): scripts/install-deps.sh installs it")
    assert value(text, "hsd_vm_running", vm="mx") == 1
    assert value(text, "hsd_vms", state="running") == 1
    assert value(text, "hsd_vm_memory_nominal_bytes", vm="mx") == 256 << 20
    # vCPU time against the kernel's own figure for that thread
    pid = hsd.vm("mx")["pid"]
    cpus = hsd.json("POST", "/v1/vms/mx/qmp", {"execute": "query-cpus-fast"})["return"]
    tid = cpus[0]["thread-id"]
    text = scrape(hsd)
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    kernel = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    got = value(text, "hsd_vm_cpu_seconds_total", vm="mx", vcpu="0")
    assert got is not None and abs(got - kernel) < 0.5, (got, kernel)
    assert value(text, "hsd_vm_vcpu_wait_seconds_total", vm="mx", vcpu="0") is not None
    rss = value(text, "hsd_vm_memory_rss_bytes", vm="mx")
    assert rss and rss > 16 << 20
    assert value(text, "hsd_vm_qmp_rtt_seconds", vm="mx") < 1
    # bytes read match QEMU's own query-blockstats
    bs = hsd.json("POST", "/v1/vms/mx/qmp", {"execute": "query-blockstats"})["return"]
    qemu_rd = [d["stats"]["rd_bytes"] for d in bs if "disk0" in d.get("qdev", "")][0]
    assert value(text, "hsd_vm_block_read_bytes_total", vm="mx", disk="disk0") == qemu_rd
    # host figures
    assert value(text, "hsd_host_memory_total_bytes") > 0
    if os.path.exists("/sys/kernel/mm/ksm/pages_sharing"):
        assert value(text, "hsd_ksm_pages_sharing") is not None
    hsd.hsctl("kill", "mx", check=True)
    text = scrape(hsd)
    assert value(text, "hsd_vm_running", vm="mx") == 0
    assert value(text, "hsd_vm_cpu_seconds_total", vm="mx", vcpu="0") is None


def test_frozen_qemu_does_not_delay_a_scrape(hsd, guest):
    hsd.create_guest(guest, "ice")
    hsd.create_guest(guest, "warm")
    hsd.hsctl("start", "ice", check=True)
    hsd.hsctl("start", "warm", check=True)
    wait_for(lambda: value(scrape(hsd), "hsd_vm_qmp_rtt_seconds", vm="ice") is not None, 20,
             "first statistics")
    pid = hsd.vm("ice")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(7)  # a collection round or more meets the frozen QEMU
        for _ in range(5):
            t0 = time.monotonic()
            text = scrape(hsd)
            assert time.monotonic() - t0 < 0.5
            assert value(text, "hsd_vm_running", vm="warm") == 1
        assert value(text, "hsd_vm_stats_age_seconds", vm="ice") > 5
        assert value(text, "hsd_vm_stats_age_seconds", vm="warm") < 8
    finally:
        os.kill(pid, signal.SIGCONT)
    hsd.hsctl("kill", "ice", check=True)
    hsd.hsctl("kill", "warm", check=True)
