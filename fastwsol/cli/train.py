"""``fastwsol train``: train (and validate, test) from a YAML config."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fastwsol.cli.common import add_set_option, device, non_negative_int

EPILOG = """\
A short run of any config: fastwsol train --config configs/cub_vgg16.yaml --set optim.epochs=8.
Shortening the config's run scales its schedule to the same fractions of the run
(optim.warm_epochs, optim.lr_decay_epochs, train.select_from_epoch; a note says how); a key you
give with --set yourself is kept as given. The run folder (OUT_DIR) gets last.pt, best.pt,
test_metrics.json, metrics.jsonl, metrics.csv (a row per epoch) and config.yaml (the run's
settings, usable as --config); TensorBoard scalars and CAM images in OUT_DIR/tensorboard when the
tensorboard package is installed (pip install -e ".[tensorboard]"; --set train.tensorboard=false:
never). `fastwsol runs` lists runs and shows a checkpoint."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train (and validate, test) from a YAML config; torchrun-ready",
        description="Train (and validate, test) from a YAML config; torchrun-ready.",
        epilog=EPILOG,
    )
    parser.add_argument("--config", required=True, help="YAML config (see configs/; every key in fastwsol/config.py)")
    add_set_option(
        parser, help="override a config value (repeatable), e.g. --set optim.epochs=8 (a short run: see below)"
    )
    parser.add_argument("--seed", type=non_negative_int, help="shorthand for --set train.seed=N")
    parser.add_argument(
        "--device",
        type=device,
        help="shorthand for --set train.device=...: cpu, cuda or cuda:N (default: the config's train.device; "
        "auto = CUDA when there is one)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in OUT_DIR (only the run's files, listed below); "
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
                    SYNTHETIC_NAME: f"; {make_synthetic_hint(config)}",
                    "CUB": f"; `fastwsol prepare cub CUB_200_2011_DIR --out {root}` lays it out",
                    "ILSVRC": f"; `fastwsol prepare imagenet --train DIR --val DIR --out {root}` lays it out",
                    "OpenImages": f"; {OPENIMAGES_UNPACK.format(root=root)}",
                }.get(config.data.dataset, "")
                if key == "data.data_root" or config.data.dataset == SYNTHETIC_NAME
                else ""
            )
            problems.append(
                f"{key}: folder {str(Path(root) / config.data.dataset)!r} (data.dataset "
                f"{config.data.dataset!r} under {root!r}) does not exist{made_by}"
            )
    if not problems:
        problems += mask_file_problems(config)
    pretrained = config.model.pretrained
    if pretrained not in (None, "imagenet") and not Path(pretrained).is_file():
        problems.append(f"model.pretrained: weight file {pretrained!r} does not exist (or use imagenet)")
    if config.model.init_from is not None and not Path(config.model.init_from).is_file():
        problems.append(f"model.init_from: checkpoint {config.model.init_from!r} does not exist; {init_from_hint()}")
    return problems


OPENIMAGES_UNPACK = (
    "`fastwsol prepare openimages OPENIMAGES_DIR --out {root}` lays out the images and GT masks "
    "(OPENIMAGES_DIR: wsolevaluation's OpenImages_images.zip and OpenImages_annotations.zip unpacked into one folder)"
)


def mask_file_problems(config) -> list[str]:
    """The GT mask files of the val and test splits (when their metadata names masks) that do
    not exist under data.data_root, one line per split: how many, the first, what makes them."""
    from fastwsol.data.images import missing_mask_files
    from fastwsol.data.metadata import read_split_metadata

    d, problems = config.data, []
    folder = Path(d.data_root) / d.dataset
    for split in ("val", "test"):
        try:
            masks = read_split_metadata(d.metadata_root, d.dataset, split).masks
        except (OSError, ValueError):  # the loader names a metadata problem
            continue
        missing, total = missing_mask_files(masks or (), folder)
        if missing:
            made_by = OPENIMAGES_UNPACK.format(root=d.data_root) if d.dataset == "OpenImages" else (
                f"GT masks live beside the images, at {folder}/<mask_path>"
            )
            problems.append(
                f"data.data_root: {len(missing)} of the {total} GT mask files of {d.dataset}/{split} are "
                f"missing, e.g. {missing[0]}; {made_by}"
            )
    return problems


def make_synthetic_hint(config) -> str:
    """The command that writes the synthetic set where the config reads it: ``make-synthetic
    OUT`` writes OUT/data and OUT/metadata, OUT taken from data.metadata_root; a data_root
    elsewhere is pointed there with a ``--set``."""
    out = Path(config.data.metadata_root).parent
    hint = f"`fastwsol make-synthetic {out}` writes it"
    moved = [
        f"--set {key}={out / folder}"
        for key, folder in (("data.data_root", "data"), ("data.metadata_root", "metadata"))
        if Path(getattr(config.data, key.split(".")[1])) != out / folder
    ]
    return hint + (f", then train with {' '.join(moved)}" if moved else "")


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
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
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

    try:
        print(format_metrics(metrics, title=f"test metrics ({config.train.out_dir})"), flush=True)
    except BrokenPipeError:  # `| head`: the run and its files are complete; what is left to print goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
