#!/usr/bin/env bash
# Smoke test of the EFI Secure Boot guest (build-efi-guest.sh) with raw QEMU,
# no hsd: builds or reuses the image, boots it ONCE under TCG on q35 + SMM
# with the secboot OVMF, an swtpm TPM 2.0, a qemu-guest-agent channel and a
# user-mode NIC, then checks over the serial console (Secure Boot on, TPM
# answers) and over the agent socket (host name, 10.0.2.15, fsfreeze/thaw in
# the agent's log file). Prints "SMOKE ..." lines and the boot times.
#
# Exit: 0 all checks passed, 1 a check failed, 77 qemu-system-x86_64, swtpm
# or the OVMF files are not available.
# Env: HS_EFI_SMOKE_TIMEOUT (boot timeout, s, default 600), HS_EFI_SMOKE_SMP
# (default 1), HS_EFI_SMOKE_MEM (MiB, default 1024), HS_EFI_SMOKE_KEEP=1 (keep
# the temp dir with console.log); the build-efi-guest.sh variables.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CODE_DEFAULT=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
VARS_DEFAULT=/usr/share/OVMF/OVMF_VARS_4M.ms.fd

say() { printf 'efi-smoke: %s\n' "$*" >&2; }
for t in qemu-system-x86_64 swtpm python3 qemu-img; do
    command -v "$t" >/dev/null 2>&1 || { say "skip: $t not found"; exit 77; }
done
for f in "$CODE_DEFAULT" "$VARS_DEFAULT"; do
    [ -r "$f" ] || { say "skip: $f not found (package ovmf)"; exit 77; }
done

out=$("$HERE/build-efi-guest.sh") || { say "build-efi-guest.sh failed"; exit 1; }
eval "$out"
: "${EFI_IMAGE:?}" "${EFI_CODE:?}" "${EFI_VARS:?}"

T=$(mktemp -d /tmp/hs-efi-smoke.XXXXXX)
SWTPM_PID=
cleanup() {
    local p
    if [ -s "$T/qemu.pid" ]; then
        p=$(cat "$T/qemu.pid")
        kill "$p" 2>/dev/null || true
    fi
    if [ -n "$SWTPM_PID" ]; then kill "$SWTPM_PID" 2>/dev/null || true; fi
    if [ "${HS_EFI_SMOKE_KEEP:-}" = 1 ]; then
        say "kept $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

cp "$EFI_VARS" "$T/vars.fd"
qemu-img create -q -f qcow2 -b "$EFI_IMAGE" -F qcow2 "$T/disk.qcow2"
mkdir -p "$T/tpm"
swtpm socket --tpm2 --tpmstate dir="$T/tpm" --ctrl type=unixio,path="$T/swtpm.sock" \
    --terminate --log file="$T/swtpm.log" &
SWTPM_PID=$!
for _ in $(seq 50); do [ -S "$T/swtpm.sock" ] && break; sleep 0.1; done
[ -S "$T/swtpm.sock" ] || { say "swtpm did not start"; exit 1; }

export T EFI_CODE SWTPM_PID
export SMP=${HS_EFI_SMOKE_SMP:-1} MEM=${HS_EFI_SMOKE_MEM:-1024}
export BOOT_TIMEOUT=${HS_EFI_SMOKE_TIMEOUT:-600}
python3 - <<'PY'
import json, os, re, socket, subprocess, sys, threading, time

T = os.environ["T"]
BOOT_TIMEOUT = float(os.environ["BOOT_TIMEOUT"])
failed = []


def report(ok, what):
    print("SMOKE %s %s" % ("ok" if ok else "FAIL", what), flush=True)
    if not ok:
        failed.append(what)


qemu = [
    "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35,smm=on",
    "-m", os.environ["MEM"], "-smp", os.environ["SMP"],
    "-nodefaults", "-no-user-config", "-display", "none",
    "-global", "driver=cfi.pflash01,property=secure,value=on",
    "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + os.environ["EFI_CODE"],
    "-drive", "if=pflash,format=raw,unit=1,file=%s/vars.fd" % T,
    "-chardev", "socket,id=chrtpm,path=%s/swtpm.sock" % T,
    "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
    "-device", "virtio-serial-pci",
    "-chardev", "socket,path=%s/qga.sock,server=on,wait=off,id=qga0" % T,
    "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=",
    "-blockdev", "driver=qcow2,node-name=disk0,file.driver=file,file.filename=%s/disk.qcow2" % T,
    "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
    "-serial", "stdio", "-pidfile", "%s/qemu.pid" % T,
]
t0 = time.monotonic()
q = subprocess.Popen(qemu, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
buf = bytearray()
cv = threading.Condition()
log = open(os.path.join(T, "console.log"), "wb")


def reader():
    while True:
        b = os.read(q.stdout.fileno(), 4096)
        with cv:
            if not b:
                buf.extend(b"\0EOF")
                cv.notify_all()
                return
            buf.extend(b)
            log.write(b)
            log.flush()
            cv.notify_all()


threading.Thread(target=reader, daemon=True).start()


def wait_for(rx, timeout, start=0):
    """Wait for regex rx (bytes) in the console output from offset start;
    return the match (positions in buf) or None on timeout / QEMU exit."""
    rx = re.compile(rx)
    end = time.monotonic() + timeout
    with cv:
        while True:
            m = rx.search(buf, start)
            if m:
                return m
            if buf.endswith(b"\0EOF"):
                return None
            left = end - time.monotonic()
            if left <= 0:
                return None
            cv.wait(min(left, 1.0))


PROMPT = rb"hs-efi# "
ncmd = [0]


def run(cmd, timeout=60):
    """Type cmd at the root prompt; return (rc, output) or (None, partial)."""
    ncmd[0] += 1
    n = ncmd[0]
    with cv:
        start = len(buf)
    # The markers are made by printf, so the echoed command line never
    # contains them.
    line = "printf 'HS-%%s-%d\\n' BEGIN; %s; printf 'HS-%%s-%d rc=%%s\\n' END $?\r" % (n, cmd, n)
    q.stdin.write(line.encode())
    q.stdin.flush()
    b = wait_for(rb"HS-BEGIN-%d\r?\n" % n, timeout, start)
    if not b:
        return None, ""
    e = wait_for(rb"HS-END-%d rc=(\d+)" % n, timeout, b.end())
    if not e:
        with cv:
            return None, bytes(buf[b.end():]).decode(errors="replace")
    with cv:
        out = bytes(buf[b.end():e.start()]).decode(errors="replace")
    return int(e.group(1)), out


class Agent:
    """qemu-guest-agent over the virtio-serial unix socket."""

    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(os.path.join(T, "qga.sock"))
        self.rest = b""
        self.id = 1000

    def sync(self, timeout):
        """guest-sync-delimited: True once the agent answers with our id."""
        self.id += 1
        self.s.sendall(b"\xff" + json.dumps(
            {"execute": "guest-sync-delimited", "arguments": {"id": self.id}}).encode() + b"\n")
        end = time.monotonic() + timeout
        data = b""
        while time.monotonic() < end:
            self.s.settimeout(max(0.1, end - time.monotonic()))
            try:
                b = self.s.recv(65536)
            except socket.timeout:
                break
            if not b:
                raise ConnectionError("agent socket closed")
            data += b
            i = data.rfind(b"\xff")
            if i >= 0:
                for l in data[i + 1:].split(b"\n"):
                    try:
                        if json.loads(l).get("return") == self.id:
                            self.rest = b""
                            return True
                    except ValueError:
                        pass
        return False

    def cmd(self, execute, arguments=None, timeout=30):
        msg = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        end = time.monotonic() + timeout
        while True:
            if b"\n" in self.rest:
                l, self.rest = self.rest.split(b"\n", 1)
                if l.strip():
                    r = json.loads(l)
                    if "error" in r:
                        raise RuntimeError("%s: %s" % (execute, r["error"]))
                    return r.get("return")
                continue
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(execute)
            self.s.settimeout(left)
            b = self.s.recv(65536)
            if not b:
                raise ConnectionError("agent socket closed")
            self.rest += b


rc = 1
try:
    # --- boot -------------------------------------------------------------
    m = wait_for(rb"HS-EFI-GRUB linux (\S+)\r?\n", BOOT_TIMEOUT)
    report(bool(m), "grub (signed, from shim) loaded grub.cfg%s after %.1f s"
           % (": kernel " + m.group(1).decode() if m else "", time.monotonic() - t0))
    if not m:
        raise SystemExit
    r = wait_for(rb"HS-EFI ready", BOOT_TIMEOUT - (time.monotonic() - t0), m.end())
    p = r and wait_for(PROMPT, 120, r.end())
    t_login = time.monotonic() - t0
    report(bool(p), "root shell prompt on ttyS0 (autologin) after %.1f s" % t_login)
    if not p:
        raise SystemExit
    with cv:
        hs = re.findall(rb"HS-EFI [^\r\n]*", buf)
    for l in hs:
        print("  console: " + l.decode(errors="replace"))
    print("SMOKE boot: QEMU start -> login prompt %.1f s" % t_login, flush=True)

    # --- serial console checks --------------------------------------------
    st, out = run("mokutil --sb-state")
    report(st == 0 and "SecureBoot enabled" in out,
           "mokutil --sb-state: %s" % " / ".join(out.strip().splitlines()))
    st, out = run("ls -l /dev/tpm0 /dev/tpmrm0 && tpm2_pcrread sha256:0")
    report(st == 0 and "/dev/tpm0" in out and re.search(r"0 : 0x[0-9A-F]{64}", out),
           "TPM: /dev/tpm0 exists, tpm2_pcrread sha256:0 -> %s"
           % ((re.search(r"0 : 0x[0-9A-F]+", out) or re.search(r".*", out)).group(0)))

    # --- agent ---------------------------------------------------------------
    agent = Agent()
    end = time.monotonic() + 120
    up = False
    while time.monotonic() < end and not up:
        up = agent.sync(3)
    t_agent = time.monotonic() - t0
    report(up, "qemu-guest-agent answers guest-sync-delimited (%.1f s after QEMU start)" % t_agent)
    if not up:
        raise SystemExit
    print("SMOKE boot: QEMU start -> agent answering %.1f s" % t_agent, flush=True)
    hn = agent.cmd("guest-get-host-name")
    report(hn.get("host-name") == "hs-efi-guest", "guest-get-host-name: %s" % hn)
    addrs = []
    end = time.monotonic() + 90
    while time.monotonic() < end:
        ifs = agent.cmd("guest-network-get-interfaces")
        addrs = ["%s=%s" % (i["name"], a["ip-address"]) for i in ifs
                 for a in i.get("ip-addresses", []) if a.get("ip-address-type") == "ipv4"]
        if any(a.endswith("=10.0.2.15") for a in addrs):
            break
        time.sleep(2)
    report(any(a.endswith("=10.0.2.15") for a in addrs),
           "guest-network-get-interfaces: %s" % " ".join(addrs))
    n = agent.cmd("guest-fsfreeze-freeze", timeout=60)
    s1 = agent.cmd("guest-fsfreeze-status")
    n2 = agent.cmd("guest-fsfreeze-thaw", timeout=60)
    s2 = agent.cmd("guest-fsfreeze-status")
    report(n >= 1 and s1 == "frozen" and n2 == n and s2 == "thawed",
           "guest-fsfreeze-freeze -> %s (%s), thaw -> %s (%s)" % (n, s1, n2, s2))
    st, out = run("cat /var/log/qemu-ga.log")
    for l in out.strip().splitlines():
        print("  qemu-ga.log: " + l.strip())
    report(st == 0 and re.search(r"hs-fsfreeze-hook: freeze", out)
           and re.search(r"hs-fsfreeze-hook: thaw", out),
           "freeze and thaw in the agent log /var/log/qemu-ga.log")
    st, out = run("journalctl -b -u qemu-guest-agent -o cat --no-pager | tail -n 4")
    for l in out.strip().splitlines():
        print("  journal: " + l.strip())

    # --- power off ------------------------------------------------------------
    q.stdin.write(b"poweroff\r")
    q.stdin.flush()
    try:
        q.wait(90)
        report(True, "poweroff: QEMU exited with %d" % q.returncode)
    except subprocess.TimeoutExpired:
        report(False, "poweroff: QEMU still running after 90 s")
    rc = 1 if failed else 0
except SystemExit:
    pass
except Exception as e:
    report(False, "exception: %r" % e)
finally:
    if q.poll() is None:
        q.kill()
        q.wait()
    print("SMOKE total %.1f s; %s" % (time.monotonic() - t0,
          "all checks passed" if not failed and rc == 0 else "FAILED: %s" % "; ".join(failed) if failed else "FAILED"),
          flush=True)
    if rc != 0:
        with cv:
            tail = bytes(buf[-3000:]).decode(errors="replace")
        print("--- console tail ---\n" + tail, file=sys.stderr)
sys.exit(rc)
PY
