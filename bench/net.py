#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Networking: what guests get from a bridge network, and what a NIC
costs a VM's start (docs/architecture.md, "Networking").

1. guest-to-guest throughput on one bridge: `dd if=/dev/zero bs=64k
   count=N | nc PEER PORT` in one guest, `nc -l -p PORT >/dev/null` in the
   other, timed inside the sender (/proc/uptime around the pipe; dd's own
   figure is kept too), MB/s; and ping round-trip latency (busybox ping,
   min/avg/max).
2. the same with vhost-net against without ("vhost": true / false), when
   /dev/vhost-net exists. Where it does not (this development host's
   kernel has no vhost_net), the comparison is skipped and the run says
   so: the only kernel here that has vhost-net is the IOMMU test guest's
   (tests/integration/iommu_guest.py), and guests nested in it run under
   TCG in TCG (a boot takes ~6 minutes), where a throughput figure says
   nothing about vhost.
3. the time hsd adds to a VM start per NIC: POST /v1/vms/NAME/start
   (hsd answers once the VM runs) of VMs with 0, 1 and 4 bridge NICs,
   interleaved and rotated; medians, and ratios against 0 NICs.

Everything runs in a network namespace of the run's own (hsd is started
with `ip netns exec`); the bridge, taps and addresses exist only there.
With an hsd that has the networking API the bridge is a network
(`POST /v1/networks {"type":"bridge","create":true}`); with one that has
not yet, the run makes the bridge itself and uses `{"type":"bridge",
"bridge":BR}` NICs, and says so.

Guests run under TCG: absolute figures are far below KVM's; the ratios
measured in one run are the point. Python 3 standard library only; run
as root."""
import argparse
import datetime
import os
import re
import secrets
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchlib import (HSCTL, HSD, RUN_ERRORS, BenchError, Hsd, Registry, api, build_guest,
                      catch_signals, console_ready, hsd_extra_args, log, need_files, new_workdir,
                      remove_workdir, rounds, run_error, summarize, timed_api, uninterrupted,
                      wait_for, write_results)

RESULTS = Path(__file__).resolve().parent / "results"
NET = "10.78.0"
PORT = 5001
MEMORY = 128
BRIDGE = "hsbr-lan"


def ip(*args, ns=None):
    argv = ["ip", *(("-n", ns) if ns else ()), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {r.stderr.strip()}")


_seq = [0]


def shell(h, vm, cmd, timeout=120):
    """Runs cmd in the guest's serial shell; its output (between markers:
    the console echoes the command line, which does not match)."""
    _seq[0] += 1
    tag = f"HSB{_seq[0]}"
    r = subprocess.run([str(HSCTL), "--socket", h.socket, "console", vm, "--no-replay",
                        "--wait-for", f"{tag}-end", "--timeout", str(timeout)],
                       input=f"echo {tag}-beg$(echo in); {cmd}; echo {tag}-en$(echo d)\n",
                       capture_output=True, text=True, timeout=timeout + 15)
    if r.returncode != 0:
        raise BenchError(f"{vm}: '{cmd}': {r.stderr.strip()} {r.stdout[-500:]}")
    out = r.stdout
    return out[out.rfind(f"{tag}-begin"):]


class Bench:
    def __init__(self, h, guest, use_networks):
        self.h, self.guest, self.use_networks = h, guest, use_networks
        self.sock = h.socket

    def nic(self, **kw):
        if self.use_networks:
            return {"network": "lan", **kw}
        if kw:
            raise BenchError(f"NIC options {kw} need the networking API")
        return {"type": "bridge", "bridge": BRIDGE}

    def define(self, name, nics, cpus=1):
        spec = {"name": name, "cpus": cpus, "memory_mib": MEMORY, "accel": "tcg",
                "kernel": self.guest["kernel"], "initrd": self.guest["initrd"],
                "cmdline": "console=ttyS0 quiet no_timer_check", "nics": nics}
        api(self.sock, "POST", "/v1/vms", spec)

    def start(self, name):
        t, _, _ = timed_api(self.sock, "POST", f"/v1/vms/{name}/start", timeout=120)
        return t

    def stop(self, name):
        api(self.sock, "POST", f"/v1/vms/{name}/stop", {"force": True}, timeout=60)

    def boot_pair(self, tag, **nic):
        """Two guests on the bridge with addresses .11 and .12; their names."""
        names = [f"{tag}1", f"{tag}2"]
        for n in names:
            self.define(n, [self.nic(**nic)])
            self.start(n)
        for i, n in enumerate(names):
            wait_for(lambda: console_ready(self.h, n), 180, f"{n} to boot")
            out = shell(self.h, n, f"ip link set eth0 up && ip addr add {NET}.{11 + i}/24 dev eth0"
                        " && echo ADDR=$(echo ok)")
            if "ADDR=ok" not in out:
                raise BenchError(f"{n}: no address: {out[-300:]}")
        # The first packets go to ARP: wait until the peer answers.
        out = shell(self.h, names[0], f"i=0; until ping -c 1 -W 2 {NET}.12 >/dev/null 2>&1; do "
                    f"i=$((i+1)); [ $i -ge 15 ] && break; done; echo PEER=$i", timeout=90)
        m = re.search(r"PEER=(\d+)", out)
        if not m or int(m.group(1)) >= 15:
            raise BenchError(f"{names[0]} cannot reach {NET}.12: {out[-300:]}")
        return names

    def throughput(self, names, mib, reps):
        """MB/s of reps transfers of mib MiB, sender names[0]."""
        rates, dd_rates = [], []
        count = mib * 16  # 64 KiB blocks
        for rep in range(reps):
            # The receiver counts what arrives: a transfer that did not
            # happen (nc could not connect) must not pass for a fast one.
            # busybox nc ends at EOF on its stdin, and a background job's
            # stdin is /dev/null: the receiver gets one that stays open.
            shell(self.h, names[1], f"rm -f /tmp/rx; (sleep 100000 | nc -l -p {PORT} | "
                  f"wc -c >/tmp/rx 2>&1 &)")
            time.sleep(0.5)
            out = shell(self.h, names[0],
                        f"a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=64k count={count} "
                        f"2>/tmp/dd.err | nc {NET}.12 {PORT} 2>/tmp/nc.err; "
                        "b=$(cut -d' ' -f1 /proc/uptime); "
                        "echo T=$a/$b; tail -n1 /tmp/dd.err; cat /tmp/nc.err",
                        timeout=600)
            m = re.search(r"T=([\d.]+)/([\d.]+)", out)
            if not m:
                raise BenchError(f"no timing from {names[0]}: {out[-400:]}")
            rx = shell(self.h, names[1], "sleep 1; echo RX=$(cat /tmp/rx)", timeout=60)
            got = re.search(r"RX=(\d+)", rx)
            if not got or int(got.group(1)) != count * 65536:
                raise BenchError(f"transfer {rep}: {names[1]} received "
                                 f"{got.group(1) if got else '?'} of {count * 65536} bytes: "
                                 f"{out[-300:]}")
            secs = float(m.group(2)) - float(m.group(1))
            rates.append(mib * 1.048576 / max(secs, 0.01))
            d = re.search(r"([\d.]+) seconds", out)
            if d and float(d.group(1)) > 0:
                dd_rates.append(mib * 1.048576 / float(d.group(1)))
            # The receiver exits when the sender closes; make sure.
            shell(self.h, names[1], "kill $(pidof nc) $(pidof sleep) 2>/dev/null; true")
        return {"mib": mib, "mb_s": rates, "dd_mb_s": dd_rates,
                "median_mb_s": sorted(rates)[len(rates) // 2]}

    def latency(self, names, count):
        out = shell(self.h, names[0], f"ping -c {count} -i 0.2 {NET}.12", timeout=count + 60)
        m = re.search(r"min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms", out)
        lost = re.search(r"(\d+)% packet loss", out)
        if not m:
            raise BenchError(f"no ping summary: {out[-400:]}")
        return {"count": count, "min_ms": float(m.group(1)), "avg_ms": float(m.group(2)),
                "max_ms": float(m.group(3)), "loss_pct": int(lost.group(1)) if lost else None}

    def pair_figures(self, tag, args, **nic):
        names = self.boot_pair(tag, **nic)
        res = {"throughput": self.throughput(names, args.mib, args.reps),
               "latency": self.latency(names, args.pings)}
        for n in names:
            self.stop(n)
        t, l = res["throughput"], res["latency"]
        log(f"{tag}: {t['median_mb_s']:.1f} MB/s (median of {len(t['mb_s'])}), ping avg "
            f"{l['avg_ms']:.2f} ms (min {l['min_ms']:.2f}, max {l['max_ms']:.2f}, loss "
            f"{l['loss_pct']}%)")
        return res

    def start_cost(self, reps, counts=(0, 1, 4)):
        """Start latency of VMs with 0, 1, 4 NICs (each stopped right after)."""
        for k in counts:
            self.define(f"s{k}", [self.nic() for _ in range(k)])
        times = {k: [] for k in counts}
        for i, order in rounds(self.h, reps + 1, list(counts)):
            for k in order:
                t = self.start(f"s{k}")
                self.stop(f"s{k}")
                if i > 0:  # round 0 warms up
                    times[k].append(t)
        return {str(k): summarize(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=64, help="MiB per throughput transfer")
    ap.add_argument("--reps", type=int, default=3, help="throughput transfers per pair")
    ap.add_argument("--pings", type=int, default=20, help="pings for the latency")
    ap.add_argument("--start-reps", type=int, default=8, help="starts per NIC count")
    ap.add_argument("--budget", type=float, default=900,
                    help="s for the whole run (SIGALRM; the clean-up and results still follow)")
    ap.add_argument("--base", help="work dir (default /tmp/hsn-PID)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--output")
    args = ap.parse_args()
    need_files("net.py", HSD, HSCTL, hint=" (build first: ninja -C build)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outp = Path(args.output) if args.output else RESULTS / f"net-{stamp}.json"
    base = new_workdir("net.py", args.base, "hsn")
    ns = "hs-nt-" + secrets.token_hex(4)
    reg = Registry()
    res = {"vhost": None}
    error = None
    at = ["setup"]
    made_ns = False

    def step(what):
        at[0] = what
        log(f"-- {what}")
    catch_signals(args.budget)
    try:
        base.mkdir(parents=True)
        step("building the test guest")
        guest = build_guest()
        step(f"namespace {ns} and hsd in it")
        ip("netns", "add", ns)
        made_ns = True
        ip("link", "set", "lo", "up", ns=ns)
        h = Hsd(base / "d", reg, hsd_extra_args(guest), prefix=["ip", "netns", "exec", ns])
        h.start()
        st, js = api(h.socket, "POST", "/v1/networks",
                     {"name": "lan", "type": "bridge", "create": True}, expect=None)
        if st == 201:
            use_networks = True
            if js.get("bridge") != BRIDGE:
                raise BenchError(f"the network's bridge is {js.get('bridge')}, not {BRIDGE}")
        elif st == 404:
            use_networks = False
            log("this hsd has no /v1/networks: the run makes the bridge and uses "
                "{\"type\":\"bridge\"} NICs")
            ip("link", "add", BRIDGE, "type", "bridge", ns=ns)
            ip("link", "set", BRIDGE, "up", ns=ns)
        else:
            raise BenchError(f"POST /v1/networks: HTTP {st}: {js}")
        res["networks_api"] = use_networks
        b = Bench(h, guest, use_networks)

        step("start latency with 0, 1 and 4 NICs")
        sc = b.start_cost(args.start_reps)
        res["start"] = sc
        base0 = sc["0"]["median_ms"]
        for k in ("0", "1", "4"):
            m = sc[k]["median_ms"]
            log(f"{k} NICs: start median {m:.1f} ms (p90 {sc[k]['p90_ms']:.1f}), "
                f"{m / base0:.2f}x of 0 NICs")

        if not os.path.exists("/dev/vhost-net"):
            res["vhost"] = {"skipped": "this host has no /dev/vhost-net (its kernel has no "
                            "vhost_net); the IOMMU test guest's kernel has, but guests nested "
                            "in it run under TCG in TCG, where a boot takes minutes and "
                            "throughput says nothing about vhost"}
            step("throughput and latency (one bridge, no vhost-net on this host)")
            res["plain"] = b.pair_figures("p", args)
        elif not use_networks:
            res["vhost"] = {"skipped": "vhost on/off needs the networking API's NIC \"vhost\""}
            step("throughput and latency (one bridge)")
            res["plain"] = b.pair_figures("p", args)
        else:
            step("throughput and latency with vhost-net")
            res["vhost_on"] = b.pair_figures("v", args, vhost=True)
            step("throughput and latency without vhost-net")
            res["vhost_off"] = b.pair_figures("n", args, vhost=False)
    except RUN_ERRORS as e:
        traceback.print_exc()
        error = f"{run_error(e)} (step: {at[0]})"
    finally:
        with uninterrupted():
            reg.cleanup(log)
            if made_ns:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            remove_workdir(base, args.keep, log)

    rows = []
    sc = res.get("start")
    if sc:
        b0 = sc["0"]["median_ms"]
        for k in ("1", "4"):
            m = sc[k]["median_ms"]
            rows.append([f"start -> running, {k} bridge NIC(s) (median)", f"{m:.1f} ms",
                         f"0 NICs {b0:.1f} ms", f"{m / b0:.2f}x",
                         f"+{(m - b0) / int(k):.1f} ms per NIC"])
    for key, what in (("plain", "one bridge"), ("vhost_on", "vhost-net"),
                      ("vhost_off", "no vhost-net")):
        f = res.get(key)
        if f:
            rows.append([f"guest->guest throughput, {what}",
                         f"{f['throughput']['median_mb_s']:.1f} MB/s", "", "", ""])
            rows.append([f"ping round trip, {what} (avg)", f"{f['latency']['avg_ms']:.2f} ms",
                         f"min {f['latency']['min_ms']:.2f}", "", ""])
    on, off = res.get("vhost_on"), res.get("vhost_off")
    if on and off:
        rows.append(["vhost-net vs none: throughput", "", "",
                     f"{on['throughput']['median_mb_s'] / off['throughput']['median_mb_s']:.2f}x",
                     ""])
        rows.append(["vhost-net vs none: ping avg", "", "",
                     f"{on['latency']['avg_ms'] / off['latency']['avg_ms']:.2f}x", ""])
    elif res.get("vhost") and res["vhost"].get("skipped"):
        rows.append(["vhost-net vs none", "skipped", res["vhost"]["skipped"], "", ""])
    log("")
    for r in rows:
        log("  " + " | ".join(x for x in r if x))
    write_results(outp, {"when": stamp, "error": error, "summary": rows, "results": res,
                         "args": vars(args)})
    if error:
        log(f"error: {error}")
    return 2 if error else 0


if __name__ == "__main__":
    sys.exit(main())
