# SPDX-License-Identifier: Apache-2.0
# bash completion for hsctl(1), the Hypervisor Scale CLI.      -*- shell-script -*-
#
# Completes the global options (before the command), the commands, each
# command's options and their values, and VM names, asked from the running
# hsd (`hsctl --json list`, through the --socket given earlier on the line,
# else $HSD_SOCKET or the default socket). Nothing is offered for VM names
# when hsd cannot be reached. Needs only bash; works with or without the
# bash-completion package.

_hsctl_commands='version host list info create start stop kill reboot pause resume delete qmp console events ksm'
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

# VM names from the live API; "$@" are the global options to pass (--socket).
_hsctl_vm_names()
{
	local hsctl
	hsctl=$(_hsctl_dequote "${words[0]}")
	type -P -- "$hsctl" >/dev/null 2>&1 || hsctl=hsctl
	type -P -- "$hsctl" >/dev/null 2>&1 || return 0
	local -a run=("$hsctl" "$@" --json list)
	type -P timeout >/dev/null 2>&1 && run=(timeout 3 "${run[@]}")
	local line re='^[[:space:]]*"name": "([^"]*)"'
	while IFS= read -r line; do
		[[ $line =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]}"
	done < <("${run[@]}" </dev/null 2>/dev/null)
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
		# The command's options: those taking a value, flags, repeatable ones.
		local argopts='' flags='' repeat=' --disk --nic '
		case $cmd in
		create)
			argopts='--memory --cpus --accel --machine --cpu-model --kernel --initrd --append --disk --nic --from'
			flags='--no-mem-merge'
			;;
		start) flags='--paused' ;;
		stop)
			argopts='--timeout'
			flags='--force'
			;;
		console)
			argopts='--wait-for --timeout'
			flags='--no-replay'
			;;
		events) argopts='--vm' ;;
		ksm) argopts='--mode --pages --sleep --max-cpu' ;;
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
			--mode) cand=(auto off fixed) ;;
			--nic)
				if [[ $val == bridge:* ]]; then
					local br
					while IFS= read -r br; do cand+=("bridge:$br"); done < <(_hsctl_bridges)
				else
					cand=(user none bridge:)
					nospace=1
				fi
				;;
			--kernel | --initrd | --disk | --from) files=1 ;;
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
			local wants_vm=0
			case $cmd in
			info | start | stop | kill | reboot | pause | resume | delete | console | qmp)
				((${#pos[@]} == 0)) && wants_vm=1
				;;
			esac
			if [[ $cur == -* ]]; then
				cand=("${opts[@]}")
			elif ((wants_vm)); then
				local n
				while IFS= read -r n; do cand+=("$n"); done < <(_hsctl_vm_names "${glob[@]}")
			elif [[ $cmd == create && ${#pos[@]} -eq 0 && $cword -eq $((cmdi + 1)) ]]; then
				: # the new VM's name
			elif [[ -z $cur && $cmd != qmp ]]; then
				cand=("${opts[@]}")
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
	((nospace)) && [[ ${COMPREPLY[*]} == *: ]] && compopt -o nospace 2>/dev/null
	return 0
}

complete -F _hsctl hsctl
