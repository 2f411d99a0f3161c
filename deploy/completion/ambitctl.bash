# SPDX-License-Identifier: Apache-2.0
# bash completion for ambitctl: commands, global and per-command options, -o values.
# Install: copy to /usr/share/bash-completion/completions/ambitctl (or source it).
# shellcheck shell=bash

_ambitctl() {
	local cur prev words cword
	if declare -F _init_completion >/dev/null 2>&1; then
		_init_completion -n : || return
	else
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD-1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	fi

	local commands="workloads services certificates connections bpf spans config policies log version help"
	local global_opts="--admin --output -o --width --help -h --version"
	local common_opts="--admin --output -o --width --help -h"

	# Values of options.
	case $prev in
	-o|--output)
		COMPREPLY=($(compgen -W "table wide json" -- "$cur"))
		return ;;
	--admin)
		COMPREPLY=($(compgen -W "127.0.0.1:15000" -- "$cur"))
		return ;;
	--width|--interval|--limit|-n|--trace|-t|--from|--to)
		COMPREPLY=()
		return ;;
	esac

	# The command: the first word that is not an option or an option's value.
	local i cmd="" w
	for ((i = 1; i < cword; i++)); do
		w=${words[i]}
		case $w in
		-o|--output|--admin|--width) ((i++)) ;;
		-*) ;;
		*) cmd=$w; break ;;
		esac
	done

	if [ -z "$cmd" ]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi
		return
	fi

	local opts=$common_opts
	case $cmd in
	connections) opts="$opts --watch -w --interval" ;;
	spans) opts="$opts --trace -t --limit -n" ;;
	version) opts="$opts --client" ;;
	policies)
		if [[ $cur != -* ]] && [ "$cword" -eq $((i + 1)) ]; then
			COMPREPLY=($(compgen -W "check" -- "$cur"))
			return
		fi
		opts="$opts --from --to" ;;
	help)
		COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		return ;;
	log)
		if [[ $cur != -* ]]; then
			COMPREPLY=($(compgen -W "error warn info debug trace" -- "$cur"))
			return
		fi ;;
	esac
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _ambitctl ambitctl
