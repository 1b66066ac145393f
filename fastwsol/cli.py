"""The ``fastwsol`` command line. Each sub-command is one small function; heavy imports stay
inside them so ``fastwsol --help`` is instant."""

from __future__ import annotations

import argparse
import sys

from fastwsol import __version__


def _demo(args: argparse.Namespace) -> int:
    from fastwsol.demo import run_demo

    run_demo(seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastwsol",
        description="Bridging the Gap between Classification and Localization for WSOL (Kim et al., CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"fastwsol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="smoke demo of the reference method on random data (no downloads)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"fastwsol {args.command}: error: {exc}", file=sys.stderr)
        return 2
