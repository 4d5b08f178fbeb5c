# SPDX-License-Identifier: Apache-2.0
"""The IOMMU guest (iommu_guest.py): a command from the host runs in a TCG
guest with an Intel IOMMU and the vfio modules; the smoke script
(tests/guest/iommu-smoke.sh) checks the IOMMU groups of the fixed test
devices, rebinding to vfio-pci by hand, and nested QEMU with vfio-pci.
~1 min (two guest boots under TCG)."""
import os
import re
import uuid

import pytest

import iommu_guest as ig

pytestmark = pytest.mark.slow

SMOKE = ig.ROOT / "tests" / "guest" / "iommu-smoke.sh"


# conftest's autouse _binaries wants hsd and hsctl built; nothing here
# runs them, so only what the runner needs is checked (and the test is
# skipped without it).
@pytest.fixture(scope="session", autouse=True)
def _binaries():
    miss = ig.missing_tools()
    if miss:
        pytest.skip("IOMMU guest: missing " + ", ".join(miss))


@pytest.fixture(scope="module")
def iommu_guest_image():
    return ig.image_or_skip()


@pytest.fixture(scope="module")
def smoke(iommu_guest_image, tmp_path_factory):
    out = tmp_path_factory.mktemp("iommu-smoke")
    kernel, initrd = iommu_guest_image
    r = ig.run(["/bin/sh", str(SMOKE)], timeout=600, out_dir=out, kernel=kernel, initrd=initrd)
    print(r.console)
    print("timings:", r.timings)
    lines = [line.strip()[len("SMOKE "):] for line in r.console.splitlines()
             if line.strip().startswith("SMOKE ")]
    return r, lines, out


def _line(lines, prefix):
    got = [x for x in lines if x.startswith(prefix)]
    assert got, f"no 'SMOKE {prefix}' line"
    return got[0]


def test_runner_basics(iommu_guest_image, tmp_path):
    """Exit status, env, cwd, the out dir (same path inside), a read-only
    host root under a writable overlay, the guest's own kernel."""
    kernel, initrd = iommu_guest_image
    probe = f"/etc/hs-iommu-probe-{uuid.uuid4().hex}"
    script = (f'echo "$HS_IOMMU_GUEST $FOO $(pwd) $(uname -r)" > "$HS_OUT/facts"; '
              f'echo written > {probe} && cat {probe} >> "$HS_OUT/facts"; '
              'ls /dev/vfio/vfio >> "$HS_OUT/facts"; exit 7')
    r = ig.run(["/bin/sh", "-c", script], timeout=300, out_dir=tmp_path, env={"FOO": "b a r"},
               cwd="/usr", kernel=kernel, initrd=initrd)
    assert r.rc == 7, r.console
    assert "HS-IOMMU-ROOT overlay" in r.console
    facts = (tmp_path / "facts").read_text().splitlines()
    assert facts[0].startswith("1 b a r /usr ") and facts[0].endswith("-cloud-amd64"), facts
    assert facts[1:] == ["written", "/dev/vfio/vfio"], facts
    assert not os.path.exists(probe), "a write in the guest reached the host's /etc"
    assert (tmp_path / "hs-exit-code").read_text().strip() == "7"
    with open(tmp_path / "console.log", newline="") as f:  # CR LF kept
        assert f.read() == r.console
    assert r.timings["run"] < r.timings["exit"] <= r.timings["total"]


def test_groups(smoke):
    r, lines, _ = smoke
    # The init's summary line and the smoke's per-group lines agree.
    groups = {tuple(v) for v in r.groups.values()}
    assert (ig.LONE_NIC,) in groups
    assert (ig.E1000E,) in groups
    assert (ig.MF_FN0, ig.MF_FN1) in groups, "the two functions of slot 6 share one group"
    assert tuple(ig.ICH9_FUNCS) in groups
    assert (ig.HOSTROOT_FS,) in groups and (ig.HSOUT_FS,) in groups
    g = {int(x.split()[1]): x.split()[2:] for x in lines if x.startswith("GROUP ")}
    members = {tuple(m.split("/")[0] for m in v): v for v in g.values()}
    assert members[(ig.LONE_NIC,)] == [f"{ig.LONE_NIC}/1af4:1000/virtio-pci"]
    assert members[(ig.E1000E,)] == [f"{ig.E1000E}/8086:10d3/none"]
    assert members[(ig.MF_FN0, ig.MF_FN1)] == [f"{ig.MF_FN0}/1af4:1000/virtio-pci",
                                               f"{ig.MF_FN1}/1af4:1000/virtio-pci"]
    assert [m.split("/")[2] for m in members[tuple(ig.ICH9_FUNCS)]] == ["none"] * 3


def test_rebind_to_vfio_and_back(smoke):
    r, lines, _ = smoke
    grp = [g for g, v in r.groups.items() if v == [ig.LONE_NIC]][0]
    m = re.match(r"REBIND (\S+) driver=(\S+) group=(\d+) dev=(.*)", _line(lines, f"REBIND {ig.LONE_NIC}"))
    assert m and m[2] == "vfio-pci" and int(m[3]) == grp, lines
    assert str(grp) in m[4].split(), "no /dev/vfio/<group>"
    restore = _line(lines, "RESTORE")
    for d in (ig.LONE_NIC, ig.MF_FN0, ig.MF_FN1):
        assert f"{d} driver=virtio-pci" in restore


def test_nested_qemu_with_vfio_pci(smoke):
    r, lines, _ = smoke
    # root (CAP_IPC_LOCK) needs no memlock limit
    assert re.match(r"NESTED-ROOT started .*devices=pt0@0:02\.0=1af4:1000$", _line(lines, "NESTED-ROOT started"))
    # without CAP_IPC_LOCK, the default 8 MiB limit is too small for 64 MiB of RAM
    err = _line(lines, "NESTED-LOWMEMLOCK qemu-exit=")
    assert "qemu-exit=1" in err and "VFIO_MAP_DMA failed: Cannot allocate memory" in err, err
    assert re.match(r"NESTED-PASSTHROUGH started .*devices=pt0@0:02\.0=1af4:1000$",
                    _line(lines, "NESTED-PASSTHROUGH started"))
    assert "qemu-exit=0" in _line(lines, "NESTED-PASSTHROUGH qemu-exit=")


def test_nested_qemu_needs_the_whole_group(smoke):
    r, lines, _ = smoke
    half = _line(lines, "NESTED-HALFGROUP qemu-exit=")
    assert "qemu-exit=1" in half and "is not viable" in half, half
    assert re.search(r"devices=pt0@0:02\.0=1af4:1000,pt1@0:03\.0=1af4:1000$",
                     _line(lines, "NESTED-WHOLEGROUP started"))


def test_smoke_passed(smoke):
    r, lines, _ = smoke
    assert r.rc == 0 and "DONE fails=0" in lines, r.console
