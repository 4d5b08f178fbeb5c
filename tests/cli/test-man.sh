#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Tests the man pages man/hsd.8.scd and man/hsctl.1.scd: they build with
# scdoc, render with man(1) at 80 columns without warnings or overlong
# lines, document every option and command that `hsd --help` and
# `hsctl --help` print, and every option they document is one the programs
# really accept (and, for hsctl, for the command it is documented under).
#
# Usage: tests/cli/test-man.sh   (HS_BUILD_DIR: build dir, default build/)
# Needs: scdoc, man-db (exit 77, skipped, without them) and the built hsd
# and hsctl.
set -u

# shellcheck source=tests/cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for tool in scdoc:scdoc man:man-db; do
	if ! command -v "${tool%%:*}" >/dev/null; then
		echo "SKIP: ${tool%%:*} is not installed (Debian package ${tool#*:})"
		exit 77
	fi
done
need_built "$HSD" "$HSCTL"
make_tmp hs-man-test
export LC_ALL=C.UTF-8 MANWIDTH=80 MAN_KEEP_FORMATTING='' MANPAGER=cat PAGER=cat

# Options in a --help text: "--word" or "-x" at the start of a word.
help_options() {
	grep -oE '(^|[][[:space:],|(])--?[a-zA-Z][a-zA-Z0-9-]*' | sed -E 's/^[^-]+//' | sort -u
}

# Is OPT the heading of an entry of the rendered page $1 ("  --opt ARG",
# "  -v, --verbose")?
is_heading() {
	grep -qE -- "^[[:space:]]+(-[a-zA-Z], )?$2([[:space:],=]|\$)" "$1"
}

for page in hsd.8 hsctl.1; do
	src=$top/man/$page.scd
	if scdoc <"$src" >"$tmp/$page" 2>"$tmp/$page.err" && [[ ! -s $tmp/$page.err && -s $tmp/$page ]]; then
		ok "scdoc builds $page"
	else
		not_ok "scdoc builds $page" "$(head -5 "$tmp/$page.err")"
		continue
	fi
	man --warnings -l "$tmp/$page" >"$tmp/$page.txt" 2>"$tmp/$page.stderr"
	rc=$?
	warnings=$(cat "$tmp/$page.stderr"; grep -iE '(^|[[:space:]:])warning:' "$tmp/$page.txt")
	if [[ $rc -eq 0 && -z $warnings && -s $tmp/$page.txt ]]; then
		ok "man --warnings -l $page: no warnings"
	else
		not_ok "man --warnings -l $page: no warnings" "exit status $rc" "$warnings"
	fi
	long=
	while IFS= read -r line; do
		((${#line} > 80)) && long+="$line"$'\n'
	done <"$tmp/$page.txt"
	if [[ -z $long ]]; then
		ok "$page: no rendered line wider than 80 columns"
	else
		not_ok "$page: no rendered line wider than 80 columns" "$long"
	fi
	missing=
	for section in NAME SYNOPSIS DESCRIPTION OPTIONS 'EXIT STATUS' ENVIRONMENT FILES EXAMPLES 'SEE ALSO'; do
		[[ $page == hsctl.1 && $section == OPTIONS ]] && section='GLOBAL OPTIONS'
		grep -qx "$section" "$tmp/$page.txt" || missing+=" '$section'"
	done
	if [[ -z $missing ]]; then
		ok "$page has the usual sections"
	else
		not_ok "$page has the usual sections" "missing:$missing"
	fi
done

# hsd: every option of `hsd --help` (and --help itself) is documented.
if [[ -s $tmp/hsd.8.txt ]]; then
	missing=
	for opt in $("$HSD" --help | help_options) --help; do
		is_heading "$tmp/hsd.8.txt" "$opt" || missing+=" $opt"
	done
	if [[ -z $missing ]]; then
		ok "hsd.8 documents every option of hsd --help"
	else
		not_ok "hsd.8 documents every option of hsd --help" "missing:$missing"
	fi

	# ... and documents no option hsd does not accept: hsd parses its
	# options in order, so "hsd OPT [VALUE] --help" exits 0 only if OPT
	# (with its value) is accepted.
	section=$(sed -n '/^OPTIONS$/,/^[A-Z]/p' "$tmp/hsd.8.txt")
	: >"$tmp/empty.conf"
	bad='' n=0
	bad_conf=
	while read -r opt arg; do
		[[ $opt == --help || $opt == --version ]] && continue
		value=()
		case $arg in
		'') ;;
		MODE) value=(auto) ;;
		DIR | PATH) value=(/tmp) ;;
		FILE) value=("$tmp/empty.conf") ;;
		IP) value=(127.0.0.1) ;;
		LO-HI) value=(49152-49215) ;;
		ADDR:PORT) value=(127.0.0.1:8006) ;;
		*) value=(1) ;;
		esac
		n=$((n + 1))
		"$HSD" "$opt" "${value[@]}" --help >/dev/null 2>&1 || bad+=" $opt"
		# The same setting in a configuration file ("key = value").
		case $opt in
		--config) continue ;;
		--no-seccomp) line='seccomp = no' ;;
		--verbose) line='verbose = yes' ;;
		*) line="${opt#--} = ${value[*]}" ;;
		esac
		printf '# test\n%s\n' "$line" >"$tmp/one.conf"
		"$HSD" --config "$tmp/one.conf" --help >/dev/null 2>&1 || bad_conf+=" '$line'"
	done < <(grep -E '^       --?[a-z]' <<<"$section" | sed -E 's/^ +(-[a-z], )?//')
	if [[ $n -gt 0 && -z $bad ]]; then
		ok "hsd accepts all $n options hsd.8 documents"
	else
		not_ok "hsd accepts all $n options hsd.8 documents" "refused:$bad"
	fi
	if [[ $n -gt 0 && -z $bad_conf ]]; then
		ok "hsd accepts them in a configuration file too"
	else
		not_ok "hsd accepts them in a configuration file too" "refused:$bad_conf"
	fi
	printf 'frobnicate = 1\n' >"$tmp/bad.conf"
	"$HSD" --config "$tmp/bad.conf" --help >/dev/null 2>&1
	rc=$?
	if [[ $rc -eq 2 ]] && grep -qx '       2' "$tmp/hsd.8.txt"; then
		ok "a bad configuration file: exit status 2, as documented"
	else
		not_ok "a bad configuration file: exit status 2, as documented" "exit status $rc"
	fi
	missing=
	for word in /etc/hsd/hsd.conf /var/lib/hsd /run/hsd spec.json status.json console.log \
		qemu.log audit.log ksm.json hsd.lock SIGTERM SIGHUP; do
		grep -q -- "$word" "$tmp/hsd.8.txt" || missing+=" $word"
	done
	if [[ -z $missing ]]; then
		ok "hsd.8 names its files and signals"
	else
		not_ok "hsd.8 names its files and signals" "missing:$missing"
	fi
fi

if [[ -s $tmp/hsctl.1.txt ]]; then
	txt=$tmp/hsctl.1.txt
	# Every option of `hsctl --help` is an entry of the page.
	missing=
	for opt in $("$HSCTL" --help | help_options) --help --version; do
		is_heading "$txt" "$opt" || missing+=" $opt"
	done
	if [[ -z $missing ]]; then
		ok "hsctl.1 documents every option of hsctl --help"
	else
		not_ok "hsctl.1 documents every option of hsctl --help" "missing:$missing"
	fi

	# Every command of `hsctl --help` ("  start NAME", "  kill|reboot|...",
	# "  template import NAME FILE", "  snapshot rollback|delete VM SNAP")
	# is an entry under COMMANDS.
	cmds=$("$HSCTL" --help | sed -n '/^Commands:/,/^$/p' | grep -E '^  [a-z]' |
		awk '{
			if ($0 ~ /^  [a-z]+ [a-z][a-z|-]*( |$)/) { # a subcommand
				n = split($2, s, "|")
				for (i = 1; i <= n; i++) print $1 "_" s[i]
			} else {
				n = split($1, s, "|")
				for (i = 1; i <= n; i++) print s[i]
			}
		}')
	commands_section=$(sed -n '/^COMMANDS$/,/^[A-Z]/p' "$txt")
	missing='' n=0
	for c in $cmds; do
		n=$((n + 1))
		grep -qE "^       ${c/_/ }( |\$)" <<<"$commands_section" || missing+=" ${c/_/ }"
	done
	if [[ $n -ge 10 && -z $missing ]]; then
		ok "hsctl.1 documents all $n commands of hsctl --help"
	else
		not_ok "hsctl.1 documents all $n commands of hsctl --help" "missing:$missing"
	fi

	# Each option documented under a command is accepted by hsctl for that
	# command: with a socket where no hsd listens, a command line hsctl
	# accepts ends with exit status 3 (cannot reach hsd), a usage error
	# with 2. The command line is the entry's heading up to its first
	# option ("template import NAME FILE", an option outside brackets kept
	# as "nic add VM --network NET"), FILE a readable file, DEVICE and ADDR
	# a PCI address, N a number, and other arguments a name.
	echo '{"name": "x", "kernel": "/etc/hostname"}' >"$tmp/spec.json"
	pairs=$(awk '
		/^COMMANDS$/ { in_c = 1; next }
		/^[A-Z]/ { in_c = 0 }
		in_c && /^       [a-z]/ {
			cmd = $1
			for (i = 2; i <= NF && $i !~ /^\[/; i++)
				cmd = cmd " " ($i ~ /^[a-z]/ || $i ~ /^--/ ? $i : $i == "FILE" ? "/etc/hostname" : \
					$i == "DEVICE" || $i == "ADDR" ? "0000:01:00.0" : $i == "N" ? "1" : "x1")
			gsub(/ /, ",", cmd)
		}
		# An option entry: its heading, then its description indented more.
		in_c && pending != "" { if ($0 ~ /^               [^ ]/) print pending; pending = "" }
		in_c && /^           --[a-z]/ { pending = cmd " " $1 " " $2 }' "$txt")
	bad='' n=0
	while read -r cmd opt arg; do
		[[ $cmd ]] || continue
		# A value when the page shows one ("--timeout S"), of a fitting kind.
		case $opt in
		--accel) value=(tcg) ;;
		--nic) value=(user) ;;
		--mode)
			case $cmd in
			network*) value=(vepa) ;;
			*) value=(auto) ;;
			esac
			;;
		--link) value=(down) ;;
		--mac) value=(52:54:00:12:34:56) ;;
		--model) value=(e1000) ;;
		--format) value=(qcow2) ;;
		--max-cpu | --boost-max-cpu | --pressure-available) value=(0.5) ;;
		--kernel | --initrd | --cloud-init | --network-config | --ssh-key) value=(/etc/hostname) ;;
		--disk)
			case $cmd in
			create*) value=(/etc/hostname) ;;
			set*) value=(1 --no-limits) ;; # alone it sets nothing
			*) value=(1) ;;
			esac
			;;
		--from) value=("$tmp/spec.json") ;;
		--wait-for | --vm | --machine | --cpu-model | --append | --template | --hostname) value=(x) ;;
		--disk-size) value=(20G) ;;
		--balloon) value=(512M) ;;
		--bps-*-max) value=(20M "${opt%-max}" 10M) ;; # a burst needs its rate
		--bps-*) value=(10M) ;;
		--iops-*-max) value=(400 "${opt%-max}" 200) ;;
		--io-group) value=(g1) ;;
		--storage) value=(copy) ;;
		--hostdev) value=(0000:01:00.0) ;;
		--display)
			case $cmd in
			create*) value=(virtio) ;;
			*) value=(off) ;;
			esac
			;;
		--spice-listen) value=(127.0.0.1) ;;
		--firmware) value=(uefi) ;;
		--ttl) value=(60) ;;
		--address) value=(127.0.0.1) ;;
		*) value=(1) ;;
		esac
		[[ $arg ]] || value=()
		IFS=, read -ra args <<<"$cmd"
		# migrate: every option but these needs --to DEST
		case $cmd:$opt in
		migrate*:--to | migrate*:--cancel | migrate*:--confirm | migrate*:--abort) ;;
		migrate*) args+=(--to "$tmp/no-hsd.sock") ;;
		# network create: one kind, and what --vlan-filtering and --mode need
		network*:--vlan-filtering) args+=(--create) ;;
		network*:--mode) args+=(--macvtap eth0) ;;
		network*:--create | network*:--bridge | network*:--macvtap | network*:--sriov) ;;
		esac
		args+=("$opt" "${value[@]}")
		n=$((n + 1))
		"$HSCTL" --socket "$tmp/no-hsd.sock" "${args[@]}" </dev/null >/dev/null 2>&1
		rc=$?
		[[ $rc -eq 3 ]] || bad+=" '${args[*]}' (exit $rc)"
	done <<<"$pairs"
	if [[ $n -ge 20 && -z $bad ]]; then
		ok "hsctl accepts all $n command options hsctl.1 documents"
	else
		not_ok "hsctl accepts all $n command options hsctl.1 documents" "refused:$bad"
	fi

	missing=
	for word in HSD_SOCKET XDG_RUNTIME_DIR; do
		grep -q -- "$word" "$txt" || missing+=" $word"
	done
	for code in 0 1 2 3; do
		sed -n '/^EXIT STATUS$/,/^[A-Z]/p' "$txt" | grep -qx "       $code" || missing+=" exit-$code"
	done
	if [[ -z $missing ]]; then
		ok "hsctl.1 documents its exit codes and environment"
	else
		not_ok "hsctl.1 documents its exit codes and environment" "missing:$missing"
	fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
