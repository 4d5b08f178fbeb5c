#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests completion/hsctl.bash: sources it, simulates what bash hands a
# completion function (COMP_WORDS split at whitespace and at ':' and '=',
# COMP_CWORD, COMP_LINE, COMP_POINT) and checks COMPREPLY. VM names are
# asked from a real hsd started in temporary directories (killed by its pid
# at the end).
#
# Usage: tests/cli/test-completion.sh   (HS_BUILD_DIR: build dir, default build/)
# Exit: 0 all passed, 1 a check failed, 77 skipped (no built hsctl).
set -u

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${HS_BUILD_DIR:-$top/build}
HSD=$build/daemon/hsd
HSCTL=$build/cli/hsctl
if [[ ! -x $HSCTL ]]; then
	echo "SKIP: $HSCTL is not built (meson setup build && ninja -C build)"
	exit 77
fi

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1"; shift; printf '    %s\n' "$@"; failed=$((failed + 1)); }

tmp=$(mktemp -d /tmp/hsctl-completion.XXXXXX)
hsd_pid=
cleanup() {
	if [[ $hsd_pid ]]; then
		kill "$hsd_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$hsd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$hsd_pid" 2>/dev/null
		wait "$hsd_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=completion/hsctl.bash
source "$top/completion/hsctl.bash"
if [[ $(complete -p hsctl 2>/dev/null) == *"-F _hsctl"* ]]; then
	ok "the script registers _hsctl for hsctl"
else
	not_ok "the script registers _hsctl for hsctl" "complete -p hsctl: $(complete -p hsctl 2>&1)"
fi

# complete LINE: the cursor at the end of LINE (no quotes in LINE). Splits it
# as readline does with the default COMP_WORDBREAKS and calls _hsctl; the
# result is in COMPREPLY, and whatever _hsctl printed in $completion_output.
COMP_WORDBREAKS=$' \t\n"\'><=;|&(:'
complete_line() {
	local line=$1 tok
	COMP_WORDS=()
	for tok in $line; do
		# "--accel=t" -> --accel = t; "bridge:" -> bridge :
		while [[ $tok =~ ^([^:=]*)([:=])(.*)$ ]]; do
			[[ ${BASH_REMATCH[1]} ]] && COMP_WORDS+=("${BASH_REMATCH[1]}")
			COMP_WORDS+=("${BASH_REMATCH[2]}")
			tok=${BASH_REMATCH[3]}
		done
		[[ $tok ]] && COMP_WORDS+=("$tok")
	done
	[[ $line == *' ' ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE=$line
	COMP_POINT=${#line}
	COMPREPLY=()
	completion_output=$(_hsctl 2>&1; printf x)
	completion_output=${completion_output%x}
	# Again, outside the subshell, for COMPREPLY.
	_hsctl >/dev/null 2>&1
}

# expect DESCRIPTION LINE WORD... : COMPREPLY is exactly these words (any order).
expect() {
	local desc=$1 line=$2
	shift 2
	complete_line "$line"
	local got want
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort)
	want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
	if [[ $got == "$want" && -z $completion_output ]]; then
		ok "$desc"
	else
		not_ok "$desc" "line:     '$line'" "expected: ${want//$'\n'/ }" "got:      ${got//$'\n'/ }" \
			${completion_output:+"output:   $completion_output"}
	fi
}

H=$HSCTL
commands=(version host list info create start stop kill reboot pause resume delete qmp console events ksm)
create_opts=(--memory --cpus --accel --machine --cpu-model --no-mem-merge --kernel --initrd --append --disk --nic --from)

# Commands and global options.
expect "commands" "$H " "${commands[@]}"
expect "commands starting with 'st'" "$H st" start stop
expect "global options" "$H --" --socket --json --help --version
expect "commands after --json" "$H --json re" reboot resume
expect "no global options after the command" "$H list --" ""

# Options of each command.
expect "options of create" "$H create web1 --" "${create_opts[@]}"
expect "options of create after the name" "$H create web1 " "${create_opts[@]}"
expect "nothing for a new VM's name" "$H create " ""
expect "a used option is not offered again" "$H create web1 --memory 512 --cpus 2 --" \
	--accel --machine --cpu-model --no-mem-merge --kernel --initrd --append --disk --nic --from
expect "--disk and --nic may repeat" "$H create web1 --disk /x --nic user --n" --nic --no-mem-merge
expect "options of start" "$H start vm1 --" --paused
expect "options of stop" "$H stop vm1 --" --timeout --force
expect "options of stop, before the name" "$H stop --f" --force
expect "options of console" "$H console vm1 --" --wait-for --timeout --no-replay
expect "options of events" "$H events --" --vm
expect "options of ksm" "$H ksm --" --mode --pages --sleep --max-cpu
expect "kill has no options" "$H kill vm1 --" ""
expect "list takes nothing" "$H list " ""

# Values.
expect "--accel values" "$H create web1 --accel " kvm tcg
expect "--accel values, prefix" "$H create web1 --accel t" tcg
expect "--accel=value (readline replaces after '=')" "$H create web1 --accel=" kvm tcg
expect "--accel=k" "$H create web1 --accel=k" kvm
expect "--nic values" "$H create web1 --nic " user none bridge:
expect "--nic b" "$H create web1 --nic b" bridge:
expect "--mode values" "$H ksm --mode " auto off fixed
expect "--mode=f" "$H ksm --mode=f" fixed
expect "no values for --memory" "$H create web1 --memory " ""
expect "no values for --timeout" "$H stop vm1 --timeout " ""

# Bridges: those of this host, after "bridge:" (readline replaces after ':').
bridges=()
for d in /sys/class/net/*/bridge; do [[ -d $d ]] && { d=${d%/bridge}; bridges+=("${d##*/}"); }; done
expect "--nic bridge: lists this host's bridges" "$H create web1 --nic bridge:" "${bridges[@]}"

# Files.
mkdir -p "$tmp/files/sub"
touch "$tmp/files/vmlinuz" "$tmp/files/disk.qcow2" "$tmp/files/spec.json"
expect "files for --kernel" "$H create web1 --kernel $tmp/files/vm" "$tmp/files/vmlinuz"
expect "files for --initrd" "$H create web1 --initrd $tmp/files/" \
	"$tmp/files/vmlinuz" "$tmp/files/disk.qcow2" "$tmp/files/spec.json" "$tmp/files/sub"
expect "files for --disk" "$H create web1 --disk $tmp/files/d" "$tmp/files/disk.qcow2"
expect "files for --from" "$H create --from $tmp/files/s" "$tmp/files/spec.json" "$tmp/files/sub"
expect "files for --disk=" "$H create web1 --disk=$tmp/files/d" "$tmp/files/disk.qcow2"
expect "files for --socket" "$H --socket $tmp/files/v" "$tmp/files/vmlinuz"

# VM names, from an hsd that does not run: quietly nothing.
expect "VM names: nothing when hsd is unreachable" "$H --socket $tmp/none.sock start " ""
HSD_SOCKET=$tmp/none.sock expect "VM names: nothing when HSD_SOCKET names no hsd" "$H info " ""

# VM names from a real hsd.
sock=$tmp/run/hsd.sock
if [[ ! -x $HSD ]]; then
	not_ok "hsd starts" "$HSD is not built"
else
	"$HSD" --state-dir "$tmp/state" --run-dir "$tmp/run" --allowed-dir /tmp \
		>"$tmp/hsd.log" 2>&1 &
	hsd_pid=$!
	for _ in $(seq 150); do
		"$HSCTL" --socket "$sock" list >/dev/null 2>&1 && break
		kill -0 "$hsd_pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! "$HSCTL" --socket "$sock" list >/dev/null 2>&1; then
		not_ok "hsd starts" "$(tail -5 "$tmp/hsd.log")"
	else
		ok "hsd starts"
		echo kernel >"$tmp/vmlinuz"
		for vm in alpha beta-2; do
			if out=$("$HSCTL" --socket "$sock" create "$vm" --kernel "$tmp/vmlinuz" --accel tcg 2>&1); then
				ok "hsctl create $vm"
			else
				not_ok "hsctl create $vm" "$out"
			fi
		done
		expect "start <TAB>: both VMs" "$H --socket $sock start " alpha beta-2
		expect "start a<TAB>: alpha" "$H --socket $sock start a" alpha
		expect "--socket=PATH is honoured" "$H --socket=$sock info " alpha beta-2
		expect "--json before --socket" "$H --json --socket $sock delete b" beta-2
		expect "options before the name" "$H --socket $sock stop --force " alpha beta-2
		expect "console <TAB>: both VMs" "$H --socket $sock console " alpha beta-2
		expect "qmp <TAB>: both VMs" "$H --socket $sock qmp " alpha beta-2
		expect "events --vm <TAB>: both VMs" "$H --socket $sock events --vm " alpha beta-2
		expect "events --vm=<TAB>: both VMs" "$H --socket $sock events --vm=" alpha beta-2
		expect "one name only: then the options" "$H --socket $sock start alpha " --paused
		expect "one name only: stop" "$H --socket $sock stop alpha --timeout 5 " --force
		expect "nothing after qmp NAME" "$H --socket $sock qmp alpha " ""
		expect "no VM names for create" "$H --socket $sock create " ""
		HSD_SOCKET=$sock expect "HSD_SOCKET is honoured" "$H kill " alpha beta-2
	fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
