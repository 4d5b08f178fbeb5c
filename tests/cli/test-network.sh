#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests the command lines of `hsctl network`, `hsctl sriov`, `hsctl nic` and
# `hsctl create --nic network:...` without hsd: hsctl is pointed at a socket
# where nothing listens, so a command line it accepts ends with exit status 3
# (cannot reach hsd) and a usage error with 2 and a message naming the
# mistake, before anything is sent. Then against a real hsd (killed by its
# pid at the end) whose --sysfs-root is a fake tree with one bridge, on a
# VM that is never started (no QEMU runs, no interface is made): a network
# on that bridge, NICs added, changed and removed (200), what hsctl prints
# for each, and the errors hsd answers (exit 1).
#
# Usage: tests/cli/test-network.sh   (HS_BUILD_DIR: build dir, default build/)
# Exit: 0 all passed, 1 a check failed, 77 skipped (hsctl not built).
set -u

# shellcheck source=tests/cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_built "$HSCTL"
make_tmp hsctl-network

# expect_rc DESCRIPTION RC STDERR-PATTERN ARGS...: exit status RC, and
# standard error matching the extended regular expression (if not empty).
expect_rc() {
	local desc=$1 want=$2 pat=$3 err rc
	shift 3
	"$HSCTL" --socket "$tmp/no-hsd.sock" "$@" </dev/null >/dev/null 2>"$tmp/err"
	rc=$?
	err=$(cat "$tmp/err")
	if [[ $rc -eq $want ]] && { [[ -z $pat ]] || grep -qE -- "$pat" <<<"$err"; }; then
		ok "$desc"
	else
		not_ok "$desc" "hsctl $*" "exit $rc (want $want)" "stderr: $err"
	fi
}
# accepted DESCRIPTION ARGS...: the command line is accepted (exit 3).
accepted() {
	local desc=$1
	shift
	expect_rc "$desc" 3 'hsd is not running' "$@"
}

# network
accepted "network list" network list
accepted "network list --json" network list --json
accepted "network show NAME" network show lan
accepted "network delete NAME" network delete lan
accepted "network create --bridge" network create lan --bridge br0
accepted "network create --bridge --create --vlan-filtering" network create lan --bridge hsbr0 \
	--create --vlan-filtering
accepted "network create --create alone (bridge hsbr-NAME)" network create lan --create
accepted "network create --macvtap --mode" network create direct --macvtap eth0 --mode passthru
accepted "network create --sriov" network create fast --sriov eth1
expect_rc "network without a subcommand" 2 'usage: hsctl network list' network
expect_rc "network frob" 2 'usage: hsctl network' network frob
expect_rc "network list with an argument" 2 'usage' network list x
expect_rc "network show without a name" 2 'usage' network show
expect_rc "network create without a kind" 2 'give --bridge BR, --create, --macvtap PARENT or --sriov PF' \
	network create lan
expect_rc "network create with two kinds" 2 'one of --bridge, --macvtap and --sriov' network create lan \
	--bridge br0 --sriov eth1
expect_rc "network create --sriov --create" 2 '--create is for a bridge' network create lan \
	--sriov eth1 --create
expect_rc "network create --vlan-filtering on an existing bridge" 2 \
	'--vlan-filtering only with --create' network create lan --bridge br0 --vlan-filtering
expect_rc "network create --mode without --macvtap" 2 '--mode only with --macvtap' network create lan \
	--bridge br0 --mode vepa
expect_rc "network create --mode frob" 2 \
	"--mode: 'frob' is not one of bridge, vepa, private or passthru" network create lan \
	--macvtap eth0 --mode frob
expect_rc "network create without a name" 2 'usage' network create --bridge br0
expect_rc "network create --frob" 2 'usage' network create lan --frob

# sriov
accepted "sriov list" sriov list
accepted "sriov set PF --numvfs N" sriov set eth1 --numvfs 4
accepted "sriov set --numvfs N PF" sriov set --numvfs 0 eth1
expect_rc "sriov set without --numvfs" 2 'usage: hsctl sriov' sriov set eth1
expect_rc "sriov set --numvfs x" 2 "--numvfs: 'x' is not a whole number" sriov set eth1 --numvfs x
expect_rc "sriov set --numvfs -1" 2 "--numvfs: '-1' is not a whole number" sriov set eth1 --numvfs -1
expect_rc "sriov set without a PF" 2 'usage' sriov set --numvfs 4
expect_rc "sriov frob" 2 'usage' sriov frob

# nic
accepted "nic list VM" nic list web1
accepted "nic add with every option" nic add web1 --network lan --mac 52:54:00:AB:cd:ef \
	--model e1000e --queues 4 --vlan 4094 --no-vhost --link-down
accepted "nic add --queues 0 (the default: the vCPUs)" nic add web1 --network lan --queues 0
accepted "nic set --link --vlan" nic set web1 net0 --link down --vlan 20
accepted "nic set --vlan none" nic set web1 net0 --vlan none
accepted "nic del VM ID" nic del web1 net0
expect_rc "nic add without --network" 2 '--network NET is needed' nic add web1 --vlan 10
expect_rc "nic add without a VM" 2 'usage: hsctl nic' nic add --network lan
expect_rc "nic add --mac too short" 2 "--mac: '52:54:00:ab:cd' is not a MAC address" nic add web1 \
	--network lan --mac 52:54:00:ab:cd
expect_rc "nic add --mac with a non-hex digit" 2 'is not a MAC address' nic add web1 --network lan \
	--mac 52:54:00:ab:cd:eg
expect_rc "nic add --model frob" 2 "--model: 'frob' is not one of virtio, e1000, e1000e or rtl8139" \
	nic add web1 --network lan --model frob
expect_rc "nic add --vlan 0" 2 "--vlan: '0' is not a VLAN id from 1 to 4094" nic add web1 \
	--network lan --vlan 0
expect_rc "nic add --vlan 4095" 2 "--vlan: '4095' is not a VLAN id" nic add web1 --network lan \
	--vlan 4095
expect_rc "nic add --vlan none (only for nic set)" 2 "--vlan: 'none' is not a VLAN id" nic add web1 \
	--network lan --vlan none
expect_rc "nic add --queues x" 2 "--queues: 'x' is not a whole number" nic add web1 --network lan \
	--queues x
expect_rc "nic set with nothing to change" 2 'nothing to change: give --link or --vlan' nic set web1 net0
expect_rc "nic set --link sideways" 2 "--link: 'sideways' is not one of up or down" nic set web1 net0 \
	--link sideways
expect_rc "nic set --vlan x" 2 "--vlan: 'x' is not a VLAN id from 1 to 4094 \(or none\)" nic set web1 \
	net0 --vlan x
expect_rc "nic set without an ID" 2 'usage' nic set web1 --link up
expect_rc "nic del without an ID" 2 'usage' nic del web1
expect_rc "nic list without a VM" 2 'usage' nic list
expect_rc "nic frob" 2 'usage' nic frob

# create --nic
accepted "create --nic network:NET" create v1 --kernel /etc/hostname --nic network:lan
accepted "create --nic network:NET with every key" create v1 --kernel /etc/hostname \
	--nic network:lan,vlan=10,mac=52:54:00:ab:cd:ef,queues=2,model=virtio,vhost=on
accepted "create --nic with vhost=off, twice, and user, bridge:BR, none" create v1 --kernel /etc/hostname \
	--nic network:lan,vhost=off --nic network:wan --nic user --nic bridge:br0 --nic none
expect_rc "create --nic network:lan,vlan=x" 2 "--nic vlan: 'x' is not a VLAN id from 1 to 4094" \
	create v1 --kernel /etc/hostname --nic network:lan,vlan=x
expect_rc "create --nic network:lan,vlan=0" 2 "--nic vlan: '0' is not a VLAN id" create v1 \
	--kernel /etc/hostname --nic network:lan,vlan=0
expect_rc "create --nic with an unknown key" 2 "--nic: unknown key 'speed'" create v1 \
	--kernel /etc/hostname --nic network:lan,speed=10G
expect_rc "create --nic with a key and no value" 2 "'vlan' is not KEY=VALUE" create v1 \
	--kernel /etc/hostname --nic network:lan,vlan
expect_rc "create --nic with a key given twice" 2 '--nic queues: given twice' create v1 \
	--kernel /etc/hostname --nic network:lan,queues=1,queues=2
expect_rc "create --nic vhost=maybe" 2 "--nic vhost: 'maybe' is not one of on or off" create v1 \
	--kernel /etc/hostname --nic network:lan,vhost=maybe
expect_rc "create --nic model=virtio-net" 2 "--nic model: 'virtio-net' is not one of" create v1 \
	--kernel /etc/hostname --nic network:lan,model=virtio-net
expect_rc "create --nic mac=x" 2 "--nic mac: 'x' is not a MAC address" create v1 \
	--kernel /etc/hostname --nic network:lan,mac=x
expect_rc "create --nic network: without a name" 2 \
	"'network:' is not user, none, bridge:BR or network:NET" create v1 --kernel /etc/hostname \
	--nic network:
expect_rc "create --nic frob" 2 "'frob' is not user, none, bridge:BR or network:NET" create v1 \
	--kernel /etc/hostname --nic frob

# Against a real hsd. Its --sysfs-root has a bridge (sys/class/net/BR/bridge,
# VLAN filtering off), the CPU list and meminfo it reads.
root=$tmp/sysroot
mkdir -p "$root/sys/class/net/hs-test-br0/bridge" "$root/sys/devices/system/cpu" "$root/proc"
echo 0 >"$root/sys/class/net/hs-test-br0/bridge/vlan_filtering"
echo 0-1 >"$root/sys/devices/system/cpu/online"
printf 'MemTotal:       8388608 kB\nMemFree:        4194304 kB\nMemAvailable:   4194304 kB\n' \
	>"$root/proc/meminfo"
hsd_args=(--sysfs-root "$root")
((EUID == 0)) && hsd_args+=(--qemu-user root) # no hsd-qemu user made for a VM never started
if [[ ! -x $HSD ]]; then
	echo "SKIP: the part against a real hsd ($HSD is not built)"
elif ! start_hsd "$tmp" "${hsd_args[@]}"; then
	not_ok "hsd starts" "$(tail -5 "$tmp/hsd.log")"
else
	ok "hsd starts"
	# live DESCRIPTION RC STDOUT-PATTERN STDERR-PATTERN ARGS...: exit RC,
	# standard output and error matching the extended regular expressions
	# (each if not empty).
	live() {
		local desc=$1 want=$2 opat=$3 epat=$4
		shift 4
		run "$@"
		if [[ $rc -eq $want ]] && { [[ -z $opat ]] || grep -qE -- "$opat" <<<"$out"; } &&
			{ [[ -z $epat ]] || grep -qE -- "$epat" <<<"$err"; }; then
			ok "$desc"
		else
			not_ok "$desc" "hsctl $*" "exit $rc (want $want)" "stdout: $out" "stderr: $err"
		fi
	}
	echo kernel >"$tmp/vmlinuz"
	live "hsd: create --nic network:NET of no network: unknown-network" 1 '' \
		"no network named 'lan'.*unknown-network \(HTTP 404\)" \
		create v1 --kernel "$tmp/vmlinuz" --accel tcg --nic network:lan
	live "hsd: network create --bridge BR" 0 \
		'^created network lan \(bridge hs-test-br0, VLAN filtering off\)$' '' \
		network create lan --bridge hs-test-br0
	live "hsd: network create on a bridge the host lacks: unknown-bridge" 1 '' \
		'unknown-bridge \(HTTP 404\)' network create lan2 --bridge hs-no-br0
	live "hsd: network create NAME taken: exists" 1 '' 'exists \(HTTP 409\)' \
		network create lan --bridge hs-test-br0
	live "hsd: network create --macvtap on an interface the host lacks: unknown-interface" 1 '' \
		'unknown-interface \(HTTP 404\)' network create direct --macvtap hs-no-eth0
	live "hsd: network show: present, no ports, no VFs" 0 \
		'^Present: +yes$' '' network show lan
	[[ $out != *VFs* && $out == *"Ports:       none"* ]] && ok "hsd: network show has no VFs line" ||
		not_ok "hsd: network show has no VFs line" "$out"
	live "hsd: network list" 0 '^lan +bridge +bridge hs-test-br0, VLAN filtering off$' '' \
		network list
	live "hsd: create --nic network:NET,vlan=V" 0 '' '' \
		create v1 --kernel "$tmp/vmlinuz" --accel tcg --nic network:lan,vlan=10
	live "hsd: nic add to a stopped VM: stored, net1" 0 \
		'^v1: net1 added \(network:lan, 52:54:00(:[0-9a-f]{2}){3}, no vlan, link up\) \(stored; used at the next start\)$' \
		'' nic add v1 --network lan --queues 2
	live "hsd: nic add --queues 9: usage" 2 '' "--queues: '9'" nic add v1 --network lan --queues 9
	live "hsd: nic add on no network: unknown-network" 1 '' 'unknown-network \(HTTP 404\)' \
		nic add v1 --network nope
	live "hsd: nic set --vlan on a stopped VM: stored" 0 \
		'^v1: net1 changed \(network:lan, .*, vlan 20, link up\) \(stored; used at the next start\)$' \
		'' nic set v1 net1 --vlan 20
	live "hsd: nic list" 0 '^net1 +network:lan +52:54:00(:[0-9a-f]{2}){3} +virtio +2 +20 up +- +- +-$' \
		'' nic list v1
	live "hsd: info has the NIC lines" 0 '^NIC net0: +network:lan, 52:54:00(:[0-9a-f]{2}){3}, virtio, vlan 10, link up$' \
		'' info v1
	live "hsd: network delete while a VM uses it: in-use" 1 '' 'v1.*in-use \(HTTP 409\)' \
		network delete lan
	live "hsd: nic del on a stopped VM: done (200)" 0 '^v1: net1 removed$' '' nic del v1 net1
	live "hsd: nic del --json: hsd's answer" 0 '"state": "detached"' '' --json nic del v1 net0
	live "hsd: nic del of a NIC that is gone: not-found" 1 '' 'not-found \(HTTP 404\)' \
		nic del v1 net1
	live "hsd: network delete: done (200)" 0 '^deleted network lan$' '' network delete lan
	live "hsd: network show of a deleted network: not-found" 1 '' 'not-found \(HTTP 404\)' \
		network show lan
	live "hsd: sriov list on a host without SR-IOV" 0 '^no SR-IOV physical functions on this host$' \
		'' sriov list
	live "hsd: sriov set of an interface the host lacks: not-found" 1 '' 'not-found \(HTTP 404\)' \
		sriov set hs-no-pf0 --numvfs 1
fi

echo "$passed passed, $failed failed"
((failed == 0))
