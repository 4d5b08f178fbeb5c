# SPDX-License-Identifier: Apache-2.0
# Sourced by the tests of tests/cli: where the built hsd and hsctl are
# (HS_BUILD_DIR, default build/), the ok/not_ok counters, a temporary
# directory removed at exit, and a real hsd started in it and stopped by its
# pid.
#
# Sets top, build, HSD, HSCTL, passed and failed; make_tmp sets tmp,
# start_hsd sets sock and hsd_pid, run (hsctl on that socket) out, err and
# rc.
# shellcheck shell=bash

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${HS_BUILD_DIR:-$top/build}
HSD=$build/daemon/hsd
HSCTL=$build/cli/hsctl

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1"; shift; printf '    %s\n' "$@"; failed=$((failed + 1)); }

# need_built PROG...: skipped (exit 77) unless each is built.
need_built() {
	local prog
	for prog in "$@"; do
		if [[ ! -x $prog ]]; then
			echo "SKIP: $prog is not built (meson setup build && ninja -C build)"
			exit 77
		fi
	done
}

# make_tmp NAME: tmp, a new directory /tmp/NAME.XXXXXX. At exit, the hsd
# that start_hsd started is stopped (SIGTERM, then SIGKILL after 5 s) and
# the directory removed.
hsd_pid=
make_tmp() {
	tmp=$(mktemp -d "/tmp/$1.XXXXXX")
	trap cleanup_tmp EXIT
}
cleanup_tmp() {
	if [[ $hsd_pid ]]; then
		kill "$hsd_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$hsd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$hsd_pid" 2>/dev/null
		wait "$hsd_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}

# start_hsd ALLOWED_DIR [HSD-ARGS...]: hsd with its state and run dirs in
# $tmp (its log $tmp/hsd.log, its socket $sock), files allowed under
# ALLOWED_DIR, and any further arguments. Waits (15 s at most) until it
# answers; fails if it does not.
start_hsd() {
	sock=$tmp/run/hsd.sock
	"$HSD" --state-dir "$tmp/state" --run-dir "$tmp/run" --allowed-dir "$1" "${@:2}" \
		>"$tmp/hsd.log" 2>&1 &
	hsd_pid=$!
	for _ in $(seq 150); do
		"$HSCTL" --socket "$sock" list >/dev/null 2>&1 && break
		kill -0 "$hsd_pid" 2>/dev/null || break
		sleep 0.1
	done
	"$HSCTL" --socket "$sock" list >/dev/null 2>&1
}

# run ARGS...: hsctl with the socket of start_hsd; sets $out, $err and $rc.
run() {
	out=$("$HSCTL" --socket "$sock" "$@" 2>"$tmp/err")
	rc=$?
	err=$(cat "$tmp/err")
}
