"""``fastwsol reproduce``: the embedded default experiment (fastwsol.reproduce)."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import add_set_option, count

# fastwsol.reproduce.DEFAULT_OUT (importing it here would load torch for --help; a test checks both agree)
DEFAULT_OUT = "runs/reproduce"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="the embedded default: synthetic data, a pretrained backbone, vanilla CAM vs the method fine-tuned "
        "from it, Table-7-style results and a map figure",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"runs, results.{{json,md}} and the figure go here (default: {DEFAULT_OUT}); a new OUT copies a "
        f"finished pretraining of the same settings from {DEFAULT_OUT} or a folder beside OUT instead of "
        "retraining it",
    )
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
        help="retrain the fine-tuning runs, replacing them in OUT; the pretrained backbone is kept when its "
        "settings match (without --fresh a run is reused or resumed only when its recorded settings match, "
        "those its objective does not read aside, e.g. loss.* for vanilla CAM, and refused otherwise)",
    )
    parser.add_argument(
        "--fresh-backbone",
        action="store_true",
        help="retrain the pretraining too, and with the new backbone every fine-tuning",
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
        fresh_backbone=args.fresh_backbone,
        overrides=args.set,
        pretrain_overrides=args.pretrain_set,
    )
    return 0
