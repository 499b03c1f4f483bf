"""Arguments every cluster-facing command shares, spelled and placed as kubectl takes them.

kubectl, and cobra plugins such as cmctl, take ``-n/--namespace``, ``--context`` and ``--kubeconfig``
before the verb as well as after it, so ``kubectl webhookcerts -n NS export NAME`` must work. The
top-level parser takes them into ``global_*`` attributes and the verbs into their own; ``resolve``
merges the two after parsing. Separate attributes are what makes this robust: argparse copies every
attribute a verb's parser sets over what the top-level parser set, so with shared names a verb's
default would silently drop a namespace given before the verb. When an option is given on both
sides, the later one (after the verb) wins, as in kubectl; a repeatable ``-n`` (``run``) keeps both.
"""

from __future__ import annotations

import argparse

# The attribute each option lands in on either side of the verb, and its spellings.
CLUSTER_OPTIONS: dict[str, tuple[str, ...]] = {
    "kubeconfig": ("--kubeconfig",),
    "context": ("--context",),
    "namespace": ("-n", "--namespace"),
}
GLOBAL_PREFIX = "global_"
KUBECONFIG_HELP = "path to a kubeconfig (default: $KUBECONFIG, ~/.kube/config, then in-cluster)"
CONTEXT_HELP = "the kubeconfig context to use"


def add_global_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster options before the verb: ``webhookcerts -n NS VERB ...``."""
    group = parser.add_argument_group("cluster options (also accepted after the verb, which wins)")
    group.add_argument("--kubeconfig", dest=GLOBAL_PREFIX + "kubeconfig", metavar="KUBECONFIG", help=KUBECONFIG_HELP)
    group.add_argument("--context", dest=GLOBAL_PREFIX + "context", metavar="CONTEXT", help=CONTEXT_HELP)
    # Appended, so that a repeatable -n (run) keeps every one; a single-namespace verb takes the last.
    group.add_argument(
        "-n",
        "--namespace",
        dest=GLOBAL_PREFIX + "namespace",
        action="append",
        metavar="NAMESPACE",
        help="the namespace",
    )


def add_cluster_arguments(
    parser: argparse.ArgumentParser,
    *,
    namespace: bool = True,
    namespace_help: str = "the namespace",
    repeat_namespace: bool = False,
) -> None:
    parser.add_argument("--kubeconfig", default=None, help=KUBECONFIG_HELP)
    parser.add_argument("--context", default=None, help=CONTEXT_HELP)
    if not namespace:
        return
    if repeat_namespace:
        # A list default marks the option repeatable for resolve(); argparse copies it before appending.
        parser.add_argument("-n", "--namespace", action="append", default=[], help=namespace_help)
    else:
        parser.add_argument("-n", "--namespace", default=None, help=namespace_help)


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fold the options given before the verb into the verb's own; refuse them where the verb takes none."""
    for dest, spellings in CLUSTER_OPTIONS.items():
        before = vars(args).pop(GLOBAL_PREFIX + dest, None)
        if before is None:
            continue
        if dest not in vars(args):
            parser.error(f"{'/'.join(spellings)} does not apply to {args.command}")
        after = getattr(args, dest)
        if isinstance(after, list):
            setattr(args, dest, [*before, *after])
        elif after is None:
            setattr(args, dest, before[-1] if isinstance(before, list) else before)
    return args
