#!/usr/bin/env bash
# Smoke test of the test guest: build it (or use the cache), boot it once
# under TCG and check that it reaches HS-GUEST-READY and powers itself off.
# Exit: 0 ok, 1 failure, 77 skipped (no qemu-system-x86_64).
# Env: HS_SMOKE_TIMEOUT (s, default 60), QEMU (default qemu-system-x86_64),
#      plus those of build-guest.sh (HS_GUEST_CACHE, ...).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
LIMIT=${HS_SMOKE_TIMEOUT:-60}

if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "smoke: SKIP: $QEMU not found (apt-get install qemu-system-x86)" >&2
    exit 77
fi

out=$("$HERE/build-guest.sh")
KERNEL='' INITRD=''
eval "$(printf '%s\n' "$out" | grep -E '^(KERNEL|INITRD)=')"
if [ ! -s "$KERNEL" ] || [ ! -s "$INITRD" ]; then
    echo "smoke: FAIL: build-guest.sh gave no guest" >&2
    exit 1
fi

tmp=$(mktemp -d)
qpid=
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

log=$tmp/serial.log
: >"$log"
t0=$(date +%s%N)
timeout -k 5 "$LIMIT" "$QEMU" -accel tcg -machine q35 -m 256 -nodefaults \
    -display none -no-reboot -serial "file:$log" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append 'console=ttyS0 quiet hs.marker=smoke hs.poweroff' \
    </dev/null >"$tmp/qemu.log" 2>&1 &
qpid=$!

ready=
while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$ready" ] && grep -q '^HS-GUEST-READY' "$log"; then
        ready=$((($(date +%s%N) - t0) / 1000000))
    fi
    sleep 0.1
done
rc=0
wait "$qpid" || rc=$?
qpid=
if [ -z "$ready" ] && grep -q '^HS-GUEST-READY' "$log"; then
    ready=$((($(date +%s%N) - t0) / 1000000))
fi

fail() {
    echo "smoke: FAIL: $*" >&2
    echo "--- serial output:" >&2; tail -n 30 "$log" >&2
    echo "--- qemu output:" >&2; tail -n 10 "$tmp/qemu.log" >&2
    exit 1
}
case $rc in 124 | 137) fail "guest did not power off within ${LIMIT}s" ;; esac
[ "$rc" = 0 ] || fail "qemu exited with status $rc"
grep -q '^HS-GUEST-READY' "$log" || fail "no HS-GUEST-READY"
grep -q '^HS-MARKER smoke' "$log" || fail "no HS-MARKER smoke"
grep -q '^HS-GUEST-POWEROFF' "$log" || fail "no HS-GUEST-POWEROFF"
echo "smoke: ok: HS-GUEST-READY after ${ready} ms under TCG, guest powered off"
