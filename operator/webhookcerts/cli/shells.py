"""``webhookcerts completion bash``: the script that hooks bash up to ``webhookcerts __complete``.

Only for the plain ``webhookcerts`` command: ``kubectl webhookcerts`` completes through kubectl, which
runs ``kubectl_complete-webhookcerts`` from PATH and needs no script. The script hands the words before
the cursor to ``__complete`` (cobra's convention, the same answer kubectl reads) and reads the
directive so that file names are offered only where a file is wanted.
"""

from __future__ import annotations

import argparse

# Split on blanks rather than bash's COMP_WORDS, which breaks "--namespace=x" apart at the "=".
BASH = r"""# bash completion for webhookcerts: source <(webhookcerts completion bash)
_webhookcerts_complete() {
    local line=${COMP_LINE:0:COMP_POINT} out directive=0 entry
    local -a words lines
    read -r -a words <<< "$line"
    [[ $line =~ [[:space:]]$ ]] && words+=("")
    out=$("${words[0]}" __complete "${words[@]:1}" 2>/dev/null) || return 0
    mapfile -t lines <<< "$out"
    if [[ ${lines[-1]} == :* ]]; then
        directive=${lines[-1]#:}
        unset 'lines[-1]'
    fi
    COMPREPLY=()
    for entry in "${lines[@]}"; do
        [[ -n $entry ]] && COMPREPLY+=("${entry%%$'\t'*}")
    done
    if (( ${#COMPREPLY[@]} == 0 )); then
        if (( directive & 16 )); then
            compopt -o dirnames
        elif (( !(directive & 4) )); then
            compopt -o default
        fi
    fi
}
complete -F _webhookcerts_complete webhookcerts
"""
SCRIPTS = {"bash": BASH}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "completion",
        help="print the shell completion script for webhookcerts (kubectl webhookcerts needs none)",
        description="Load it with: source <(webhookcerts completion bash). kubectl webhookcerts completes "
        "through kubectl (1.26 and later) as soon as kubectl_complete-webhookcerts is on PATH.",
    )
    parser.add_argument("shell", choices=sorted(SCRIPTS))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(SCRIPTS[args.shell], end="")
    return 0
