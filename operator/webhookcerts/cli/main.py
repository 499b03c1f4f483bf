"""Entry point of the ``webhookcerts`` command and the ``kubectl-webhookcerts`` plugin.

Each sub-command lives in a module of its own that adds its parser; this module only dispatches and
turns the errors users can act on into one line and a non-zero exit, never a traceback. ``complete``
is the entry point of ``kubectl_complete-webhookcerts``, which kubectl runs to complete the plugin's
arguments; ``webhookcerts __complete`` answers the same for the plain command.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from collections.abc import Sequence

from webhookcerts.cli import certs, common, completion, devcluster, run, shells
from webhookcerts.cli import providersim as providersim_cli
from webhookcerts.cli import receiver as receiver_cli
from webhookcerts.cli import trustsync as trustsync_cli
from webhookcerts.devcluster import cluster
from webhookcerts.kube import cli_support
from webhookcerts.kube import client as kube_client

# cobra's hidden verb for completion, kept out of the parser so that it shows in no usage or help.
COMPLETE = "__complete"


def build_parser() -> argparse.ArgumentParser:
    # Invoked by kubectl as a plugin, usage and errors should read the way the user typed the command.
    prog = "kubectl webhookcerts" if pathlib.Path(sys.argv[0]).name == "kubectl-webhookcerts" else "webhookcerts"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    common.add_global_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    devcluster.add_parser(subparsers)
    run.add_parser(subparsers)
    receiver_cli.add_parser(subparsers)
    providersim_cli.add_parser(subparsers)
    trustsync_cli.add_parser(subparsers)
    certs.add_parser(subparsers)
    shells.add_parser(subparsers)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    return common.resolve(parser.parse_args(argv), parser)


def complete(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-webhookcerts WORDS...`` (kubectl's plugin completion) and ``webhookcerts __complete``."""
    # Whatever a library logs would land in the middle of the user's command line.
    logging.disable(logging.CRITICAL)
    words = sys.argv[1:] if argv is None else list(argv)
    for line in completion.complete(build_parser(), words, completion.cluster_lookup):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == [COMPLETE]:
        return complete(words[1:])
    args = parse_args(words)
    try:
        code: int = args.func(args)
    except (cluster.DevClusterError, kube_client.ConfigError, cli_support.CommandError) as exc:
        print(f"webhookcerts: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("webhookcerts: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
