#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests completion/hsctl.bash: sources it, simulates what bash hands a
# completion function (COMP_WORDS split at whitespace and at ':' and '=',
# COMP_CWORD, COMP_LINE, COMP_POINT) and checks COMPREPLY. VM, template and
# snapshot names are asked from a real hsd started in temporary directories
# (killed by its pid at the end); templates and snapshots need qemu-img.
#
# Usage: tests/cli/test-completion.sh   (HS_BUILD_DIR: build dir, default build/)
# Exit: 0 all passed, 1 a check failed, 77 skipped (no built hsctl).
set -u

# shellcheck source=tests/cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_built "$HSCTL"
make_tmp hsctl-completion

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
commands=(version host list info create set start stop kill reboot pause resume delete qmp console events ksm
	balloon template snapshot migrate pci network sriov nic)
create_opts=(--memory --cpus --accel --machine --cpu-model --no-mem-merge --memory-file --firmware --secure-boot --tpm --kernel --initrd --append --disk --nic --from
	--template --disk-size --cloud-init --network-config --ssh-key --hostname --balloon --balloon-floor --vcpu-pin
	--emulator-pin --numa-node --hugepages --cpu-max --cpu-weight --memory-overhead --pids-max --hostdev
	--hotplug-ports --display --spice-listen --agent)
set_opts=(--balloon --balloon-floor --disk --io-group --no-limits --bps-read --bps-write --bps-total --bps-read-max --bps-write-max
	--bps-total-max --iops-read --iops-write --iops-total --iops-read-max --iops-write-max --iops-total-max
	--vcpu-pin --emulator-pin --no-pin --cpu-max --cpu-weight --memory-overhead --pids-max --hotplug-ports)
migrate_opts=(--to --storage --address --downtime --bandwidth --multifd --timeout --auto-converge --xbzrle --tls
	--postcopy)

# Commands and global options.
expect "commands" "$H " "${commands[@]}"
expect "commands starting with 'st'" "$H st" start stop
expect "commands starting with 's'" "$H s" set start stop snapshot sriov
expect "commands starting with 'n'" "$H n" network nic
expect "commands starting with 'm'" "$H m" migrate
expect "global options" "$H --" --socket --json --help --version
expect "commands after --json" "$H --json re" reboot resume
expect "no global options after the command" "$H list --" ""

# Options of each command.
expect "options of create" "$H create web1 --" "${create_opts[@]}"
expect "options of create after the name" "$H create web1 " "${create_opts[@]}"
expect "nothing for a new VM's name" "$H create " ""
expect "a used option is not offered again" "$H create web1 --memory 512 --cpus 2 --" \
	--accel --machine --cpu-model --no-mem-merge --memory-file --firmware --secure-boot --tpm --kernel --initrd --append --disk \
	--nic --from --template --disk-size --cloud-init --network-config --ssh-key --hostname --balloon --balloon-floor \
	--vcpu-pin --emulator-pin --numa-node --hugepages --cpu-max --cpu-weight --memory-overhead --pids-max \
	--hostdev --hotplug-ports --display --spice-listen --agent
expect "--disk and --nic may repeat" "$H create web1 --disk /x --nic user --n" --nic --no-mem-merge \
	--network-config --numa-node
expect "--vcpu-pin may repeat (VCPU:LIST read as one word)" \
	"$H create web1 --vcpu-pin 0:1 --vcpu-pin=1:0-1,3 --emulator-pin 0 --" \
	"${create_opts[@]/--emulator-pin/}"
expect "create: no values for --vcpu-pin" "$H create web1 --vcpu-pin " ""
expect "create: no values for --vcpu-pin VCPU:" "$H create web1 --vcpu-pin 1:" ""
expect "create: no values for --numa-node" "$H create web1 --numa-node " ""
expect "create: --hugepages sizes" "$H create web1 --hugepages " 2M 1G
expect "create: --hugepages=1 (after '=')" "$H create web1 --hugepages=1" 1G
expect "--template is not offered twice" "$H create web1 --template t --t" --tpm
expect "options of set" "$H set vm1 --" "${set_opts[@]}"
expect "options of set, before the name" "$H set --no" --no-limits --no-pin
expect "options of set starting with --bps-r" "$H set vm1 --bps-r" --bps-read --bps-read-max
expect "options of set starting with --iops-t" "$H set vm1 --iops-t" --iops-total --iops-total-max
expect "a used option of set is not offered again" "$H set vm1 --disk 1 --bps-read 10M --bps-" \
	--bps-write --bps-total --bps-read-max --bps-write-max --bps-total-max
expect "set: no values for --disk (an index)" "$H set vm1 --disk " ""
expect "set: no values for --bps-read" "$H set vm1 --bps-read " ""
expect "set: no values for --balloon" "$H set vm1 --balloon " ""
expect "set: options after NAME and a value" "$H set vm1 --balloon 512M --no" --no-limits --no-pin
expect "set: --vcpu-pin may repeat, --emulator-pin not" "$H set vm1 --vcpu-pin 0:1 --emulator-pin 0 --vcpu-pin 1:0 --" \
	"${set_opts[@]/--emulator-pin/}"
expect "set: no values for --emulator-pin" "$H set vm1 --emulator-pin " ""
expect "set: options after --no-pin" "$H set vm1 --no-pin --e" --emulator-pin
expect "options of start" "$H start vm1 --" --paused
expect "options of stop" "$H stop vm1 --" --timeout --force --agent
expect "options of stop, before the name" "$H stop --f" --force
expect "options of console" "$H console vm1 --" --wait-for --timeout --no-replay --spice --viewer --ttl
expect "create: --display types" "$H create web1 --display " virtio qxl none
expect "create: no values for --spice-listen" "$H create web1 --spice-listen " ""
expect "options of events" "$H events --" --vm
expect "options of ksm" "$H ksm --" --mode --pages --sleep --max-cpu --boost-max-cpu \
	--pressure-available
expect "options of balloon" "$H balloon --" --mode --low --high
expect "balloon --mode values" "$H balloon --mode " auto off
expect "kill has no options" "$H kill vm1 --" ""
expect "options of migrate" "$H migrate vm1 --" "${migrate_opts[@]}" --cancel --confirm --abort
expect "options of migrate, before the name" "$H migrate --c" --cancel --confirm
expect "migrate: after --to, no --cancel/--confirm/--abort" "$H migrate vm1 --to /x --" \
	"${migrate_opts[@]/--to/}"
expect "migrate: a used option is not offered again" "$H migrate vm1 --to /x --tls --multifd 4 --" \
	--storage --address --downtime --bandwidth --timeout --auto-converge --xbzrle --postcopy
expect "migrate: flags starting with --a" "$H migrate vm1 --to /x --a" --address --auto-converge
expect "migrate: nothing after --cancel" "$H migrate vm1 --cancel --" ""
expect "migrate: nothing after --confirm" "$H migrate vm1 --confirm " ""
expect "migrate: after --abort, no options" "$H migrate --abort --" ""
expect "list takes nothing" "$H list " ""

# template and snapshot: subcommands, then their arguments and options.
expect "template subcommands" "$H template " list show import from-vm delete
expect "template subcommands starting with 'i'" "$H template i" import
expect "snapshot subcommands" "$H snapshot " list create rollback delete
expect "snapshot subcommands starting with 'r'" "$H snapshot r" rollback
expect "template list takes nothing" "$H template list " ""
expect "nothing for a new template's name" "$H template import " ""
expect "nothing for a new template's name (from-vm)" "$H template from-vm " ""
expect "options of template import" "$H template import t1 /x --" --format
expect "options of template from-vm" "$H template from-vm t1 vm1 --" --disk --warm --stop
expect "template show has no options" "$H template show t1 --" ""
expect "options of snapshot create" "$H snapshot create vm1 s1 --" --memory
expect "options of snapshot create, before the names" "$H snapshot create --m" --memory
expect "snapshot rollback has no options" "$H snapshot rollback vm1 s1 --" ""
expect "snapshot delete has no options" "$H snapshot delete vm1 s1 --" ""
expect "no options before a subcommand" "$H snapshot --" ""
expect "nothing after snapshot list VM" "$H snapshot list vm1 " ""
expect "pci subcommands" "$H pci " list attach detach release
expect "pci subcommands starting with 'a'" "$H pci a" attach
expect "options of pci list" "$H pci list --" --all
expect "options of pci attach" "$H pci attach vm1 0000:01:00.0 --" --all-functions --one-function \
	--x-vga --rom-file --no-rom-bar --display
expect "pci attach: --one-function after --all-functions is not offered" \
	"$H pci attach vm1 0000:01:00.0 --all-functions --" --x-vga --rom-file --no-rom-bar --display
expect "pci attach --display values" "$H pci attach vm1 0000:01:00.0 --display " off on auto
expect "pci detach has no options" "$H pci detach vm1 0000:01:00.0 --" ""
expect "pci release has no options" "$H pci release 0000:01:00.0 --" ""
expect "network subcommands" "$H network " list show create delete
expect "sriov subcommands" "$H sriov " list set
expect "nic subcommands" "$H nic " list add set del
expect "nic subcommands starting with 's'" "$H nic s" set
expect "network list takes nothing" "$H network list " ""
expect "nothing for a new network's name" "$H network create " ""
expect "options of network create" "$H network create lan --" --bridge --create --vlan-filtering \
	--macvtap --mode --sriov
expect "network create: a used option is not offered again" "$H network create lan --create --" \
	--bridge --vlan-filtering --macvtap --mode --sriov
expect "network create --mode values" "$H network create lan --macvtap eth0 --mode " bridge vepa \
	private passthru
expect "network create --mode=p" "$H network create lan --macvtap eth0 --mode=p" private passthru
expect "network show has no options" "$H network show lan --" ""
expect "options of sriov set" "$H sriov set eth1 --" --numvfs
expect "sriov set: no values for --numvfs" "$H sriov set eth1 --numvfs " ""
expect "options of nic add" "$H nic add vm1 --" --network --mac --model --queues --vlan --no-vhost \
	--link-down
expect "nic add --model values" "$H nic add vm1 --network lan --model " virtio e1000 e1000e rtl8139
expect "nic add: no values for --vlan" "$H nic add vm1 --vlan " ""
expect "nic add: no values for --mac" "$H nic add vm1 --mac " ""
expect "options of nic set" "$H nic set vm1 net0 --" --link --vlan
expect "nic set --link values" "$H nic set vm1 net0 --link " up down
expect "nic set --vlan: none (or a number)" "$H nic set vm1 net0 --vlan " none
expect "nic del has no options" "$H nic del vm1 net0 --" ""
expect "nic list has no options" "$H nic list vm1 --" ""
expect "nic ids: nothing when hsd is unreachable" "$H --socket $tmp/none.sock nic del vm1 " ""
expect "network names: nothing when hsd is unreachable" "$H --socket $tmp/none.sock network show " ""
expect "nic add --network: nothing when hsd is unreachable" \
	"$H --socket $tmp/none.sock nic add vm1 --network " ""
expect "create --hostdev may repeat" "$H create web1 --hostdev 01:00.0 --ho" --hostdev \
	--hostname --hotplug-ports

# Values.
expect "--accel values" "$H create web1 --accel " kvm tcg
expect "--accel values, prefix" "$H create web1 --accel t" tcg
expect "--accel=value (readline replaces after '=')" "$H create web1 --accel=" kvm tcg
expect "--accel=k" "$H create web1 --accel=k" kvm
expect "--nic values" "$H create web1 --nic " user none bridge: network:
expect "--nic n" "$H create web1 --nic n" network: none
expect "--nic network:NET, (readline replaces after ':'): the keys" "$H create web1 --nic network:lan," \
	lan,vlan= lan,mac= lan,queues= lan,model= lan,vhost=
expect "--nic network:NET,KEY=V,v: the keys not given yet" \
	"$H create web1 --nic network:lan,vlan=10,v" 10,vhost=
expect "--nic network:NET,model=: the models" "$H create web1 --nic network:lan,model=" \
	virtio e1000 e1000e rtl8139
expect "--nic network:NET,vhost=o" "$H create web1 --nic network:lan,vhost=o" on off
expect "--nic network:NET,vlan=: no values" "$H create web1 --nic network:lan,vlan=" ""
expect "--nic network: with hsd unreachable: no names" \
	"$H --socket $tmp/none.sock create web1 --nic network:" ""
expect "--nic b" "$H create web1 --nic b" bridge:
expect "--mode values" "$H ksm --mode " auto off fixed
expect "--mode=f" "$H ksm --mode=f" fixed
expect "no values for --memory" "$H create web1 --memory " ""
expect "no values for --timeout" "$H stop vm1 --timeout " ""
expect "--format values" "$H template import t1 /x --format " qcow2 raw
expect "--format=r" "$H template import t1 /x --format=r" raw
expect "no values for template from-vm --disk (an index)" "$H template from-vm t1 vm1 --disk " ""
expect "no values for --disk-size" "$H create web1 --disk-size " ""
expect "migrate: --storage values" "$H migrate vm1 --storage " shared copy
expect "migrate: --storage=c" "$H migrate vm1 --storage=c" copy
expect "migrate: no values for --downtime" "$H migrate vm1 --downtime " ""
expect "migrate: no values for --bandwidth" "$H migrate vm1 --bandwidth " ""
expect "migrate: no values for --multifd" "$H migrate vm1 --multifd " ""
expect "migrate: no values for --address" "$H migrate vm1 --address " ""
expect "migrate: no values for --timeout" "$H migrate vm1 --to /x --timeout " ""
expect "no values for --hostname" "$H create web1 --hostname " ""

# Bridges: those of this host, after "bridge:" (readline replaces after ':').
bridges=()
for d in /sys/class/net/*/bridge; do [[ -d $d ]] && { d=${d%/bridge}; bridges+=("${d##*/}"); }; done
expect "--nic bridge: lists this host's bridges" "$H create web1 --nic bridge:" "${bridges[@]}"
expect "network create --bridge lists this host's bridges" "$H network create lan --bridge " "${bridges[@]}"

# Interfaces and SR-IOV physical functions of this host (sysfs).
ifaces=() pfs=()
for d in /sys/class/net/*; do
	[[ -e $d ]] || continue
	ifaces+=("${d##*/}")
	[[ -e $d/device/sriov_totalvfs ]] && pfs+=("${d##*/}")
done
expect "network create --macvtap lists this host's interfaces" "$H network create d --macvtap " \
	"${ifaces[@]}"
expect "network create --sriov lists this host's SR-IOV PFs" "$H network create f --sriov " "${pfs[@]}"
expect "sriov set <TAB>: this host's SR-IOV PFs" "$H sriov set " "${pfs[@]}"

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
expect "files for --cloud-init" "$H create web1 --cloud-init $tmp/files/s" "$tmp/files/spec.json" \
	"$tmp/files/sub"
expect "files for --network-config" "$H create web1 --network-config $tmp/files/v" "$tmp/files/vmlinuz"
expect "files for --ssh-key" "$H create web1 --ssh-key=$tmp/files/v" "$tmp/files/vmlinuz"
expect "files for migrate --to (the destination's socket)" "$H migrate vm1 --to $tmp/files/v" \
	"$tmp/files/vmlinuz"
expect "files for migrate --to=" "$H migrate vm1 --to=$tmp/files/d" "$tmp/files/disk.qcow2"
expect "files for template import NAME FILE" "$H template import t1 $tmp/files/d" "$tmp/files/disk.qcow2"
expect "options after template import NAME FILE" "$H template import t1 $tmp/files/disk.qcow2 " --format

# VM names, from an hsd that does not run: quietly nothing.
expect "VM names: nothing when hsd is unreachable" "$H --socket $tmp/none.sock start " ""
expect "template names: nothing when hsd is unreachable" "$H --socket $tmp/none.sock template show " ""
expect "snapshot names: nothing when hsd is unreachable" \
	"$H --socket $tmp/none.sock snapshot rollback vm1 " ""
HSD_SOCKET=$tmp/none.sock expect "VM names: nothing when HSD_SOCKET names no hsd" "$H info " ""

# VM names from a real hsd.
if [[ ! -x $HSD ]]; then
	not_ok "hsd starts" "$HSD is not built"
else
	if ! start_hsd /tmp; then
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
		expect "set <TAB>: both VMs" "$H --socket $sock set " alpha beta-2
		expect "set with options first <TAB>: both VMs" "$H --socket $sock set --bps-read 1M " alpha beta-2
		expect "set b<TAB>: beta-2" "$H --socket $sock set b" beta-2
		expect "set NAME <TAB>: then the options" "$H --socket $sock set alpha " "${set_opts[@]}"
		expect "qmp <TAB>: both VMs" "$H --socket $sock qmp " alpha beta-2
		expect "migrate <TAB>: both VMs" "$H --socket $sock migrate " alpha beta-2
		expect "migrate with options first <TAB>: both VMs" "$H --socket $sock migrate --tls " \
			alpha beta-2
		expect "migrate NAME <TAB>: then the options" "$H --socket $sock migrate alpha " \
			"${migrate_opts[@]}" --cancel --confirm --abort
		expect "migrate --cancel <TAB>: VM names" "$H --socket $sock migrate --cancel a" alpha
		expect "events --vm <TAB>: both VMs" "$H --socket $sock events --vm " alpha beta-2
		expect "events --vm=<TAB>: both VMs" "$H --socket $sock events --vm=" alpha beta-2
		expect "one name only: then the options" "$H --socket $sock start alpha " --paused
		expect "one name only: stop" "$H --socket $sock stop alpha --timeout 5 " --force --agent
		expect "nothing after qmp NAME" "$H --socket $sock qmp alpha " ""
		expect "no VM names for create" "$H --socket $sock create " ""
		HSD_SOCKET=$sock expect "HSD_SOCKET is honoured" "$H kill " alpha beta-2
		expect "snapshot list <TAB>: VM names" "$H --socket $sock snapshot list " alpha beta-2
		expect "snapshot create <TAB>: VM names" "$H --socket $sock snapshot create a" alpha
		expect "template from-vm NAME <TAB>: VM names" "$H --socket $sock template from-vm t1 " \
			alpha beta-2
		expect "nic list <TAB>: VM names" "$H --socket $sock nic list " alpha beta-2
		expect "nic add <TAB>: VM names" "$H --socket $sock nic add " alpha beta-2
		expect "nic set with options first <TAB>: VM names" "$H --socket $sock nic set --link up b" \
			beta-2

		# Templates and snapshots: a template, a VM on it, two snapshots.
		if ! command -v qemu-img >/dev/null; then
			echo "# qemu-img is not installed: template and snapshot names not tested"
		elif ! qemu-img create -q -f qcow2 "$tmp/base.qcow2" 16M; then
			not_ok "qemu-img create $tmp/base.qcow2"
		else
			for cmd in "template import tpl-one $tmp/base.qcow2" \
				"template import tpl-two $tmp/base.qcow2 --format qcow2" \
				"create gamma --kernel $tmp/vmlinuz --accel tcg --template tpl-one" \
				"snapshot create gamma snap-a" "snapshot create gamma snap-b"; do
				# shellcheck disable=SC2086 # the words of $cmd
				if out=$("$HSCTL" --socket "$sock" $cmd 2>&1); then
					ok "hsctl $cmd"
				else
					not_ok "hsctl $cmd" "$out"
				fi
			done
			expect "template show <TAB>: template names" "$H --socket $sock template show " \
				tpl-one tpl-two
			expect "template delete tpl-t<TAB>" "$H --socket $sock template delete tpl-t" tpl-two
			expect "create --template <TAB>: template names" \
				"$H --socket $sock create v --template " tpl-one tpl-two
			expect "create --template=<TAB>: template names" \
				"$H --socket $sock create v --template=tpl-o" tpl-one
			expect "snapshot rollback VM <TAB>: its snapshots" \
				"$H --socket $sock snapshot rollback gamma " snap-a snap-b
			expect "snapshot delete VM snap-b<TAB>" "$H --socket $sock snapshot delete gamma snap-b" \
				snap-b
			expect "snapshot rollback, a VM without snapshots" \
				"$H --socket $sock snapshot rollback alpha " ""
			expect "nothing for a new snapshot's name" "$H --socket $sock snapshot create gamma " ""
			expect "nothing after snapshot rollback VM SNAP" \
				"$H --socket $sock snapshot rollback gamma snap-a " ""
		fi
	fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
