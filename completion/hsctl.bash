# SPDX-License-Identifier: Apache-2.0
# bash completion for hsctl(1), the Hypervisor Scale CLI.      -*- shell-script -*-
#
# Completes the global options (before the command), the commands, each
# command's options and their values, the host's PCI addresses, network
# interfaces, bridges and SR-IOV physical functions (sysfs), and the names
# of VMs, templates, snapshots, networks and a VM's NIC ids, asked from the
# running hsd (`hsctl --json list`, `hsctl --json template list`, `hsctl
# --json snapshot list VM`, `network list`, `nic list VM`, through the --socket given
# earlier on the line, else $HSD_SOCKET or the default socket). Nothing is
# offered for those names when hsd cannot be reached. Needs only bash; works with or without the
# bash-completion package.

_hsctl_commands='version host list info create set start stop kill reboot pause resume delete qmp console events ksm balloon template snapshot migrate pci network sriov nic'
_hsctl_template_commands='list show import from-vm delete'
_hsctl_snapshot_commands='list create rollback delete'
_hsctl_pci_commands='list attach detach release'
_hsctl_network_commands='list show create delete'
_hsctl_sriov_commands='list set'
_hsctl_nic_commands='list add set del'
_hsctl_global_opts='--socket --json --help --version'

# The words of the line, with the pieces that readline splits at ':' and '='
# (COMP_WORDBREAKS) joined back, so that "--nic bridge:br0" or "--accel=tcg"
# are single words as hsctl sees them. Sets the caller's words and cword.
_hsctl_words()
{
	words=("${COMP_WORDS[@]}")
	cword=$COMP_CWORD
	[[ ${COMP_LINE+set} ]] || return 0
	local line=$COMP_LINE i j=-1 ws
	words=()
	cword=0
	for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
		ws=0
		if [[ $line =~ ^[[:space:]]+ ]]; then
			ws=1
			line=${line#"${BASH_REMATCH[0]}"}
		fi
		if ((i > 0 && !ws)) && [[ ${COMP_WORDS[i]} == [:=] || ${words[j]} == *[:=] ]]; then
			words[j]+=${COMP_WORDS[i]}
		else
			words[++j]=${COMP_WORDS[i]}
		fi
		line=${line#"${COMP_WORDS[i]}"}
		((i == COMP_CWORD)) && cword=$j
	done
	return 0
}

# A word of the line as the shell would pass it (simple quoting and ~ only).
_hsctl_dequote()
{
	local v=$1
	case $v in
	\'*\') v=${v:1:${#v}-2} ;;
	\"*\") v=${v:1:${#v}-2} ;;
	*) v=${v//\\/} ;;
	esac
	# shellcheck disable=SC2088 # a literal ~ typed on the line
	[[ $v == '~' || $v == '~/'* ]] && v=$HOME${v:1}
	printf '%s' "$v"
}

# Names from the live API: _hsctl_names N GLOBAL_OPTION... COMMAND...: the
# N global options to pass (--socket), then the command whose JSON answer
# lists objects with a "name" (list, template list, snapshot list VM,
# network list), or with the member $_hsctl_key when the caller sets it.
_hsctl_names()
{
	local hsctl n=$1
	shift
	hsctl=$(_hsctl_dequote "${words[0]}")
	type -P -- "$hsctl" >/dev/null 2>&1 || hsctl=hsctl
	type -P -- "$hsctl" >/dev/null 2>&1 || return 0
	local -a run=("$hsctl" "${@:1:n}" --json "${@:n+1}")
	type -P timeout >/dev/null 2>&1 && run=(timeout 3 "${run[@]}")
	local line re='^[[:space:]]*"'"${_hsctl_key:-name}"'": "([^"]*)"'
	while IFS= read -r line; do
		[[ $line =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]}"
	done < <("${run[@]}" </dev/null 2>/dev/null)
}

# A VM's NIC ids: _hsctl_nic_ids N GLOBAL_OPTION... nic list VM (the "id"
# members of the answer).
_hsctl_nic_ids()
{
	local _hsctl_key=id
	_hsctl_names "$1" "${@:2}"
}

# VM names; "$@" are the global options to pass.
_hsctl_vm_names()
{
	_hsctl_names $# "$@" list
}

# PCI addresses of this host, for --hostdev and pci (from sysfs).
_hsctl_pci_addrs()
{
	local d
	for d in /sys/bus/pci/devices/*; do
		[[ -e $d ]] && printf '%s\n' "${d##*/}"
	done
}

# Network interfaces of this host (for --macvtap and --sriov), and of them
# the SR-IOV physical functions (_hsctl_ifaces sriov).
_hsctl_ifaces()
{
	local d
	for d in /sys/class/net/*; do
		[[ -e $d ]] || continue
		[[ ${1-} == sriov && ! -e $d/device/sriov_totalvfs ]] && continue
		printf '%s\n' "${d##*/}"
	done
}

# Bridges of this host, for --nic bridge:BR.
_hsctl_bridges()
{
	local d
	for d in /sys/class/net/*/bridge; do
		[[ -d $d ]] || continue
		d=${d%/bridge}
		printf '%s\n' "${d##*/}"
	done
}

_hsctl()
{
	local -a words
	local cword
	_hsctl_words
	local cur=${words[cword]} prev=${words[cword - 1]}
	COMPREPLY=()

	# Global options, up to the command (hsctl stops parsing them there).
	local -a glob=()
	local i=1 cmd='' cmdi=0
	while ((i < cword)); do
		case ${words[i]} in
		--socket)
			glob+=(--socket "$(_hsctl_dequote "${words[i + 1]}")")
			((i += 2))
			continue
			;;
		--socket=*) glob+=("--socket=$(_hsctl_dequote "${words[i]#--socket=}")") ;;
		-*) ;;
		*)
			cmd=${words[i]}
			cmdi=$i
			break
			;;
		esac
		((i++))
	done

	# What is completed: an option's value (as "--opt VALUE" or
	# "--opt=VALUE"), an option, or a positional argument.
	local opt='' val=$cur pre=''
	if [[ $cur == --*=* ]]; then
		opt=${cur%%=*}
		val=${cur#*=}
		pre=$opt=
	elif ((cword > 1)) && [[ $prev == --* && $prev != *=* ]]; then
		opt=$prev
	fi

	local -a cand=()
	local files=0 nospace=0

	if [[ -z $cmd ]]; then
		if [[ $opt == --socket ]]; then
			files=1
		elif [[ $cur == -* ]]; then
			read -ra cand <<<"$_hsctl_global_opts"
		else
			read -ra cand <<<"$_hsctl_commands"
		fi
	else
		# template and snapshot: the word after them is a subcommand.
		local sub=''
		case $cmd in
		template | snapshot | pci | network | sriov | nic) ((cword > cmdi + 1)) && sub=${words[cmdi + 1]} ;;
		esac

		# The command's options: those taking a value, flags, repeatable ones.
		local argopts='' flags='' repeat=''
		case $cmd in
		create)
			argopts='--memory --cpus --accel --machine --cpu-model --kernel --initrd --append'
			argopts+=' --template --disk-size --disk --nic --from --cloud-init --network-config'
			argopts+=' --ssh-key --hostname --balloon --balloon-floor --vcpu-pin --emulator-pin'
			argopts+=' --numa-node --cpu-max --cpu-weight --memory-overhead --pids-max'
			argopts+=' --hugepages --hostdev --hotplug-ports --display --spice-listen --firmware'
			flags='--no-mem-merge --memory-file --secure-boot --tpm --agent'
			repeat=' --disk --nic --vcpu-pin --hostdev '
			;;
		set)
			argopts='--balloon --balloon-floor --disk --io-group --bps-read --bps-write --bps-total'
			argopts+=' --bps-read-max'
			argopts+=' --bps-write-max --bps-total-max --iops-read --iops-write --iops-total'
			argopts+=' --iops-read-max --iops-write-max --iops-total-max --vcpu-pin --emulator-pin'
			argopts+=' --cpu-max --cpu-weight --memory-overhead --pids-max --hotplug-ports'
			flags='--no-limits --no-pin'
			repeat=' --vcpu-pin '
			;;
		start) flags='--paused' ;;
		stop)
			argopts='--timeout'
			flags='--force --agent'
			;;
		console)
			argopts='--wait-for --timeout --ttl'
			flags='--no-replay --spice --viewer'
			;;
		events) argopts='--vm' ;;
		ksm) argopts='--mode --pages --sleep --max-cpu --boost-max-cpu --pressure-available' ;;
		balloon) argopts='--mode --low --high' ;;
		template)
			case $sub in
			import) argopts='--format' ;;
			from-vm)
				argopts='--disk'
				flags='--warm --stop'
				;;
			esac
			;;
		snapshot) [[ $sub == create ]] && flags='--memory' ;;
		pci)
			case $sub in
			list) flags='--all' ;;
			attach)
				argopts='--rom-file --display'
				flags='--all-functions --one-function --x-vga --no-rom-bar'
				;;
			esac
			;;
		migrate)
			argopts='--to --storage --address --downtime --bandwidth --multifd --timeout'
			flags='--auto-converge --xbzrle --tls --postcopy --cancel --confirm --abort'
			;;
		network)
			if [[ $sub == create ]]; then
				argopts='--bridge --macvtap --mode --sriov'
				flags='--create --vlan-filtering'
			fi
			;;
		sriov) [[ $sub == set ]] && argopts='--numvfs' ;;
		nic)
			case $sub in
			add)
				argopts='--network --mac --model --queues --vlan'
				flags='--no-vhost --link-down'
				;;
			set) argopts='--link --vlan' ;;
			esac
			;;
		esac

		# A value is wanted only after an option of this command that takes one.
		if [[ $opt && " $argopts " != *" $opt "* ]]; then
			opt=
			val=$cur
			pre=
		fi

		# Positional arguments and options given so far.
		local -a pos=()
		local used=' '
		for ((i = cmdi + 1; i < cword; i++)); do
			case ${words[i]} in
			--*=*) used+="${words[i]%%=*} " ;;
			--*)
				used+="${words[i]} "
				[[ " $argopts " == *" ${words[i]} "* ]] && ((i++))
				;;
			*) pos+=("${words[i]}") ;;
			esac
		done

		if [[ $opt ]]; then
			case $opt in
			--accel) cand=(kvm tcg) ;;
			--mode)
				cand=(auto off fixed)
				[[ $cmd == balloon ]] && cand=(auto off)
				[[ $cmd == network ]] && cand=(bridge vepa private passthru)
				;;
			--nic)
				if [[ $val == bridge:* ]]; then
					local br
					while IFS= read -r br; do cand+=("bridge:$br"); done < <(_hsctl_bridges)
				elif [[ $val == network:*,* ]]; then
					# KEY=VALUE after a network: the keys not given yet
					local k
					for k in vlan mac queues model vhost; do
						[[ $val == *",$k="* ]] || cand+=("${val%,*},$k=")
					done
					case ${val##*,} in
					model=*) cand=("${val%,*},model="{virtio,e1000,e1000e,rtl8139}) ;;
					vhost=*) cand=("${val%,*},vhost="{on,off}) ;;
					*=*) cand=() ;;
					esac
					nospace=1
				elif [[ $val == network:* ]]; then
					local n
					while IFS= read -r n; do cand+=("network:$n"); done < <(_hsctl_names "${#glob[@]}" "${glob[@]}" network list)
					nospace=1
				else
					cand=(user none bridge: network:)
					nospace=1
				fi
				;;
			--network)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_names "${#glob[@]}" "${glob[@]}" network list)
				;;
			--bridge)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_bridges)
				;;
			--macvtap)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_ifaces)
				;;
			--sriov)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_ifaces sriov)
				;;
			--model) cand=(virtio e1000 e1000e rtl8139) ;;
			--link) cand=(up down) ;;
			--vlan) [[ $sub == set ]] && cand=(none) ;;
			--format) cand=(qcow2 raw) ;;
			--storage) cand=(shared copy) ;;
			--to) files=1 ;; # the destination hsd's socket (or ssh://[user@]host[/socket])
			--hugepages) cand=(2M 1G) ;;
			--display)
				# create: the VM's screen; pci attach: vfio-pci's display
				if [[ $cmd == create ]]; then cand=(virtio qxl none); else cand=(off on auto); fi
				;;
			--firmware) cand=(bios uefi) ;;
			--rom-file) files=1 ;;
			--hostdev)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_pci_addrs)
				;;
			--kernel | --initrd | --from | --cloud-init | --network-config | --ssh-key) files=1 ;;
			--disk) [[ $cmd == create ]] && files=1 ;; # template from-vm, set: an index
			--template)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_names "${#glob[@]}" "${glob[@]}" template list)
				;;
			--vm)
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_vm_names "${glob[@]}")
				;;
			esac
		else
			# Options not given yet (or repeatable).
			local -a opts=()
			local o
			for o in $argopts $flags; do
				[[ $used == *" $o "* && $repeat != *" $o "* ]] || opts+=("$o")
			done
			# pci attach: --all-functions or --one-function, not both.
			if [[ $used == *' --all-functions '* || $used == *' --one-function '* ]]; then
				local -a one=()
				for o in "${opts[@]}"; do
					[[ $o == --all-functions || $o == --one-function ]] || one+=("$o")
				done
				opts=("${one[@]}")
			fi
			# migrate: either a migration (--to and its options) or one
			# of --cancel, --confirm, --abort alone.
			if [[ $cmd == migrate && $used != ' ' ]]; then
				local -a keep=()
				for o in "${opts[@]}"; do
					case $o in
					--cancel | --confirm | --abort) ;;
					*) [[ $used == *' --cancel '* || $used == *' --confirm '* || $used == *' --abort '* ]] ||
						keep+=("$o") ;;
					esac
				done
				opts=("${keep[@]}")
			fi
			# What the next positional argument is: vm, template or
			# snapshot (names hsd has), subcommand, new (a name
			# to be made: nothing offered), files, or none (then the options).
			local wants=none np=${#pos[@]}
			case $cmd in
			info | set | start | stop | kill | reboot | pause | resume | delete | console | qmp | migrate)
				((np == 0)) && wants=vm
				;;
			create) ((np == 0 && cword == cmdi + 1)) && wants=new ;;
			template)
				case $np:$sub in
				0:*) wants=subcommand ;;
				1:show | 1:delete) wants=template ;;
				1:import | 1:from-vm) wants=new ;;
				2:import) wants=files ;;
				2:from-vm) wants=vm ;;
				esac
				;;
			snapshot)
				case $np:$sub in
				0:*) wants=subcommand ;;
				1:list | 1:create | 1:rollback | 1:delete) wants=vm ;;
				2:create) wants=new ;;
				2:rollback | 2:delete) wants=snapshot ;;
				esac
				;;
			pci)
				case $np:$sub in
				0:*) wants=subcommand ;;
				1:attach | 1:detach) wants=vm ;;
				1:release | 2:attach | 2:detach) wants=pci ;;
				esac
				;;
			network)
				case $np:$sub in
				0:*) wants=subcommand ;;
				1:show | 1:delete) wants=network ;;
				1:create) wants=new ;;
				esac
				;;
			sriov)
				case $np:$sub in
				0:*) wants=subcommand ;;
				1:set) wants=pf ;;
				esac
				;;
			nic)
				case $np:$sub in
				0:*) wants=subcommand ;;
				1:*) wants=vm ;;
				2:set | 2:del) wants=nic ;;
				esac
				;;
			esac
			local n
			if [[ $cur == -* ]]; then
				cand=("${opts[@]}")
			else
				case $wants in
				vm) while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_vm_names "${glob[@]}") ;;
				template)
					while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_names "${#glob[@]}" "${glob[@]}" template list)
					;;
				snapshot)
					while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_names "${#glob[@]}" "${glob[@]}" \
						snapshot list "$(_hsctl_dequote "${pos[1]}")")
					;;
				subcommand)
					local var=_hsctl_${cmd}_commands
					read -ra cand <<<"${!var}"
					;;
				network)
					while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_names "${#glob[@]}" "${glob[@]}" network list)
					;;
				nic)
					while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_nic_ids "${#glob[@]}" "${glob[@]}" \
						nic list "$(_hsctl_dequote "${pos[1]}")")
					;;
				pf) while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_ifaces sriov) ;;
				pci) while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_pci_addrs) ;;
				files) files=1 ;;
				new) ;;
				none) [[ -z $cur && $cmd != qmp ]] && cand=("${opts[@]}") ;;
				esac
			fi
		fi
	fi

	if ((files)); then
		compopt -o filenames 2>/dev/null
		local f
		while IFS= read -r f; do cand+=("$f"); done < <(compgen -f -- "$(_hsctl_dequote "$val")")
	fi

	# Candidates are for $val; make them replace $cur, then drop what
	# readline will not replace (up to the last ':' or '=' of COMP_WORDBREAKS).
	local c
	for c in "${cand[@]}"; do
		[[ $files -eq 1 || $c == "$val"* ]] && COMPREPLY+=("$pre$c")
	done
	local breaks=${COMP_WORDBREAKS-$' \t\n"\'><=;|&(:'}
	breaks=${breaks//[^:=]/}
	if [[ $breaks && $cur == *[$breaks]* ]]; then
		local keep=${cur%"${cur##*["$breaks"]}"}
		for i in "${!COMPREPLY[@]}"; do
			COMPREPLY[i]=${COMPREPLY[i]#"$keep"}
		done
	fi
	((nospace)) && [[ ${COMPREPLY[*]} == *[:=] ]] && compopt -o nospace 2>/dev/null
	return 0
}

complete -F _hsctl hsctl
