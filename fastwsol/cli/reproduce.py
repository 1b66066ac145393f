"""``fastwsol reproduce``: the embedded default experiment (fastwsol.reproduce)."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import add_set_option, count


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="the embedded default: synthetic data, a pretrained backbone, vanilla CAM vs the method fine-tuned "
        "from it, Table-7-style results and a map figure",
    )
    parser.add_argument("--out", default="runs/reproduce", help="runs, results.{json,md} and the figure go here")
    parser.add_argument(
        "--seeds",
        type=count,
        default=1,
        metavar="N",
        help="fine-tune every variant with training seeds 0..N-1 (one shared backbone and dataset) and "
        "report each seed and the mean ± sd (default: 1)",
    )
    parser.add_argument("--ablation", action="store_true", help="also train the ablation rows (L_drop, L_sim, ...)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="retrain every run, replacing what OUT holds (without it a run is reused or resumed "
        "only when its recorded settings match, and refused otherwise)",
    )
    add_set_option(parser, help="override configs/synthetic.yaml for every fine-tuning run")
    add_set_option(parser, help="override configs/synthetic_pretrain.yaml for the pretraining", flag="--pretrain-set")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.reproduce import reproduce

    reproduce(
        args.out,
        seeds=args.seeds,
        ablation=args.ablation,
        fresh=args.fresh,
        overrides=args.set,
        pretrain_overrides=args.pretrain_set,
    )
    return 0
