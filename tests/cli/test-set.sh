#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests `hsctl set` and `hsctl create --balloon` against a real hsd started
# in temporary directories (killed by its pid at the end), on VMs that are
# never started (no QEMU runs): the usage errors (exit 2, nothing sent), the
# errors hsd answers (exit 1), what is sent and stored (read back with
# `hsctl --json info`), the line printed, and how `hsctl info` shows the
# limits and the balloon target. The live path (a running VM) is covered
# by tests/integration.
#
# Usage: tests/cli/test-set.sh   (HS_BUILD_DIR: build dir, default build/)
# Exit: 0 all passed, 1 a check failed, 77 skipped (hsd or hsctl not built,
# no python3).
set -u

# shellcheck source=tests/cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_built "$HSD" "$HSCTL"
if ! command -v python3 >/dev/null; then
	echo "SKIP: python3 is needed to read hsctl's JSON"
	exit 77
fi

make_tmp hsctl-set
if ! start_hsd "$tmp"; then
	not_ok "hsd starts" "$(tail -5 "$tmp/hsd.log")"
	echo "$passed passed, $failed failed"
	exit 1
fi
ok "hsd starts"

# run ARGS...: hsctl with the test socket; sets $out, $err and $rc.
run() {
	out=$("$HSCTL" --socket "$sock" "$@" 2>"$tmp/err")
	rc=$?
	err=$(cat "$tmp/err")
}

# expect_rc DESCRIPTION RC STDERR-PATTERN ARGS...: exit status RC, and
# standard error matching the extended regular expression (if not empty).
expect_rc() {
	local desc=$1 want=$2 pat=$3
	shift 3
	run "$@"
	if [[ $rc -eq $want ]] && { [[ -z $pat ]] || grep -qE -- "$pat" <<<"$err"; }; then
		ok "$desc"
	else
		not_ok "$desc" "hsctl $*" "exit $rc (want $want)" "stderr: $err" "stdout: $out"
	fi
}

# expect_out DESCRIPTION LINE ARGS...: exit 0 and exactly LINE printed.
expect_out() {
	local desc=$1 want=$2
	shift 2
	run "$@"
	if [[ $rc -eq 0 && $out == "$want" ]]; then
		ok "$desc"
	else
		not_ok "$desc" "hsctl $*" "exit $rc" "expected: $want" "got:      $out" "stderr: $err"
	fi
}

# stored VM PYTHON-EXPR: the expression over the VM's spec (`s`), from
# hsctl --json info.
stored() {
	"$HSCTL" --socket "$sock" --json info "$1" |
		python3 -c 'import json, sys; s = json.load(sys.stdin)["spec"]; print(json.dumps('"$2"', sort_keys=True))'
}

# expect_stored DESCRIPTION VM PYTHON-EXPR JSON
expect_stored() {
	local got
	got=$(stored "$2" "$3")
	if [[ $got == "$4" ]]; then
		ok "$1"
	else
		not_ok "$1" "$3: expected $4" "got $got"
	fi
}

echo kernel >"$tmp/vmlinuz"
truncate -s 1M "$tmp/d0.raw" "$tmp/d1.raw"
expect_rc "create a VM with two disks" 0 '' create v1 --kernel "$tmp/vmlinuz" --accel tcg \
	--memory 1024 --disk "$tmp/d0.raw" --disk "$tmp/d1.raw"
expect_rc "create --balloon 512M" 0 '' create v2 --kernel "$tmp/vmlinuz" --accel tcg --balloon 512M
expect_stored "create --balloon 512M stores balloon_mib 512" v2 's.get("balloon_mib")' 512
expect_rc "create --balloon 1.5G beyond the memory: hsd refuses" 1 'balloon_mib' create v3 \
	--kernel "$tmp/vmlinuz" --accel tcg --balloon 1.5G
expect_rc "create --balloon 100K: usage error" 2 'whole number of MiB' create v3 \
	--kernel "$tmp/vmlinuz" --balloon 100K

# Usage errors: exit 2, nothing sent (the VM is unchanged afterwards).
expect_rc "set without a name" 2 'usage' set --bps-read 1M
expect_rc "set with two names" 2 'usage' set v1 v2 --no-limits
expect_rc "set with nothing to change" 2 'nothing to change' set v1
expect_rc "set --disk alone" 2 "--disk 1: give that disk's limits" set v1 --disk 1
expect_rc "set --disk twice" 2 'one disk per command' set v1 --disk 0 --disk 1 --no-limits
expect_rc "set --disk x" 2 'not a whole number' set v1 --disk x --no-limits
expect_rc "set --bps-read 10X" 2 "'10X' is not a rate" set v1 --bps-read 10X
expect_rc "set --bps-read -1" 2 'not a rate' set v1 --bps-read -1
expect_rc "set --bps-read above 10^15" 2 "above QEMU's limit" set v1 --bps-read 1000T
expect_rc "set --iops-read 1.5" 2 'not a whole number' set v1 --iops-read 1.5
expect_rc "set --bps-total with --bps-read" 2 '--bps-total cannot be combined' set v1 \
	--bps-total 1M --bps-read 1M
expect_rc "set --iops-total with --iops-write" 2 '--iops-total cannot be combined' set v1 \
	--iops-total 10 --iops-write 10
expect_rc "set a burst without its rate" 2 '--bps-write-max needs --bps-write' set v1 \
	--bps-write-max 20M
expect_rc "set a burst below its rate" 2 '--iops-read-max must not be below --iops-read' set v1 \
	--iops-read 100 --iops-read-max 50
expect_rc "set --no-limits with a limit" 2 'cannot be combined with limit options' set v1 \
	--no-limits --bps-read 1M
expect_rc "set --io-group -x" 2 'not a group name' set v1 --io-group -x
expect_rc "set --balloon x" 2 "'x' is not a size" set v1 --balloon x
expect_rc "set --frob" 2 'usage' set v1 --frob
expect_stored "usage errors changed nothing" v1 '[s.get("balloon_mib"), [d.get("limits") for d in s["disks"]]]' \
	'[null, [null, null]]'

# Errors hsd answers, or that need to know the VM: exit 1.
expect_rc "set on an unknown VM" 1 "no VM named 'nope'" set nope --balloon 512M
expect_rc "set on an unknown VM (limits)" 1 "no VM named 'nope'" set nope --bps-read 1M
expect_rc "set --disk past the VM's disks" 1 "has 2 disks \(0 to 1\), no disk 2" set v1 --disk 2 \
	--no-limits
expect_rc "set --balloon above the memory" 1 'balloon_mib: must be 0' set v1 --balloon 2G
expect_rc "set --balloon 8M" 1 'balloon_mib' set v1 --balloon 8M
expect_rc "set --io-group with capitals" 1 'not a valid group name' set v1 --io-group G1
expect_rc "set --io-group too long" 1 'group' set v1 --io-group "$(printf 'g%.0s' {1..33})"
run --json set v1 --balloon 2G
if [[ $rc -eq 1 && $out == *'"invalid-spec"'* ]]; then
	ok "--json: hsd's error object on standard output"
else
	not_ok "--json: hsd's error object on standard output" "exit $rc" "$out"
fi

# Changes stored (the VM is not running), the line printed.
expect_out "set --bps-read --iops-total --io-group" \
	"v1: disk 0 limited to read 10.0 MiB/s, 200 IOPS total, group g1 (stored; applied at the next start)" \
	set v1 --bps-read 10M --iops-total 200 --io-group g1
expect_stored "... stored as bytes and IO/s" v1 's["disks"][0]["limits"]' \
	'{"bps_read": 10485760, "group": "g1", "iops_total": 200}'
expect_out "set --disk 1 with bursts and a rate with /s" \
	"v1: disk 1 limited to write 1.5 MiB/s (bursts to 4.0 MiB/s), 30 IOPS read (bursts to 60) (stored; applied at the next start)" \
	set --disk 1 v1 --bps-write 1.5M/s --bps-write-max 4MiB --iops-read 30 --iops-read-max 60
expect_stored "... disk 0 unchanged, disk 1 stored" v1 '[d.get("limits") for d in s["disks"]]' \
	'[{"bps_read": 10485760, "group": "g1", "iops_total": 200}, {"bps_write": 1572864, "bps_write_max": 4194304, "iops_read": 30, "iops_read_max": 60}]'
expect_out "the limits given replace the disk's limits" \
	"v1: disk 0 limited to total 1.0 GiB/s (stored; applied at the next start)" \
	set v1 --bps-total 1G
expect_stored "... no read limit, IOPS limit or group left" v1 's["disks"][0]["limits"]' \
	'{"bps_total": 1073741824}'
expect_out "set --balloon 768M" \
	"v1: balloon target 768 MiB of 1024 MiB (stored; applied at the next start)" \
	set v1 --balloon 768M
expect_out "set --balloon 512 (MiB) with limits" \
	"v1: disk 0 limited to 100 IOPS write; balloon target 512 MiB of 1024 MiB (stored; applied at the next start)" \
	set v1 --iops-write 100 --balloon 512

run info v1
if [[ $rc -eq 0 && $out == *"Memory:      1024 MiB"$'\n'"Balloon:     target 512 MiB"$'\n'* &&
	$out == *"$tmp/d0.raw (raw)"$'\n'"             I/O limits: 100 IOPS write"$'\n'* &&
	$out == *"$tmp/d1.raw (raw)"$'\n'"             I/O limits: write 1.5 MiB/s (bursts to 4.0 MiB/s), 30 IOPS read (bursts to 60)"$'\n'* ]]; then
	ok "info shows the balloon target and each disk's limits"
else
	not_ok "info shows the balloon target and each disk's limits" "$out"
fi

run --json set v1 --disk 1 --no-limits
if [[ $rc -eq 0 ]] && python3 -c 'import json, sys; v = json.loads(sys.argv[1]); sys.exit(0 if v["name"] == "v1" and "limits" not in v["spec"]["disks"][1] else 1)' "$out"; then
	ok "--json set --no-limits prints the VM, the disk without limits"
else
	not_ok "--json set --no-limits prints the VM, the disk without limits" "exit $rc" "$out"
fi
expect_out "set --balloon all --no-limits" \
	"v1: disk 0 not limited; no balloon target: all 1024 MiB (stored; applied at the next start)" \
	set v1 --balloon all --no-limits
expect_stored "... nothing left" v1 '[s.get("balloon_mib"), [d.get("limits") for d in s["disks"]]]' \
	'[null, [null, null]]'
run info v1
if [[ $rc -eq 0 && $out != *Balloon:* && $out != *"I/O limits"* ]]; then
	ok "info shows no balloon and no limits when there are none"
else
	not_ok "info shows no balloon and no limits when there are none" "$out"
fi
expect_out "set --balloon 0 on v2" "v2: no balloon target: all 512 MiB (stored; applied at the next start)" \
	set v2 --balloon 0
expect_rc "set --disk 0 on a VM without disks" 1 "VM 'v2' has no disks" set v2 --no-limits

echo "$passed passed, $failed failed"
((failed == 0))
