# SPDX-License-Identifier: Apache-2.0
"""Helpers of the networking tests (test_network.py on this host,
tests/iommu/test_net_real.py inside the IOMMU guest, bench/net.py):
network namespaces made and deleted by name, an hsd inside one, test
guests with NICs, and what a guest or a namespace sees of its network.

Every hsd of these tests runs inside a network namespace of its own
(`ip netns exec NS hsd ...`): bridges, taps, veths and addresses exist
only there, and go when the namespace is deleted. A module, not a
conftest: test modules import it without their tests being collected
twice."""
import json
import os
import re
import secrets
import subprocess
import time

from conftest import guest_run, wait_for

NS_PREFIX = "hs-nt-"


def ip(*args, ns=None, check=True, timeout=30):
    """`ip [-n NS] ARGS`; raises with ip's stderr when check and it fails."""
    argv = ["ip", *(("-n", ns) if ns else ()), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: rc={r.returncode}: {r.stderr.strip()}")
    return r


def nsexec(ns, *argv, check=False, timeout=30, **kw):
    """Run argv inside namespace ns (a fresh mount namespace whose /sys is
    ns's: sysfs of its interfaces is readable there)."""
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"in {ns}: {' '.join(argv)}: rc={r.returncode}: {r.stderr.strip()}")
    return r


class Namespaces:
    """Network namespaces hs-nt-<random>, deleted by name by cleanup()."""

    def __init__(self):
        self.made = []

    def make(self):
        n = NS_PREFIX + secrets.token_hex(4)
        ip("netns", "add", n)
        self.made.append(n)
        ip("link", "set", "lo", "up", ns=n)
        return n

    def cleanup(self):
        for n in reversed(self.made):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)
        self.made = []


def start_hsd_in(hsd_factory, ns, name="net", extra_args=()):
    h = hsd_factory(name, extra_args, prefix=["ip", "netns", "exec", ns])
    h.ns = ns
    return h


# ---- what a namespace has

def link_exists(ns, ifname):
    return ip("link", "show", "dev", ifname, ns=ns, check=False).returncode == 0


def sysfs(ns, path):
    """A sysfs file as ns sees it (None when it cannot be read)."""
    r = nsexec(ns, "cat", path)
    return r.stdout.strip() if r.returncode == 0 else None


def bridge_ports(ns, bridge):
    r = nsexec(ns, "ls", f"/sys/class/net/{bridge}/brif")
    return sorted(r.stdout.split()) if r.returncode == 0 else []


# One ICMP echo (this host may have no ping program): exit status 0 when
# argv[1] answers within argv[2] seconds. Raw socket: run as root.
PING_PY = r"""
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
ident, addr, wait = os.getpid() & 0xffff, sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"hs-nettest-ping!"
s.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr), ident, 1) + hdr[8:], (addr, 0))
end = time.monotonic() + wait
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        pkt, src = s.recvfrom(2048)
    except socket.timeout:
        break
    icmp = pkt[(pkt[0] & 15) * 4:]
    if src[0] == addr and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
        sys.exit(0)
sys.exit(1)
"""


# One Ethernet broadcast frame (ethertype 0x88b5, local experimental) sent
# from argv[1]; prints as JSON which of argv[2:] saw it leave towards their
# far end (packet sockets see a tap's outgoing frames whether or not the
# QEMU behind it reads them: no booted guest is needed).
FRAME_PY = r"""
import json, os, select, socket, sys, time
ETH_P_ALL, ETYPE = 3, 0x88b5
marker = b"hs-nettest-" + os.urandom(8).hex().encode()
socks = {}
for name in sys.argv[2:]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((name, 0))
    socks[s] = name
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind((sys.argv[1], 0))
src = open(f"/sys/class/net/{sys.argv[1]}/address").read().strip()
frame = b"\xff" * 6 + bytes.fromhex(src.replace(":", "")) + ETYPE.to_bytes(2, "big") + marker
seen = {n: False for n in socks.values()}
for _ in range(3):
    tx.send(frame.ljust(60, b"\0"))
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        r, _, _ = select.select(list(socks), [], [], max(0, end - time.monotonic()))
        for s in r:
            if marker in s.recv(4096):
                seen[socks[s]] = True
print(json.dumps(seen))
"""


def frame_reaches(ns, src, ports):
    """{port: bool}: which of the bridge's ports a broadcast frame sent
    from src (the far end of a veth on the bridge) goes out of."""
    r = nsexec(ns, "python3", "-c", FRAME_PY, src, *ports, check=True)
    return json.loads(r.stdout)


def ns_ping_once(ns, addr, wait=1.0):
    return nsexec(ns, "python3", "-c", PING_PY, addr, str(wait)).returncode == 0


def ns_ping(ns, addr, timeout=30):
    """Waits (bounded) until addr answers a ping from ns."""
    return wait_for(lambda: ns_ping_once(ns, addr), timeout,
                    f"{addr} to answer a ping from {ns}", interval=0.2)


def add_veth_pair(ns_a, a, ns_b, b, addr_b=None):
    """A veth pair: a in ns_a (up, no address), b in ns_b (up, with
    addr_b, e.g. "10.1.2.3/24")."""
    ip("link", "add", a, "type", "veth", "peer", "name", b, ns=ns_a)
    ip("link", "set", b, "netns", ns_b, ns=ns_a)
    ip("link", "set", a, "up", ns=ns_a)
    if addr_b:
        ip("addr", "add", addr_b, "dev", b, ns=ns_b)
    ip("link", "set", b, "up", ns=ns_b)


# ---- VMs

def vm_spec(guest, name, nics, cpus=1, memory=128, append="", **extra):
    return {"name": name, "cpus": cpus, "memory_mib": memory, "accel": "tcg",
            "kernel": guest["kernel"], "initrd": guest["initrd"],
            "cmdline": f"console=ttyS0 no_timer_check {append}".strip(), "nics": nics, **extra}


def create_vm(h, guest, name, nics, **kw):
    return h.json("POST", "/v1/vms", vm_spec(guest, name, nics, **kw), expect=(200, 201))


def start_vm(h, name, timeout=120):
    return h.json("POST", f"/v1/vms/{name}/start", timeout=timeout)


def boot(h, guest, name, nics, ready_timeout=120, **kw):
    """Creates and starts a test guest; returns once its shell is up."""
    create_vm(h, guest, name, nics, **kw)
    start_vm(h, name)
    h.console_wait(name, "HS-GUEST-READY", timeout=ready_timeout)


def boot_many(h, guest, names_nics, ready_timeout=120, **kw):
    """Creates and starts several guests, then waits for each (they boot
    side by side)."""
    for name, nics in names_nics:
        create_vm(h, guest, name, nics, **kw)
        start_vm(h, name)
    for name, _ in names_nics:
        h.console_wait(name, "HS-GUEST-READY", timeout=ready_timeout)


def stop_vm(h, name, timeout=60):
    h.json("POST", f"/v1/vms/{name}/stop", {"force": True}, timeout=timeout)
    h.wait_state(name, "stopped", timeout=timeout)


def api_error(h, method, path, body=None, timeout=60):
    """(status, error code, message) of a request expected to fail."""
    st, js, text = h.request(method, path, body, timeout=timeout)
    err = (js or {}).get("error") or {}
    return st, err.get("code"), err.get("message") or text.decode(errors="replace")


def nics_of(h, name):
    return h.json("GET", f"/v1/vms/{name}/nics")["nics"]


def nic_of(h, name, nic_id):
    for n in nics_of(h, name):
        if n["id"] == nic_id:
            return n
    return None


def qemu_argv(h, name):
    pid = h.vm(name)["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0")]


def qemu_device(h, name, dev_id):
    """The properties of QEMU's -device whose id is dev_id, from its argv
    (key=value,... or JSON): a dict, None when there is none."""
    for a in qemu_argv(h, name):
        if a.startswith("{"):
            try:
                d = json.loads(a)
            except ValueError:
                continue
        else:
            d = dict(kv.partition("=")[::2] for kv in a.split(",")[1:])
            d["driver"] = a.split(",")[0]
        if d.get("id") == dev_id:
            return d
    return None


# ---- inside a guest (its serial shell)

_seq = [0]


def _tag(what):
    _seq[0] += 1
    return f"{what}{_seq[0]}"


def guest_sh(h, name, cmd, timeout=60):
    return guest_run(h, name, cmd, _tag("sh"), timeout=timeout)


def guest_value(h, name, cmd, timeout=60):
    """The output of a shell command in the guest, on one line (the
    command's text, echoed by the console, is not mistaken for it)."""
    out = guest_run(h, name, f"echo HSV=$( ({cmd}) 2>&1 | tr '\\n' ' ')=VSH", _tag("val"),
                    timeout=timeout)
    m = re.findall(r"HSV=(.*?)=VSH", out)
    m = [v for v in m if not v.startswith("$(")]
    assert m, f"no value of '{cmd}' in: {out[-800:]}"
    return m[-1].strip()


def guest_addr(h, name, addr, dev="eth0", prefix=24):
    v = guest_value(h, name, f"ip link set {dev} up && ip addr add {addr}/{prefix} dev {dev} "
                    "&& echo ok")
    assert v == "ok", f"{name}: {dev} {addr}: {v}"


def guest_ping(h, name, addr, tries=10):
    """True when addr answers within `tries` pings of 2 s (the first ones
    may go to ARP); False when none does."""
    v = guest_value(h, name, f"r=fail; i=0; while [ $i -lt {tries} ]; do i=$((i+1)); "
                    f"if ping -c 1 -W 2 {addr} >/dev/null 2>&1; then r=ok; break; fi; done; echo $r",
                    timeout=3 * tries + 30)
    assert v in ("ok", "fail"), v
    return v == "ok"


def guest_wait(h, name, cmd, want, timeout=60, what=None):
    """Repeats cmd in the guest until its value is `want` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        v = guest_value(h, name, cmd, timeout=max(10, int(deadline - time.monotonic()) + 10))
        if v == want:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {what or cmd}: {v!r}, not {want!r}, after {timeout}s")
        time.sleep(1)


def guest_carrier(h, name, dev="eth0"):
    """(carrier, operstate) of dev in the guest."""
    v = guest_value(h, name, f"echo $(cat /sys/class/net/{dev}/carrier 2>/dev/null)/"
                    f"$(cat /sys/class/net/{dev}/operstate)")
    carrier, _, oper = v.partition("/")
    return carrier, oper


def guest_mac(h, name, dev="eth0"):
    return guest_value(h, name, f"cat /sys/class/net/{dev}/address")


def tun_flags(ns, tap):
    v = sysfs(ns, f"/sys/class/net/{tap}/tun_flags")
    return int(v, 16) if v else None


IFF_MULTI_QUEUE = 0x100


def kernel_has_vlan_filtering(ns):
    """Whether this kernel's bridges can filter VLANs (tried on a scratch
    bridge in ns)."""
    r = ip("link", "add", "hsvlprobe", "type", "bridge", "vlan_filtering", "1", ns=ns, check=False)
    if r.returncode == 0:
        ip("link", "del", "hsvlprobe", ns=ns, check=False)
    return r.returncode == 0


def host_has_vhost_net():
    return os.path.exists("/dev/vhost-net")
