#!/bin/bash
# One command from a fresh Debian 12 machine to a running hsd and a booted
# demo VM: installs packages, builds, builds the test guest, starts hsd with
# its built-in defaults (no config file) and its web console on loopback,
# creates and boots "demo" (with a screen), shows its console marker,
# `hsctl list` and a one-time URL of its screen in a browser. hsd keeps
# running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install-deps.sh
bash scripts/build.sh
eval "$(bash tests/guest/build-guest.sh | grep -E '^(KERNEL|INITRD)=')"

HSD=$ROOT/build/daemon/hsd
HSCTL=$ROOT/build/cli/hsctl
if [ "$(id -u)" -eq 0 ]; then
	SOCK=/run/hsd/hsd.sock
	LOG=/var/log/hsd-demo.log
else
	SOCK=${XDG_RUNTIME_DIR:?}/hsd/hsd.sock
	LOG=${XDG_STATE_HOME:-$HOME/.local/state}/hsd-demo.log
	mkdir -p "$(dirname "$LOG")"
fi

if ! "$HSCTL" --socket "$SOCK" version >/dev/null 2>&1; then
	echo "starting hsd (log: $LOG)"
	# VM files must be beneath allowed directories: the guest's cache here.
	# The web console on loopback (a browser on this machine, or through an
	# SSH tunnel: docs/operations.md); xterm.js from scripts/install-web.sh.
	WEB_DIR=${HS_WEB_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hypervisor-scale/web}
	setsid "$HSD" --allowed-dir "$(dirname "$KERNEL")" --web-listen 127.0.0.1:8006 \
		--web-assets "$WEB_DIR/assets" >>"$LOG" 2>&1 </dev/null &
	for _ in $(seq 100); do
		"$HSCTL" --socket "$SOCK" version >/dev/null 2>&1 && break
		sleep 0.1
	done
fi
"$HSCTL" --socket "$SOCK" version

# KVM guests do not boot on every machine (nested virtualisation): the demo
# uses TCG so that it boots anywhere.
if ! "$HSCTL" --socket "$SOCK" info demo >/dev/null 2>&1; then
	"$HSCTL" --socket "$SOCK" create demo --accel tcg --memory 256 --cpus 1 \
		--kernel "$KERNEL" --initrd "$INITRD" --display virtio \
		--append "console=tty0 console=ttyS0 quiet hs.marker=hello-from-hypervisor-scale"
fi
state=$("$HSCTL" --socket "$SOCK" --json info demo | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
case "$state" in
running | paused | starting) ;;
*) "$HSCTL" --socket "$SOCK" start demo ;;
esac
echo "--- demo's serial console (waiting for its marker) ---"
"$HSCTL" --socket "$SOCK" console demo --wait-for "HS-MARKER hello-from-hypervisor-scale" --timeout 120 </dev/null | tail -n 4
echo
echo "--- hsctl list ---"
"$HSCTL" --socket "$SOCK" list
url=$(curl -s --unix-socket "$SOCK" -X POST -d '{"ttl": 600}' \
	http://hsd/v1/vms/demo/console-tickets |
	python3 -c 'import json,sys; print(json.load(sys.stdin).get("url", ""))' 2>/dev/null || true)
browser=""
[ -z "$url" ] || browser="  $url   # the demo VM's screen in a browser (once, within 10 minutes)"
cat <<EOT

hsd is running (API on $SOCK). Try:
  $HSCTL console demo        # Ctrl-] detaches
  $HSCTL console demo --spice   # what remote-viewer needs
$browser
  $HSCTL info demo
  $HSCTL stop demo
Stop hsd with: kill \$(cat $(dirname "$SOCK")/hsd.pid)   (VMs keep running; a new hsd re-adopts them)
EOT
