"""``fastwsol evaluate``: the protocol's metrics of a checkpoint on a split."""

from __future__ import annotations

import argparse

from fastwsol.cli.common import add_device_option, add_set_option
from fastwsol.method import MAP_KINDS

# fastwsol.evaluate.SCOREMAP_DTYPES, copied so that `--help` does not import torch (a test keeps
# them equal)
SCOREMAP_DTYPES = ("float32", "float64")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="the protocol's metrics of a checkpoint on a split (table + JSON, pictures)"
    )
    parser.add_argument("--checkpoint", required=True, help="a fastwsol train checkpoint (RUN/best.pt or RUN/last.pt)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split to evaluate")
    parser.add_argument(
        "--map", choices=MAP_KINDS, help="localisation map: cam, norm (F̂) or sim (S) (default: the run's eval.map)"
    )
    parser.add_argument("--save-maps", metavar="DIR", help="per-image overlay PNGs and a contact sheet")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where metrics_<checkpoint>_<split>_<map>.json goes, e.g. metrics_best_test_cam.json "
        "(default: the checkpoint's folder)",
    )
    parser.add_argument(
        "--per-image",
        metavar="FILE",
        help="per-image results as FILE.csv or FILE.json: class, predicted class, the largest contour's box "
        "at the GT-known-optimal threshold (224² and original pixels), its IoU, GT-known correct "
        "(IoU >= 0.5), and any_contour_correct (what eval.multi_contour credits)",
    )
    parser.add_argument(
        "--save-scoremaps",
        metavar="DIR",
        help="every image's score map, exactly as scored, in the benchmark's layout: DIR/<image_id>.npy "
        "(224x224, in [0, 1]), for `fastwsol evaluate-maps` or wsolevaluation's evaluation.py; boxes and masks alike",
    )
    parser.add_argument(
        "--scoremap-dtype",
        choices=SCOREMAP_DTYPES,
        default="float32",
        help="dtype of --save-scoremaps (default: float32, the maps' own precision); float64 for wsolevaluation's "
        "evaluation.py on OpenImages (its MaskEvaluator accepts float64 only); the values are the same",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the metrics, per-image file, pictures and score maps already there (refused otherwise)",
    )
    add_device_option(parser)
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="the images (DIR/<dataset>/<image_id>) (default: the run's data.data_root, relative "
        "paths taken from the folder the run was trained in)",
    )
    parser.add_argument(
        "--metadata-root",
        metavar="DIR",
        help="the metadata (DIR/<dataset>/<split>/, or builtin) (default: the run's data.metadata_root, likewise)",
    )
    add_set_option(parser, help="override the run's config, e.g. --set data.dataset=CUB or --set eval.batch_size=16")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastwsol.checkpoint import load_trained
    from fastwsol.evaluate import evaluate_checkpoint, locate_data
    from fastwsol.report import format_metrics, metric_explanations

    trained = load_trained(args.checkpoint, device=args.device)
    config, used = locate_data(trained, data_root=args.data_root, metadata_root=args.metadata_root, overrides=args.set)
    print("data: " + "; ".join(used))
    metrics = evaluate_checkpoint(
        trained,
        split=args.split,
        map_kind=args.map,
        save_maps=args.save_maps,
        out_dir=args.out,
        per_image=args.per_image,
        save_scoremaps=args.save_scoremaps,
        scoremap_dtype=args.scoremap_dtype,
        config=config,
        overwrite=args.overwrite,
    )
    print(format_metrics(metrics, title=f"{args.split} split, map={metrics['map']} ({args.checkpoint})"))
    print("\n".join(metric_explanations(metrics)))
    print(f"wrote {metrics['json']}")
    if args.per_image:
        print(f"per-image results: {metrics['per_image']}")
    if args.save_maps:
        print(f"pictures: {metrics['pictures']} PNGs (one per image) and contact_sheet.png in {args.save_maps}")
    if args.save_scoremaps:
        print(f"score maps: {metrics['scoremaps']} {args.scoremap_dtype} .npy files (one per image) in "
              f"{args.save_scoremaps}")
    return 0
