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


def _train(args: argparse.Namespace) -> int:
    from fastwsol.config import load_config
    from fastwsol.train import NonFiniteLossError, Trainer

    overrides = list(args.set)
    if args.no_compile:  # the reference step: eager model and the reference ops
        overrides += ["train.compile=false", "train.backend=reference"]
    if args.out_dir:
        overrides.append(f"train.out_dir={args.out_dir}")
    config = load_config(args.config, overrides)
    try:
        metrics = Trainer(config, resume=args.resume).fit()
    except NonFiniteLossError as exc:
        print(f"fastwsol train: stopped: {exc}", file=sys.stderr)
        return 3
    from fastwsol.report import format_metrics

    print(format_metrics(metrics, title=f"test metrics ({config.train.out_dir})"))
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

    train = sub.add_parser("train", help="train (and validate, test) from a YAML config; torchrun-ready")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    train.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    train.add_argument("--no-compile", action="store_true", help="the eager reference step (train.compile=false, train.backend=reference)")
    train.add_argument("--out-dir", help="shorthand for --set train.out_dir=...")
    train.set_defaults(func=_train)
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
