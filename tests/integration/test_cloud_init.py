# SPDX-License-Identifier: Apache-2.0
"""cloud-init, the real one: a Debian 12 guest with the cloud-init package
(tests/guest/build-cloud-guest.sh, cached) boots under TCG from a template,
and its report on the serial console (hs-cloud-report.service, after
cloud-final) shows what cloud-init applied from hsd's NoCloud volume. Then
a clone of that VM gets a new instance-id and cloud-init runs again.

Slow (a few minutes): marked `slow`; scripts/test.sh runs it once, on the
normal build."""
import base64
import hashlib
import re
from pathlib import Path

import pytest

from conftest import guest_script

pytestmark = pytest.mark.slow

# A syntactically valid ed25519 public key (type string + 32 bytes).
def make_key(comment, seed):
    blob = (len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" +
            (32).to_bytes(4, "big") + hashlib.sha256(seed.encode()).digest())
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


USER_KEY = make_key("hsuser@test", "user")
DEFAULT_KEY = make_key("default@test", "default")


@pytest.fixture(scope="module")
def cloud_guest():
    return guest_script("build-cloud-guest.sh", "the cloud-init guest", 3000)


def user_data(tag):
    return f"""#cloud-config
users:
  - default
  - name: hsuser
    shell: /bin/sh
    ssh_authorized_keys:
      - {USER_KEY}
write_files:
  - path: /etc/hs-written
    content: "written-by-cloud-init {tag}\\n"
runcmd:
  - [sh, -c, "echo HS-RUNCMD $(cat /etc/hs-written) > /dev/ttyS0"]
"""


NETWORK = "version: 2\nethernets:\n  eth0:\n    dhcp4: false\n"


def cloud_spec(cg, name, template, hostname, tag):
    return {"name": name, "memory_mib": 768, "cpus": 2, "accel": "tcg",
            "kernel": cg["CLOUD_KERNEL"], "initrd": cg["CLOUD_INITRD"],
            "cmdline": cg["CLOUD_CMDLINE"], "disks": [{"template": template}],
            "cloud_init": {"user_data": user_data(tag), "network_config": NETWORK,
                           "ssh_key": DEFAULT_KEY, "hostname": hostname}}


def report(h, name, timeout=900):
    out = h.console_wait(name, "HS-CLOUD done", timeout=timeout)
    last = out.rsplit("HS-CLOUD hostname=", 1)
    assert len(last) == 2, out[-3000:]
    text = "HS-CLOUD hostname=" + last[1]
    rep = {"users": dict(re.findall(r"HS-CLOUD user=(\S+) (keys=\d+ sha256=\S+)", text))}
    for k in ("hostname", "instance-id", "datasource", "errors"):
        m = re.search(rf"HS-CLOUD {k}=(\S+)", text)
        rep[k] = m.group(1) if m else None
    rep["runcmd"] = re.findall(r"HS-RUNCMD (.*)", out)
    return rep


def keys_sum(*keys):
    return hashlib.sha256("".join(k + "\n" for k in keys).encode()).hexdigest()


def test_real_cloud_init_and_clone(hsd_factory, cloud_guest):
    cg = cloud_guest
    # A 16 MiB translation cache (hsd's default, for density) makes this
    # Python-heavy guest boot 3-4 times slower under TCG: 64 MiB here.
    h = hsd_factory(extra_args=["--allowed-dir", str(Path(cg["CLOUD_KERNEL"]).parent),
                                "--tcg-tb-size", "64"])
    h.json("POST", "/v1/templates", {"name": "debian-ci", "file": cg["CLOUD_IMAGE"]},
           timeout=600)

    h.json("POST", "/v1/vms", cloud_spec(cg, "ci-a", "debian-ci", "hs-ci-a", "a"))
    h.json("POST", "/v1/vms/ci-a/start", timeout=120)
    a = report(h, "ci-a")
    assert a["hostname"] == "hs-ci-a", a
    assert a["datasource"] and "NoCloud" in a["datasource"], a
    assert a["errors"] == "0", a
    assert a["instance-id"].startswith("hs-"), a
    # The user from user-data with its key; the meta-data key on the
    # distro's default user (Debian's cloud.cfg: "debian").
    assert a["users"]["hsuser"] == f"keys=1 sha256={keys_sum(USER_KEY)}", a
    assert a["users"]["debian"] == f"keys=1 sha256={keys_sum(DEFAULT_KEY)}", a
    assert any("written-by-cloud-init a" in r for r in a["runcmd"]), a
    h.json("POST", "/v1/vms/ci-a/stop", {"timeout": 120}, timeout=180)

    # A clone of that VM (its disk as a template, a new VM on it): a new
    # instance-id, so cloud-init runs again there with the clone's data.
    h.json("POST", "/v1/templates", {"name": "ci-golden", "vm": "ci-a"}, timeout=600)
    h.json("POST", "/v1/vms", cloud_spec(cg, "ci-b", "ci-golden", "hs-ci-b", "b"))
    h.json("POST", "/v1/vms/ci-b/start", timeout=120)
    b = report(h, "ci-b")
    assert b["instance-id"] != a["instance-id"], (a, b)
    assert b["hostname"] == "hs-ci-b", b
    assert any("written-by-cloud-init b" in r for r in b["runcmd"]), b
    assert b["users"]["hsuser"] == a["users"]["hsuser"]
    h.json("POST", "/v1/vms/ci-b/kill", timeout=60)
