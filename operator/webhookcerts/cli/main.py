"""Entry point of the ``webhookcerts`` command and the ``kubectl-webhookcerts`` plugin.

Each sub-command lives in a module of its own that adds its parser; this module only dispatches and
turns the errors users can act on into one line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

from webhookcerts.cli import certs, common, devcluster, run
from webhookcerts.cli import providersim as providersim_cli
from webhookcerts.cli import receiver as receiver_cli
from webhookcerts.cli import trustsync as trustsync_cli
from webhookcerts.devcluster import cluster
from webhookcerts.kube import cli_support
from webhookcerts.kube import client as kube_client


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
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    return common.resolve(parser.parse_args(argv), parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
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
