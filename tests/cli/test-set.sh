#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests `hsctl set` and `hsctl create --balloon` against a real hsd started
# in temporary directories (killed by its pid at the end), on VMs that are
# never started (no QEMU runs): the usage errors (exit 2, nothing sent), the
# errors hsd answers (exit 1), what is sent and stored (read back with
# `hsctl --json info`), the line printed, and how `hsctl info` shows the
# limits and the balloon target; then CPU pinning: stored on a stopped VM,
# and, when QEMU is installed, applied to a running one (TCG, nothing to
# boot) as the kernel sees it (/proc/PID/task/TID/status). The live path of
# the limits and the balloon is covered by tests/integration.
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
if [[ $rc -eq 0 && $out == *"Memory:      1024 MiB"$'\n'*"Balloon:     target 512 MiB"$'\n'* &&
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

# CPU pinning and NUMA: create and set, on VMs that are not running.
expect_rc "create --vcpu-pin LIST --vcpu-pin N:LIST --emulator-pin --numa-node" 0 '' create p1 \
	--kernel "$tmp/vmlinuz" --accel tcg --cpus 3 --vcpu-pin 0-1 --vcpu-pin 2:1 --emulator-pin 0 \
	--numa-node 0
expect_stored "... stored: LIST for every vCPU, N:LIST overrides it" p1 \
	'[s.get("cpu_pinning"), s.get("numa_node")]' '[{"emulator": "0", "vcpus": ["0-1", "0-1", "1"]}, 0]'
run info p1
if [[ $rc -eq 0 && $out == *"vCPUs:       3"$'\n'"vCPU pins:   0-1→0-1, 2→1; emulator 0"$'\n'"NUMA node:   0"$'\n'* ]]; then
	ok "info shows the pins and the NUMA node"
else
	not_ok "info shows the pins and the NUMA node" "$out"
fi
expect_rc "create --vcpu-pin 0,1 (a list with a comma, every vCPU)" 0 '' create p2 --kernel "$tmp/vmlinuz" \
	--accel tcg --cpus 2 --vcpu-pin 0,1
expect_stored "... stored for both vCPUs" p2 's.get("cpu_pinning")' '{"vcpus": ["0,1", "0,1"]}'
expect_rc "create --vcpu-pin 1:0 on a VM of one vCPU" 2 'has 1 vCPU \(0 to 0\); give --cpus' create p3 \
	--kernel "$tmp/vmlinuz" --vcpu-pin 1:0
expect_rc "create --numa-node 64" 2 "--numa-node: '64' is not a whole number up to 63" create p3 \
	--kernel "$tmp/vmlinuz" --numa-node 64
for bad in '' 'x' '1-' '-1' '3-1' '1,' ',1' '1,,2' '1 2' '0:1:2' '1-2-3' '1024'; do
	expect_rc "create --vcpu-pin '$bad': usage error" 2 "--vcpu-pin: '.*'" create p3 \
		--kernel "$tmp/vmlinuz" --vcpu-pin "$bad"
done
expect_rc "create --emulator-pin 0-x" 2 "--emulator-pin: '0-x' is not a list of host CPUs" create p3 \
	--kernel "$tmp/vmlinuz" --emulator-pin 0-x
expect_rc "create --vcpu-pin x:1" 2 "before ':' comes a vCPU's index" create p3 --kernel "$tmp/vmlinuz" \
	--vcpu-pin x:1

expect_rc "set --vcpu-pin 0:1 --vcpu-pin 0:0 (a vCPU twice)" 2 'vCPU 0 is given twice' set p1 \
	--vcpu-pin 0:1 --vcpu-pin 0:0
expect_rc "set --vcpu-pin 0 --vcpu-pin 1 (two lists for all)" 2 'one list for all vCPUs' set p1 \
	--vcpu-pin 0 --vcpu-pin 1
expect_rc "set --vcpu-pin 2-1" 2 'must not run backwards' set p1 --vcpu-pin 2-1
expect_rc "set --no-pin with --emulator-pin" 2 '--no-pin cannot be combined' set p1 --no-pin --emulator-pin 0
expect_rc "set --vcpu-pin 3:0 past the VM's vCPUs" 1 "VM 'p1' has 3 vCPUs \(0 to 2\), no vCPU 3" set p1 \
	--vcpu-pin 3:0
expect_rc "set --vcpu-pin on an unknown VM" 1 "no VM named 'nope'" set nope --vcpu-pin 0
expect_stored "pinning errors changed nothing" p1 's.get("cpu_pinning")' \
	'{"emulator": "0", "vcpus": ["0-1", "0-1", "1"]}'
expect_out "set --vcpu-pin 0:1 --vcpu-pin 2:0 replaces the pinning" \
	"p1: vCPU pins 0→1, 2→0 (stored; applied at the next start)" set p1 --vcpu-pin 0:1 --vcpu-pin 2:0
expect_stored "... vCPU 1 and the emulator no longer pinned" p1 's.get("cpu_pinning")' \
	'{"vcpus": ["1", null, "0"]}'
expect_out "set --emulator-pin 0-1 alone" "p1: vCPU pins none; emulator 0-1 (stored; applied at the next start)" \
	set p1 --emulator-pin 0-1
expect_stored "... stored without vCPU pins" p1 's.get("cpu_pinning")' '{"emulator": "0-1"}'
expect_out "set --no-pin --balloon 256" \
	"p1: balloon target 256 MiB of 512 MiB; no CPU pinning (stored; applied at the next start)" \
	set p1 --no-pin --balloon 256
expect_stored "... nothing pinned" p1 '[s.get("cpu_pinning"), s.get("numa_node")]' '[null, 0]'
run info p1
if [[ $rc -eq 0 && $out != *"vCPU pins"* ]]; then
	ok "info shows no pins when there are none"
else
	not_ok "info shows no pins when there are none" "$out"
fi

# A running VM (QEMU with TCG, SeaBIOS finding nothing to boot): the pins
# seen by the kernel, for the vCPU threads QEMU reports and the others.
# allowed PID TID: the thread's Cpus_allowed_list.
allowed() { sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$1/task/$2/status"; }
# check_threads DESCRIPTION VCPU-LIST... OTHERS-LIST: each vCPU thread (in
# QEMU's order) and every other thread of $qemu_pid allowed on those CPUs.
check_threads() {
	local desc=$1 tids want got t i=0 bad=
	local -a vl=("${@:2:$#-2}")
	local others=${!#}
	mapfile -t tids < <("$HSCTL" --socket "$sock" qmp pr '{"execute":"query-cpus-fast"}' |
		python3 -c 'import json, sys; [print(c["thread-id"]) for c in json.load(sys.stdin)["return"]]')
	for t in "${tids[@]}"; do
		got=$(allowed "$qemu_pid" "$t")
		[[ $got == "${vl[i]}" ]] || bad+=" vCPU $i (tid $t): $got, want ${vl[i]};"
		i=$((i + 1))
	done
	((${#tids[@]} == ${#vl[@]})) || bad+=" ${#tids[@]} vCPU threads;"
	for t in "/proc/$qemu_pid/task/"*; do
		t=${t##*/}
		[[ " ${tids[*]} " == *" $t "* ]] && continue
		got=$(allowed "$qemu_pid" "$t")
		[[ $got == "$others" ]] || bad+=" thread $t: $got, want $others;"
	done
	if [[ -z $bad ]]; then ok "$desc"; else not_ok "$desc" "$bad"; fi
}
if ! command -v qemu-system-x86_64 >/dev/null || (($(nproc) < 2)); then
	echo "# no qemu-system-x86_64 or fewer than 2 CPUs: pinning of a running VM not tested"
else
	truncate -s 1M "$tmp/boot.raw"
	expect_rc "create a VM of 2 vCPUs pinned 0:1 1:0, emulator 0" 0 '' create pr --accel tcg --cpus 2 \
		--memory 64 --disk "$tmp/boot.raw" --nic none --vcpu-pin 0:1 --vcpu-pin 1:0 --emulator-pin 0
	expect_rc "start it" 0 '' start pr
	qemu_pid=$("$HSCTL" --socket "$sock" --json info pr | python3 -c 'import json, sys; print(json.load(sys.stdin).get("pid", 0))')
	if [[ $rc -ne 0 || ! -d /proc/$qemu_pid ]]; then
		not_ok "QEMU runs" "pid '$qemu_pid'" "$(tail -5 "$tmp/hsd.log")"
	else
		check_threads "pinned at start: vCPU 0 on 1, vCPU 1 on 0, the rest on 0" 1 0 0
		expect_out "set --vcpu-pin 0-1 --emulator-pin 1 live" \
			"pr: vCPU pins 0-1→0-1; emulator 1 (live)" set pr --vcpu-pin 0-1 --emulator-pin 1
		check_threads "... moved at once: vCPUs on 0-1, the rest on 1" 0-1 0-1 1
		# hsd pins vCPU by vCPU and stops at the first refusal, so the bad
		# one comes first here.
		expect_rc "set --vcpu-pin 0:7 (no such host CPU) on the running VM" 1 '7' set pr \
			--vcpu-pin 0:7 --vcpu-pin 1:0
		check_threads "... refused pins moved nothing" 0-1 0-1 1
		expect_stored "... and stored nothing" pr 's.get("cpu_pinning")' \
			'{"emulator": "1", "vcpus": ["0-1", "0-1"]}'
		run info pr
		cg=$("$HSCTL" --socket "$sock" --json info pr | python3 -c 'import json, sys; print(json.load(sys.stdin).get("cgroup", ""))')
		if [[ $rc -eq 0 && $out == *"vCPU pins:   0-1→0-1; emulator 1"$'\n'* &&
			($cg == "" || $out == *"Cgroup:      $cg"$'\n'*) ]]; then
			ok "info on the running VM: pins${cg:+ and cgroup $cg}"
		else
			not_ok "info on the running VM: pins${cg:+ and cgroup $cg}" "$out"
		fi
		expect_rc "kill it" 0 '' kill pr
	fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
