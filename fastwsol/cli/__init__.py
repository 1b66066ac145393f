"""The ``fastwsol`` command line. Each sub-command is a module of this package that adds its
arguments (``add_parser``) and runs (``run``); heavy imports stay inside ``run`` so
``fastwsol --help`` is instant."""

from __future__ import annotations

import argparse
import sys

from fastwsol import __version__
from fastwsol.cli import (
    bench,
    check_gpu,
    evaluate,
    evaluate_maps,
    localize,
    make_synthetic,
    prepare,
    reproduce,
    runs,
    train,
)
from fastwsol.cli.common import SubcommandParser

# as --help lists them
SUBCOMMANDS = (make_synthetic, train, runs, evaluate, evaluate_maps, localize, reproduce, prepare, bench, check_gpu)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastwsol",
        description="Bridging the Gap between Classification and Localization for WSOL (Kim et al., CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"fastwsol {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser)
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # user errors (and unreadable/unwritable files): no traceback
        print(f"fastwsol {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastwsol {args.command}: interrupted", file=sys.stderr)
        return 130
