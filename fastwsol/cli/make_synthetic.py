"""``fastwsol make-synthetic``: write the synthetic WSOL dataset."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import count, fraction, non_negative_int

# fastwsol.data.synthetic.TASKS, copied so that `--help` does not import OpenCV (a test keeps them equal)
TASK_CHOICES = ("parts", "bodies", "objects")
# The defaults: the WSOL set `fastwsol reproduce` fine-tunes on (fastwsol.reproduce.plan.WSOL_DATASET),
# copied so that `--help` does not import torch (a test keeps them equal)
WSOL_SET = {"classes": 5, "train_per_class": 160, "val_per_class": 40, "test_per_class": 100, "body_groups": 2}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-synthetic",
        help="write the synthetic WSOL dataset (JPEGs + wsolevaluation metadata)",
        description="Write the synthetic WSOL dataset; the defaults make the set `fastwsol reproduce` "
        "fine-tunes on (configs/synthetic.yaml reads it from data/synthetic: make-synthetic data/synthetic).",
    )
    parser.add_argument("out", help="output folder: OUT/data/SYNTHETIC/<image_id>, OUT/metadata/SYNTHETIC/<split>/")
    parser.add_argument(
        "--classes",
        type=count,
        default=WSOL_SET["classes"],
        help="number of classes (parts task: at most 40; bodies: 21; objects: 210)",
    )
    parser.add_argument(
        "--train-per-class", type=count, default=WSOL_SET["train_per_class"], help="train images per class"
    )
    parser.add_argument(
        "--test-per-class",
        type=count,
        default=None,
        help=f"test images per class (default: {WSOL_SET['test_per_class']})",
    )
    parser.add_argument(
        "--val-per-class",
        type=count,
        default=None,
        help=f"val images per class (default: --test-per-class when given, else {WSOL_SET['val_per_class']})",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="generation seed (each image has its own RNG from it)"
    )
    parser.add_argument(
        "--task",
        default="parts",
        choices=TASK_CHOICES,
        help="parts: the WSOL set (class = the small part); bodies: its pretraining stand-in "
        "(class = the body's pattern and colours); objects: a pretraining stand-in needing both "
        "(class = body class × one of 10 parts outside the WSOL set's default classes)",
    )
    parser.add_argument(
        "--body-cue",
        type=fraction,
        default=0.0,
        help="parts task: probability that a body wears its class's tint (a weak class cue); 0 = none",
    )
    parser.add_argument(
        "--body-groups",
        type=non_negative_int,
        default=None,
        help="parts task: bodies wear their class group's tint (group = class mod N), so the body "
        "tells the group and only the part the class; 0 = one body colour for all "
        f"(default: {WSOL_SET['body_groups']} for the parts task without --body-cue, at most --classes; else 0)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synthetic set of other parameters in OUT (only its files); "
        "without it such a folder is refused, and so is any non-empty folder without synthetic.json",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.data import make_synthetic_dataset

    paths = make_synthetic_dataset(
        args.out,
        classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=WSOL_SET["test_per_class"] if args.test_per_class is None else args.test_per_class,
        seed=args.seed,
        val_per_class=val_per_class(args),
        task=args.task,
        body_cue=args.body_cue,
        body_groups=body_groups(args),
        overwrite=args.overwrite,
    )
    done = "reused the identical set already in" if paths.reused else "wrote"
    print(
        f"{done} {paths.root}: dataset={paths.dataset} data_root={paths.data_root} metadata_root={paths.metadata_root}"
    )
    return 0


def val_per_class(args: argparse.Namespace) -> int | None:
    """--val-per-class; by default --test-per-class when that is given (None: the generator's
    rule, the same), else the WSOL set's."""
    if args.val_per_class is not None or args.test_per_class is not None:
        return args.val_per_class
    return WSOL_SET["val_per_class"]


def body_groups(args: argparse.Namespace) -> int:
    """--body-groups; by default the WSOL set's groups where they apply (the parts task, no
    --body-cue), at most one group per class."""
    if args.body_groups is not None:
        return args.body_groups
    if args.task != "parts" or args.body_cue > 0:
        return 0
    return min(WSOL_SET["body_groups"], args.classes)
