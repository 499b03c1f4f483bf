"""Shell completion: kubectl's plugin protocol, answered from the argparse parser itself.

kubectl (1.26 and later) completes ``kubectl webhookcerts ...`` by running ``kubectl_complete-webhookcerts``
from PATH with the words typed after the plugin name, the last one the word being completed (empty when
a new word is started). It reads back one candidate a line, ``value<TAB>description``, and a last line
``:<directive>``, cobra's ShellCompDirective, which tells the shell whether to fall back to file names.
``webhookcerts __complete WORDS...`` answers the same way for the plain command (cobra's convention),
which the bash script ``webhookcerts completion bash`` calls.

Verbs, flags and the values of flags with choices come from the parser, so a new verb or flag completes
without anything to keep in step. Names (WebhookCertificates, namespaces, contexts) come from ``lookup``:
a failed lookup, such as an unreachable cluster, yields no names and never a message, since whatever
completion writes on stderr lands in the middle of the user's command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Sequence

from webhookcerts.cli import common
from webhookcerts.kube import cli_support

# cobra's ShellCompDirective values.
DEFAULT = 0  # no candidates: the shell completes file names
NO_FILE = 4  # no candidates: the shell offers nothing
DIRECTORIES = 16  # no candidates: the shell completes directory names

# What names ``lookup`` is asked for.
WEBHOOKCERTIFICATES = "webhookcertificates"
NAMESPACES = "namespaces"
CONTEXTS = "contexts"

# lookup(what, cluster options typed so far) -> names; may raise, which completes no names.
Lookup = Callable[[str, dict[str, str]], Iterable[str]]
# A completion that waits is worse than none: one quick try at the API server.
LOOKUP_SECONDS = 2.0


@dataclasses.dataclass
class _Typed:
    """What the words before the cursor say: the innermost verb, and where in its arguments we are."""

    parser: argparse.ArgumentParser
    subcommand: bool = False  # the parser still expects a verb
    pending: argparse.Action | None = None  # an option waiting for its value
    positionals: int = 0  # positional words the verb has been given
    cluster: dict[str, str] = dataclasses.field(default_factory=dict)


def complete(parser: argparse.ArgumentParser, words: Sequence[str], lookup: Lookup) -> list[str]:
    """The lines to print for ``words`` (the last one being completed): candidates, then the directive."""
    *before, current = words or [""]
    typed = _walk(parser, before)
    candidates, directive = _candidates(typed, current, lookup)
    return [*candidates, f":{directive}"]


def _walk(parser: argparse.ArgumentParser, words: Sequence[str]) -> _Typed:
    typed = _Typed(parser, subcommand=_verbs(parser) is not None)
    only_positionals = False
    for word in words:
        if typed.pending is not None:
            _record(typed, typed.pending, word)
            typed.pending = None
        elif word == "--":
            only_positionals = True
        elif word.startswith("-") and len(word) > 1 and not only_positionals:
            action, value = _option(typed.parser, word)
            if action is None or action.nargs == 0:
                continue
            if value is None:
                typed.pending = action
            else:
                _record(typed, action, value)
        elif typed.subcommand:
            verbs = _verbs(typed.parser) or {}
            if word not in verbs:
                # An unknown verb: nothing after it can be known either.
                return _Typed(argparse.ArgumentParser(add_help=False), cluster=typed.cluster)
            typed.parser, typed.positionals = verbs[word], 0
            typed.subcommand = _verbs(typed.parser) is not None
        else:
            typed.positionals += 1
    return typed


def _record(typed: _Typed, action: argparse.Action, value: str) -> None:
    dest = action.dest.removeprefix(common.GLOBAL_PREFIX)
    if dest in common.CLUSTER_OPTIONS:
        typed.cluster[dest] = value  # the later one wins, as when the command runs


def _option(parser: argparse.ArgumentParser, word: str) -> tuple[argparse.Action | None, str | None]:
    """The option ``word`` names and the value it carries itself (``--namespace=x``, ``-nx``), if any."""
    known = parser._option_string_actions
    if word.startswith("--"):
        name, has_value, value = word.partition("=")
        matches = [a for s, a in known.items() if s == name] or [a for s, a in known.items() if s.startswith(name)]
        # argparse takes an unambiguous prefix of a long option; so does completion.
        unique = {id(a): a for a in matches}
        return (next(iter(unique.values())) if len(unique) == 1 else None), (value if has_value else None)
    action = known.get(word[:2])
    attached = word[2:].removeprefix("=")
    return action, (attached if attached and action is not None and action.nargs != 0 else None)


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def _candidates(typed: _Typed, current: str, lookup: Lookup) -> tuple[list[str], int]:
    if typed.pending is not None:
        return _values(typed.pending, current, typed, lookup)
    if current.startswith("--") and "=" in current:
        # Values only, without the flag: the shell completes the part after "=" as its own word.
        action, value = _option(typed.parser, current)
        if action is None or action.nargs == 0:
            return [], NO_FILE
        return _values(action, value or "", typed, lookup)
    if current.startswith("-"):
        return _matching(_flags(typed.parser), current), NO_FILE
    if typed.subcommand:
        return _matching(_verb_help(typed.parser), current), NO_FILE
    positionals = [a for a in typed.parser._actions if not a.option_strings]
    if typed.positionals >= len(positionals):
        return [], NO_FILE
    return _values(positionals[typed.positionals], current, typed, lookup)


def _values(action: argparse.Action, current: str, typed: _Typed, lookup: Lookup) -> tuple[list[str], int]:
    dest = action.dest.removeprefix(common.GLOBAL_PREFIX)
    if action.choices is not None:
        return _matching(((str(c), "") for c in action.choices), current), NO_FILE
    if dest == "namespace":
        return _looked_up(lookup, NAMESPACES, typed, current), NO_FILE
    if dest == "context":
        return _looked_up(lookup, CONTEXTS, typed, current), NO_FILE
    if dest == "name" and "namespace" in {a.dest for a in typed.parser._actions}:
        # The NAME of a verb that works in a namespace is a WebhookCertificate there.
        return _looked_up(lookup, WEBHOOKCERTIFICATES, typed, current), NO_FILE
    if action.metavar == "DIR" or dest == "dir":
        return [], DIRECTORIES
    if dest == "kubeconfig" or action.type is pathlib.Path:
        return [], DEFAULT
    return [], NO_FILE


def _looked_up(lookup: Lookup, what: str, typed: _Typed, current: str) -> list[str]:
    try:
        found = list(lookup(what, dict(typed.cluster)))
    except Exception:
        # Completion must stay silent: a lookup that failed just completes no names.
        return []
    return _matching(((name, "") for name in found), current)


def _flags(parser: argparse.ArgumentParser) -> Iterable[tuple[str, str]]:
    for action in parser._actions:
        if action.help is argparse.SUPPRESS:
            continue
        for spelling in action.option_strings:
            yield spelling, _one_line(action.help)


def _verb_help(parser: argparse.ArgumentParser) -> Iterable[tuple[str, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {a.dest: a.help for a in action._choices_actions}
            for verb in action.choices:
                yield verb, _one_line(described.get(verb))


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _matching(candidates: Iterable[tuple[str, str]], current: str) -> list[str]:
    return [f"{value}\t{text}" if text else value for value, text in candidates if value.startswith(current)]


def cluster_lookup(what: str, cluster: dict[str, str]) -> list[str]:
    """The names to complete, from the cluster and kubeconfig the typed options point at."""
    if what == CONTEXTS:
        return cli_support.contexts(cluster.get("kubeconfig"))
    session = cli_support.connect(
        cluster.get("kubeconfig"), cluster.get("context"), cluster.get("namespace"), retries=0
    )
    if what == NAMESPACES:
        return cli_support.namespaces(session, timeout=LOOKUP_SECONDS)
    return cli_support.names(session, timeout=LOOKUP_SECONDS)
