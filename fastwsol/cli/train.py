"""``fastwsol train``: train (and validate, test) from a YAML config."""

from __future__ import annotations

import argparse
import sys

from fastwsol.cli.common import add_set_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train (and validate, test) from a YAML config; torchrun-ready")
    parser.add_argument("--config", required=True, help="YAML config (see configs/; every key in fastwsol/config.py)")
    add_set_option(parser, help="override a config value (repeatable), e.g. --set optim.epochs=8")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in OUT_DIR (its last.pt, best.pt, test_metrics.json, metrics.jsonl); "
        "without it such a folder is refused",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="the eager reference step (train.compile=false, train.backend=reference)",
    )
    parser.add_argument(
        "--out-dir",
        help="where the run goes: shorthand for --set train.out_dir=... (default: the config's train.out_dir)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.config import load_config
    from fastwsol.train import NonFiniteLossError, Trainer

    overrides = list(args.set)
    if args.no_compile:  # the reference step: eager model and the reference ops
        overrides += ["train.compile=false", "train.backend=reference"]
    if args.out_dir:
        overrides.append(f"train.out_dir={args.out_dir}")
    config = load_config(args.config, overrides, check_files=True)
    try:
        metrics = Trainer(config, resume=args.resume, overwrite=args.overwrite).fit()
    except NonFiniteLossError as exc:
        print(f"fastwsol train: stopped: {exc}", file=sys.stderr)
        return 3
    from fastwsol.report import format_metrics

    print(format_metrics(metrics, title=f"test metrics ({config.train.out_dir})"))
    return 0
