# SPDX-License-Identifier: Apache-2.0
"""Operations: the config file (and its errors), SIGHUP reload, systemd's
readiness protocol, and the systemd units."""
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, HSD, ROOT, wait_for


def test_config_file_and_reload(hsd_factory, guest, tmp_path):
    conf = tmp_path / "hsd.conf"
    conf.write_text("# test\novercommit = 1.25\nstop-timeout = 7\n"
                    f"allowed-dir = {os.path.dirname(guest['kernel'])}\n")
    hsd = hsd_factory(allowed_dirs=False, extra_args=["--config", str(conf)])
    assert hsd.json("GET", "/v1/host")["overcommit"]["ratio"] == 1.25
    assert "configuration from" in hsd.log_text()
    # reload: a changed value applies without a restart
    conf.write_text("overcommit = 2.5\n")
    hsd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: hsd.json("GET", "/v1/host")["overcommit"]["ratio"] == 2.5, 10, "reload")
    assert "SIGHUP: reloaded" in hsd.log_text()
    # a broken file on reload: refused, the running settings stay
    conf.write_text("overcommit = 3\ncolour = blue\n")
    hsd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "not reloaded" in hsd.log_text(), 10, "the refusal")
    assert hsd.json("GET", "/v1/host")["overcommit"]["ratio"] == 2.5
    # the command line wins over the file
    conf.write_text("overcommit = 1.5\n")
    hsd.stop()
    hsd.extra_args += ["--overcommit", "4"]
    hsd.start()
    assert hsd.json("GET", "/v1/host")["overcommit"]["ratio"] == 4


def test_config_errors_name_the_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("overcommit = 2\n\nfrobnicate = yes\n")
    r = subprocess.run([str(HSD), "--config", str(conf), "--state-dir", str(tmp_path / "s"),
                        "--run-dir", str(tmp_path / "r")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2
    assert f"{conf}:3: unknown option 'frobnicate'" in r.stderr, r.stderr
    r = subprocess.run([str(HSD), "--config", str(tmp_path / "missing.conf")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = subprocess.run([str(HSD), "--overcommit", "many"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "overcommit" in r.stderr


def test_sd_notify_ready(hsd_factory, tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(15)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        hsd = hsd_factory()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    msg = s.recv(4096).decode()
    assert "READY=1" in msg and f"MAINPID={hsd.proc.pid}" in msg
    # ready means the API answers
    assert hsd.request("GET", "/v1")[0] == 200
    hsd.stop()
    assert "STOPPING=1" in s.recv(4096).decode()
    s.close()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units(tmp_path):
    unit = BUILD / "systemd" / "hsd.service"
    text = unit.read_text()
    assert "Type=notify" in text and "KillMode=process" in text
    # verify with ExecStart pointing at the built binary
    u = tmp_path / "hsd.service"
    u.write_text("\n".join(f"ExecStart={HSD}" if l.startswith("ExecStart=") else l
                           for l in text.splitlines()) + "\n")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(u)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    sysusers = ROOT / "systemd" / "hsd.sysusers"
    r = subprocess.run(["systemd-sysusers", "--dry-run", str(sysusers)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "root"
    root.mkdir()
    r = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                        str(ROOT / "systemd" / "hsd.tmpfiles")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert (root / "var/lib/hsd").stat().st_mode & 0o777 == 0o700
    assert (root / "run/hsd").is_dir()
