#!/bin/sh
# shellcheck disable=SC2012  # ls: sysfs names, sorted numerically
# SPDX-License-Identifier: Apache-2.0
# Smoke test of the IOMMU guest; runs INSIDE it (host file system, guest
# kernel), through the runner:
#   python3 tests/integration/iommu_guest.py -- /bin/sh tests/guest/iommu-smoke.sh
# (absolute path, or run from the repository: the runner starts in the
# caller's cwd). Result lines start with "SMOKE "; test_iommu_guest.py reads
# them. Exit status 0 when every step did what it should.
#
#  1. the IOMMU groups, with each member's vendor:device and driver;
#  2. the lone virtio NIC (00:03.0) rebound to vfio-pci by hand
#     (driver_override + unbind + drivers_probe): /dev/vfio/<group>;
#  3. nested QEMU with -device vfio-pci,host=0000:00:03.0: fails with the
#     default RLIMIT_MEMLOCK (8 MiB < guest RAM), starts with a raised one,
#     answers QMP query-pci with the vfio device, quits;
#  4. half a group: 00:06.0 on vfio-pci, 00:06.1 still on virtio-pci: nested
#     QEMU refuses 00:06.0 (group not viable); then 00:06.1 too, and it starts;
#  5. every NIC back on virtio-pci (driver_override cleared, probed again).
set -u
export LC_ALL=C
QEMU=${QEMU:-qemu-system-x86_64}
NIC=0000:00:03.0
FN0=0000:00:06.0
FN1=0000:00:06.1
OUT=${HS_OUT:-/tmp}
fails=0
say() { echo "SMOKE $*"; }
bad() { say "FAIL $*"; fails=$((fails + 1)); }
now() { cut -d' ' -f1 /proc/uptime; }
dev() { echo "/sys/bus/pci/devices/$1"; }
driver_of() {
    if [ -e "$(dev "$1")/driver" ]; then basename "$(readlink "$(dev "$1")/driver")"; else echo none; fi
}
# RLIMIT_MEMLOCK (soft) in KiB ("unlimited" stays as it is).
memlock_kib() {
    awk '/^Max locked memory/ { print ($4 == "unlimited" ? $4 : $4 / 1024) }' /proc/self/limits
}
group_of() { basename "$(readlink "$(dev "$1")/iommu_group")"; }

# bind ADDR DRIVER (DRIVER empty: back to the default driver)
bind() {
    d=$(dev "$1")
    if [ -n "$2" ]; then echo "$2" >"$d/driver_override"; else echo >"$d/driver_override"; fi
    [ -e "$d/driver" ] && echo "$1" >"$d/driver/unbind"
    echo "$1" >/sys/bus/pci/drivers_probe
}

# nested NAME CAPS MEMLOCK_KIB ADDR...: start QEMU with vfio-pci devices
# under that RLIMIT_MEMLOCK, ask QMP query-pci, quit. SMOKE NESTED-<NAME>
# lines. CAPS: "root" (all of root's capabilities) or "nolock" (without
# CAP_IPC_LOCK: vfio_iommu_type1 charges pinned pages to RLIMIT_MEMLOCK only
# for a process without it, as an unprivileged QEMU or one whose capabilities
# were dropped).
nested() {
    name=$1 caps=$2 lim=$3
    shift 3
    case "$caps" in
        root) drop= ;;
        *) drop="setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock --" ;;
    esac
    devs=
    i=0
    for a in "$@"; do devs="$devs -device vfio-pci,host=$a,id=pt$i"; i=$((i + 1)); done
    sock=/tmp/nested-$name.qmp
    log=$OUT/nested-$name.log
    rm -f "$sock"
    t0=$(now)
    # shellcheck disable=SC2086  # $devs: words on purpose
    prlimit --memlock="$((lim * 1024))" -- $drop \
        "$QEMU" -accel tcg -machine pc -m 64 -nodefaults -no-user-config -display none -S \
        -qmp "unix:$sock,server=on,wait=off" $devs >"$log" 2>&1 &
    qpid=$!
    python3 - "$sock" "$qpid" "$name" "$t0" <<'EOF'
import json, os, socket, sys, time
sock, pid, name, t0 = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def up():
    return float(open("/proc/uptime").read().split()[0])
def alive():
    try:
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return st != "Z"
    except OSError:
        return False
deadline = time.monotonic() + 120
s = None
while time.monotonic() < deadline and alive():
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        break
    except OSError:
        s = None
        time.sleep(0.1)
if s is None:
    print(f"SMOKE NESTED-{name} no-qmp exited={not alive()}")
    sys.exit(1)
s.settimeout(60)
f = s.makefile("rw")
def cmd(c):
    f.write(json.dumps({"execute": c}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
try:
    json.loads(f.readline())  # greeting
    cmd("qmp_capabilities")
    r = cmd("query-pci")
except (OSError, ValueError) as e:  # QEMU failed after making its QMP socket
    print(f"SMOKE NESTED-{name} no-qmp ({e.__class__.__name__})")
    sys.exit(1)
t = up() - t0
found = []
for bus in r["return"]:
    for d in bus["devices"]:
        if d.get("qdev_id", "").startswith("pt"):
            found.append(f'{d["qdev_id"]}@{bus["bus"]}:{d["slot"]:02x}.{d["function"]}='
                         f'{d["id"]["vendor"]:04x}:{d["id"]["device"]:04x}')
print(f"SMOKE NESTED-{name} started qmp-after={t:.1f}s devices={','.join(found) or 'none'}")
cmd("quit")
EOF
    rc=$?
    i=0
    while kill -0 "$qpid" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$qpid" 2>/dev/null
    wait "$qpid"
    qrc=$?
    # (the "Cannot reset device ..., no available reset mechanism" warnings
    # of every run are left out: virtio-net has no FLR / PM reset)
    err=$(grep -v -e '^$' -e 'no available reset mechanism' "$log" | tr '\n' ' ' | cut -c1-600)
    say "NESTED-$name qemu-exit=$qrc error=${err:-none}"
    return "$rc"
}

say "kernel $(uname -r) memlock-default=$(memlock_kib)"

# 1. groups
for g in $(ls /sys/kernel/iommu_groups | sort -n); do
    line=
    for p in "/sys/kernel/iommu_groups/$g/devices"/*; do
        d=${p##*/}
        id=$(sed 's/^0x//' "$p/vendor"):$(sed 's/^0x//' "$p/device")
        line="$line $d/$id/$(driver_of "$d")"
    done
    say "GROUP $g$line"
done

# 2. lone NIC -> vfio-pci -> /dev/vfio/<group>
g=$(group_of $NIC)
bind $NIC vfio-pci
say "REBIND $NIC driver=$(driver_of $NIC) group=$g dev=$(ls /dev/vfio/ | tr '\n' ' ')"
[ "$(driver_of $NIC)" = vfio-pci ] || bad "rebind $NIC to vfio-pci"
[ -c "/dev/vfio/$g" ] || bad "/dev/vfio/$g missing"

# 3. nested QEMU: default memlock (fails), then raised
#    (root with CAP_IPC_LOCK: no limit applies; without it the default 8 MiB
#    is less than the 64 MiB of guest RAM VFIO pins)
nested ROOT root "$(memlock_kib)" $NIC || bad "nested QEMU as root, default memlock"
nested LOWMEMLOCK nolock "$(memlock_kib)" $NIC && bad "nested QEMU started with memlock $(memlock_kib) KiB without CAP_IPC_LOCK"
nested PASSTHROUGH nolock 1048576 $NIC || bad "nested QEMU with vfio-pci $NIC, memlock 1 GiB"

# 4. a group of two functions
bind $FN0 vfio-pci
say "REBIND $FN0 driver=$(driver_of $FN0) $FN1 driver=$(driver_of $FN1) group=$(group_of $FN0)"
nested HALFGROUP root 1048576 $FN0 && bad "nested QEMU started with half a group"
bind $FN1 vfio-pci
nested WHOLEGROUP root 1048576 $FN0 $FN1 || bad "nested QEMU with the whole group $FN0 $FN1"

# 5. restore
for d in $NIC $FN0 $FN1; do bind "$d" ""; done
say "RESTORE $NIC driver=$(driver_of $NIC) $FN0 driver=$(driver_of $FN0) $FN1 driver=$(driver_of $FN1) dev=$(ls /dev/vfio/ | tr '\n' ' ')"
for d in $NIC $FN0 $FN1; do
    [ "$(driver_of "$d")" = virtio-pci ] || bad "$d not back on virtio-pci"
done
say "DONE fails=$fails"
[ "$fails" = 0 ]
