#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests the command lines of `hsctl network`, `hsctl sriov`, `hsctl nic` and
# `hsctl create --nic network:...` without hsd: hsctl is pointed at a socket
# where nothing listens, so a command line it accepts ends with exit status 3
# (cannot reach hsd) and a usage error with 2 and a message naming the
# mistake, before anything is sent. What hsd answers is for the daemon's
# tests (the contract: docs/networking-spec.md).
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

echo "$passed passed, $failed failed"
((failed == 0))
