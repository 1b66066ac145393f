"""``fastwsol train``: train (and validate, test) from a YAML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def file_problems(config) -> list[str]:
    """Files and folders a training run reads that do not exist, each named by its key and by the
    command that makes it."""
    from fastwsol.data.metadata import resolve_metadata_root
    from fastwsol.data.synthetic import DATASET_NAME as SYNTHETIC_NAME

    problems = []
    metadata_root = resolve_metadata_root(config.data.metadata_root)
    for key, root in (("data.metadata_root", str(metadata_root)), ("data.data_root", config.data.data_root)):
        if not (Path(root) / config.data.dataset).is_dir():
            made_by = (
                {
                    SYNTHETIC_NAME: f"; `fastwsol make-synthetic {Path(root).parent}` writes it",
                    "CUB": f"; `fastwsol prepare cub CUB_200_2011_DIR --out {root}` lays it out",
                    "ILSVRC": f"; `fastwsol prepare imagenet --train DIR --val DIR --out {root}` lays it out",
                }.get(config.data.dataset, "")
                if key == "data.data_root" or config.data.dataset == SYNTHETIC_NAME
                else ""
            )
            problems.append(
                f"{key}: folder {str(Path(root) / config.data.dataset)!r} (data.dataset "
                f"{config.data.dataset!r} under {root!r}) does not exist{made_by}"
            )
    pretrained = config.model.pretrained
    if pretrained not in (None, "imagenet") and not Path(pretrained).is_file():
        problems.append(f"model.pretrained: weight file {pretrained!r} does not exist (or use imagenet)")
    if config.model.init_from is not None and not Path(config.model.init_from).is_file():
        problems.append(f"model.init_from: checkpoint {config.model.init_from!r} does not exist; {init_from_hint()}")
    return problems


def init_from_hint() -> str:
    """What makes the backbone checkpoint ``model.init_from`` names: a reproduction's, when
    there is one already, else the pretraining run."""
    from fastwsol.reproduce import DEFAULT_OUT, PRETRAIN_KEY

    made = DEFAULT_OUT / PRETRAIN_KEY / "last.pt"
    if made.is_file():
        return f"`fastwsol reproduce` already trained one: model.init_from={made}"
    return (
        "train that run first (for configs/synthetic.yaml: fastwsol train --config configs/synthetic_pretrain.yaml, "
        f"or `fastwsol reproduce`, which writes {made})"
    )


def run(args: argparse.Namespace) -> int:
    from fastwsol.config import load_config
    from fastwsol.train import NonFiniteLossError, Trainer

    overrides = list(args.set)
    if args.no_compile:  # the reference step: eager model and the reference ops
        overrides += ["train.compile=false", "train.backend=reference"]
    if args.out_dir:
        overrides.append(f"train.out_dir={args.out_dir}")
    config = load_config(args.config, overrides, checks=[file_problems])
    try:
        metrics = Trainer(config, resume=args.resume, overwrite=args.overwrite).fit()
    except NonFiniteLossError as exc:
        print(f"fastwsol train: stopped: {exc}", file=sys.stderr)
        return 3
    from fastwsol.report import format_metrics

    print(format_metrics(metrics, title=f"test metrics ({config.train.out_dir})"))
    return 0
