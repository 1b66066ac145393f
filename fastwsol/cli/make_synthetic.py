"""``fastwsol make-synthetic``: write the synthetic WSOL dataset."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import count, fraction, non_negative_int

# fastwsol.data.synthetic.TASKS, copied so that `--help` does not import OpenCV (a test keeps them equal)
TASK_CHOICES = ("parts", "bodies", "objects")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-synthetic", help="write the synthetic WSOL dataset (JPEGs + wsolevaluation metadata)"
    )
    parser.add_argument("out", help="output folder: OUT/data/SYNTHETIC/<image_id>, OUT/metadata/SYNTHETIC/<split>/")
    parser.add_argument(
        "--classes",
        type=count,
        default=10,
        help="number of classes (parts task: at most 40; bodies: 21; objects: 210)",
    )
    parser.add_argument("--train-per-class", type=count, default=80, help="train images per class")
    parser.add_argument("--test-per-class", type=count, default=20, help="test images per class")
    parser.add_argument(
        "--val-per-class", type=count, default=None, help="val images per class (default: --test-per-class)"
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
        default=0,
        help="parts task: bodies wear their class group's tint (group = class mod N), so the body "
        "tells the group and only the part the class; 0 = one body colour for all",
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
        test_per_class=args.test_per_class,
        seed=args.seed,
        val_per_class=args.val_per_class,
        task=args.task,
        body_cue=args.body_cue,
        body_groups=args.body_groups,
        overwrite=args.overwrite,
    )
    done = "reused the identical set already in" if paths.reused else "wrote"
    print(
        f"{done} {paths.root}: dataset={paths.dataset} data_root={paths.data_root} metadata_root={paths.metadata_root}"
    )
    return 0
