#!/usr/bin/env python3
"""Thorough check of the test guest under TCG (slow: about a minute per core).

Usage: verify-guest.py [TEST...]   (default: all tests; --list to list them)
Builds the guest with build-guest.sh (or uses the cache), then boots it a few
times in QEMU with the serial console on a unix socket and QMP on another, and
checks every /init feature.  Exit status 0 if all selected tests pass, 77 if
qemu-system-x86_64 is missing.  Only needs the Python standard library.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
QEMU = shutil.which("qemu-system-x86_64")
BOOT_TIMEOUT = 60


def build():
    out = subprocess.run([os.path.join(HERE, "build-guest.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines()[-2:])
    return env["KERNEL"], env["INITRD"]


class Guest:
    def __init__(self, kernel, initrd, append="", extra=(), mem=256,
                 machine="q35", no_reboot=False):
        self.dir = tempfile.mkdtemp(prefix="hs-guest-")
        self.ser_path = os.path.join(self.dir, "serial.sock")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        cmd = [QEMU, "-accel", "tcg", "-machine", machine, "-m", str(mem),
               "-nodefaults", "-display", "none",
               "-chardev", f"socket,id=ser0,path={self.ser_path},server=on,wait=on",
               "-serial", "chardev:ser0",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
               "-kernel", kernel, "-initrd", initrd,
               "-append", f"console=ttyS0 quiet {append}".strip()]
        if no_reboot:
            cmd.append("-no-reboot")
        cmd += list(extra)
        self.qlog = open(os.path.join(self.dir, "qemu.log"), "w+")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.qlog, stderr=subprocess.STDOUT)
        self.buf = b""
        self.lock = threading.Lock()
        self.sock = self._connect(self.ser_path)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.qmp_sock = None

    def _connect(self, path, timeout=10):
        end = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise RuntimeError(f"cannot connect {path}: {self.qemu_log()}")
                time.sleep(0.05)

    def _read(self):
        while True:
            try:
                d = self.sock.recv(4096)
            except OSError:
                return
            if not d:
                return
            with self.lock:
                self.buf += d

    def text(self):
        with self.lock:
            return self.buf.decode("utf-8", "replace").replace("\r", "")

    def qemu_log(self):
        self.qlog.flush()
        self.qlog.seek(0)
        return self.qlog.read()

    def wait_for(self, pattern, timeout=BOOT_TIMEOUT, start=0):
        """Wait for regex `pattern` (multiline) in the serial output after
        character offset `start`; returns (match, elapsed seconds)."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.text(), start)
            if m:
                return m
            if time.monotonic() > end:
                raise AssertionError(f"timeout waiting for {pattern!r}; serial tail:\n"
                                     + self.text()[-1500:])
            if self.proc.poll() is not None:
                time.sleep(0.3)
                m = rx.search(self.text(), start)
                if m:
                    return m
                raise AssertionError(f"qemu exited ({self.proc.returncode}) before "
                                     f"{pattern!r}; serial tail:\n" + self.text()[-1500:])
            time.sleep(0.05)

    def send(self, s):
        self.sock.sendall(s.encode())

    def run(self, command, timeout=30):
        """Type `command` into the serial shell and return its output, which
        is delimited by two markers that only the shell's expansion creates."""
        tag = f"{int(time.monotonic() * 1000) % 100000}"
        start = len(self.text())
        self.send(f"echo BEGIN-$((0+{tag})); {command}; echo END-$((0+{tag}))\n")
        m = self.wait_for(rf"^BEGIN-{tag}\n([\s\S]*?)^END-{tag}$", timeout, start)
        return re.sub(r"\x1b\[[0-9;]*[a-zA-Z]", "", m.group(1))

    def qmp(self, command, **args):
        if self.qmp_sock is None:
            self.qmp_sock = self._connect(self.qmp_path)
            self.qmp_file = self.qmp_sock.makefile("rw")
            json.loads(self.qmp_file.readline())  # greeting
            self._qmp_raw("qmp_capabilities")
        return self._qmp_raw(command, **args)

    def _qmp_raw(self, command, **args):
        msg = {"execute": command}
        if args:
            msg["arguments"] = args
        self.qmp_file.write(json.dumps(msg) + "\n")
        self.qmp_file.flush()
        while True:
            r = json.loads(self.qmp_file.readline())
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {command}: {r['error']}")

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qemu did not exit in {timeout}s; serial tail:\n"
                                 + self.text()[-1500:])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for s in (self.sock, self.qmp_sock):
            if s:
                s.close()
        self.qlog.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ------------------------------------------------------------------ tests ----
def t_marker_ready(k, i):
    with Guest(k, i, "hs.marker=abc-123") as g:
        g.wait_for(r"^HS-GUEST-READY$")
        ready = time.monotonic() - g.t0
        g.wait_for(r"^HS-MARKER abc-123$", 10)
        g.wait_for(r"^hs-guest# ", 20)
        return f"HS-GUEST-READY after {ready:.1f}s"


def t_poweroff(k, i):
    with Guest(k, i, "hs.poweroff hs.marker=x") as g:
        g.wait_for(r"^HS-MARKER x$")
        g.wait_for(r"^HS-GUEST-POWEROFF$", 10)
        rc = g.wait_exit(20)
        assert rc == 0, f"qemu exit code {rc}"
        return f"qemu exited by itself {time.monotonic() - g.t0:.1f}s after start"


def t_combined_order(k, i):
    with Guest(k, i, "hs.poweroff hs.fill=16 hs.marker=one hs.marker=two") as g:
        rc = g.wait_exit(60)
        lines = [l for l in g.text().splitlines() if l.startswith("HS-")]
        want = ["HS-GUEST-READY", "HS-MARKER one", "HS-MARKER two",
                "HS-GUEST-FILLED 16", "HS-GUEST-POWEROFF"]
        assert lines == want and rc == 0, (lines, rc)
        return " / ".join(lines)


def t_modprobe(k, i):
    with Guest(k, i) as g:
        g.wait_for(r"^hs-guest# ")
        out = g.run("rmmod isofs && modprobe isofs && grep -c ^isofs /proc/modules; "
                    "modprobe virtio_blk && echo again-ok")
        assert "1" in out.split() and "again-ok" in out, out
        return "rmmod isofs + modprobe isofs ok"


def t_fill(k, i):
    n = 100
    with Guest(k, i, f"hs.fill={n}") as g:
        g.wait_for(r"^HS-GUEST-READY$")
        g.wait_for(rf"^HS-GUEST-FILLED {n}$", 60)
        filled = time.monotonic() - g.t0
        g.wait_for(r"^hs-guest# ", 20)
        size = g.run("stat -c %s /hsfill/fill").split()[-1]
        assert size == str(n << 20), size
        # every 4 KiB page identical, and not zero
        sums = g.run("for p in 0 1 777 12345 25599; do dd if=/hsfill/fill bs=4096 "
                     "skip=$p count=1 2>/dev/null | md5sum; done").split()
        sums = [s for s in sums if len(s) == 32]
        assert len(sums) == 5 and len(set(sums)) == 1, sums
        page = g.run("head -c 4096 /hsfill/fill | od -An -c | head -n 2")
        assert "H   S   -   F   I   L   L" in page, page
        shmem = g.run("grep ^Shmem: /proc/meminfo").split()
        assert int(shmem[1]) >= n * 1024, shmem
        return f"FILLED {n} at {filled:.1f}s, 5 sampled pages identical md5 {sums[0][:8]}, Shmem {shmem[1]} kB"


def t_fill_identical_across_guests(k, i):
    sums = []
    for _ in range(2):
        with Guest(k, i, "hs.fill=8") as g:
            g.wait_for(r"^HS-GUEST-FILLED 8$")
            g.wait_for(r"^hs-guest# ", 20)
            sums.append(g.run("md5sum /hsfill/fill").split()[0])
    assert sums[0] == sums[1], sums
    return f"md5 of the 8 MiB fill equal in two boots ({sums[0][:8]})"


def t_counter(k, i):
    with Guest(k, i, "hs.counter") as g:
        g.wait_for(r"^HS-GUEST-READY$")
        g.wait_for(r"^hs-counter 1$", 10)
        t1 = time.monotonic()
        g.wait_for(r"^hs-counter 4$", 10)
        dt = time.monotonic() - t1
        assert 2.0 < dt < 6.0, dt
        return f"hs-counter 1..4 in {dt:.1f}s"


def t_shell(k, i):
    with Guest(k, i) as g:
        g.wait_for(r"^hs-guest# ")
        assert "hello" in g.run("echo hel''lo")
        tty = g.run("tty; echo $-")
        assert "/dev/ttyS0" in tty, tty
        assert "job control turned off" not in g.text(), g.text()
        jobs = g.run("sleep 30 & jobs; kill %1")
        assert "Running" in jobs and "sleep 30" in jobs, jobs
        g.send("exit\n")          # init respawns the shell
        start = len(g.text())
        g.wait_for(r"^hs-guest# ", 20, start)
        assert "again" in g.run("echo again")
        g.send("poweroff -f\n")
        assert g.wait_exit(20) == 0
        return f"ctty {tty.split()[0]}, job control ok, respawn ok, poweroff -f ok"


def t_plain_poweroff(k, i):
    with Guest(k, i) as g:
        g.wait_for(r"^hs-guest# ")
        g.send("poweroff\n")
        assert g.wait_exit(30) == 0
        return "busybox init handled `poweroff` (no -f)"


def t_reboot(k, i):
    with Guest(k, i, "hs.marker=boot") as g:
        g.wait_for(r"^hs-guest# ")
        start = len(g.text())
        g.send("reboot -f\n")
        g.wait_for(r"^HS-GUEST-READY$", BOOT_TIMEOUT, start)
        g.wait_for(r"^HS-MARKER boot$", 10, start)
    with Guest(k, i, no_reboot=True) as g:
        g.wait_for(r"^hs-guest# ")
        g.send("reboot -f\n")
        g.wait_exit(20)
    return "reboot -f: guest came back (HS-GUEST-READY twice); with -no-reboot qemu exits"


def t_virtio_blk_net_console_balloon(k, i):
    d = tempfile.mkdtemp(prefix="hs-guest-disk-")
    try:
        img = os.path.join(d, "x.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"], check=True)
        extra = ["-drive", f"file={img},if=virtio,format=qcow2",
                 "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
                 "-device", "virtio-serial-pci", "-chardev", "null,id=vc0",
                 "-device", "virtconsole,chardev=vc0",
                 "-device", "virtio-balloon-pci,id=balloon0"]
        with Guest(k, i, extra=extra) as g:
            g.wait_for(r"^hs-guest# ")
            out = g.run("ls /dev/vda && cat /sys/block/vda/size && ls /sys/class/net "
                        "&& ls /dev/hvc0 && lsmod | cut -d' ' -f1 | sort | tr '\\n' ' '; echo")
            assert "/dev/vda" in out and "131072" in out, out
            assert "eth0" in out and "/dev/hvc0" in out, out
            assert "virtio_balloon" in out, out
            wr = g.run("echo hs-disk-data | dd of=/dev/vda bs=512 conv=sync 2>/dev/null; "
                       "sync; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 12; echo")
            assert "hs-disk-data" in wr, wr
            g.qmp("balloon", value=128 << 20)
            end = time.monotonic() + 30
            while True:
                actual = g.qmp("query-balloon")["actual"]
                if actual == 128 << 20:
                    break
                assert time.monotonic() < end, f"balloon stuck at {actual}"
                time.sleep(0.5)
            mods = out.split("\n")[-2] if out else ""
            return (f"/dev/vda 64 MiB r/w, eth0, /dev/hvc0, balloon inflated to 128 MiB; "
                    f"modules: {mods.strip()}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def t_cdrom(k, i):
    mk = shutil.which("genisoimage") or shutil.which("mkisofs") or shutil.which("xorrisofs")
    if not mk:
        return "SKIP: no genisoimage/mkisofs/xorrisofs"
    d = tempfile.mkdtemp(prefix="hs-guest-iso-")
    try:
        os.makedirs(os.path.join(d, "src"))
        with open(os.path.join(d, "src", "hello.txt"), "w") as f:
            f.write("hs-iso-content\n")
        iso = os.path.join(d, "x.iso")
        subprocess.run([mk, "-quiet", "-o", iso, "-V", "HSTEST", os.path.join(d, "src")],
                       check=True)
        res = []
        for name, machine, extra in [
            ("virtio-scsi/q35", "q35",
             ["-device", "virtio-scsi-pci", "-drive",
              f"file={iso},if=none,id=cd0,media=cdrom,format=raw,readonly=on",
              "-device", "scsi-cd,drive=cd0"]),
            ("ide/pc", "pc", ["-cdrom", iso])]:
            with Guest(k, i, machine=machine, extra=extra) as g:
                g.wait_for(r"^hs-guest# ")
                out = g.run("mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd "
                            "&& cat /mnt/cd/hello.txt")
                assert "hs-iso-content" in out, out
                res.append(name)
        return "sr0 mounted (isofs) via " + ", ".join(res)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def t_acpi_powerdown(k, i):
    with Guest(k, i) as g:
        g.wait_for(r"^hs-guest# ")
        time.sleep(0.5)
        t = time.monotonic()
        g.qmp("system_powerdown")
        g.wait_for(r"^HS-GUEST-ACPI-POWEROFF$", 30)
        rc = g.wait_exit(30)
        assert rc == 0, rc
        return f"system_powerdown -> HS-GUEST-ACPI-POWEROFF, qemu exited in {time.monotonic() - t:.1f}s"


def t_acpi_powerdown_early(k, i):
    """system_powerdown sent as soon as the guest says it is ready."""
    with Guest(k, i) as g:
        g.wait_for(r"^HS-GUEST-READY$")
        g.qmp("system_powerdown")
        g.wait_for(r"^HS-GUEST-ACPI-POWEROFF$", 30)
        assert g.wait_exit(30) == 0
        return "system_powerdown right after HS-GUEST-READY works"


TESTS = [t_marker_ready, t_poweroff, t_combined_order, t_modprobe, t_counter, t_shell, t_plain_poweroff, t_reboot,
         t_fill, t_fill_identical_across_guests, t_virtio_blk_net_console_balloon,
         t_cdrom, t_acpi_powerdown, t_acpi_powerdown_early]


def main():
    names = {t.__name__[2:]: t for t in TESTS}
    if "--list" in sys.argv:
        print("\n".join(names))
        return 0
    if not QEMU:
        print("verify-guest: SKIP: qemu-system-x86_64 not found", file=sys.stderr)
        return 77
    sel = [names[a] for a in sys.argv[1:]] or TESTS
    kernel, initrd = build()
    passed = failed = 0
    for t in sel:
        t0 = time.monotonic()
        try:
            msg = t(kernel, initrd)
            passed += 1
            print(f"ok   {t.__name__[2:]} ({time.monotonic() - t0:.1f}s): {msg}", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            failed += 1
            print(f"FAIL {t.__name__[2:]} ({time.monotonic() - t0:.1f}s): {e}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
