"""``fastwsol evaluate-maps``: the protocol's metrics of any method's score maps stored in the
benchmark's layout (docs/evaluate_maps.md)."""

from __future__ import annotations

import argparse
import sys

from fastwsol.cli.common import fraction

# fastwsol.evaluate_maps.DEFAULT_CAM_CURVE_INTERVAL, copied so that `--help` does not import torch
# (a test keeps them equal)
DEFAULT_CAM_CURVE_INTERVAL = 0.001


def cam_curve_interval(text: str) -> float:
    value = fraction(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must lie in (0, 1)")
    return value


def iou_threshold(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer percentage") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a percentage in [0, 100]")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate-maps",
        help="the protocol's metrics of any method's score maps saved as <root>/<image_id>.npy "
        "(wsolevaluation's layout)",
    )
    parser.add_argument(
        "--scoremap-root", required=True, metavar="DIR",
        help="one 224x224 float map in [0, 1] per image: DIR/<image_id>.npy, e.g. DIR/001.Black_footed_Albatross/"
        "Black_Footed_Albatross_0046_18.jpg.npy",
    )
    parser.add_argument(
        "--dataset", required=True, metavar="NAME",
        help="CUB, ILSVRC or OpenImages (any folder of --metadata-root); boxes or masks as its localization.txt holds",
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split the maps are of")
    parser.add_argument(
        "--metadata-root", default="builtin", metavar="DIR",
        help="the metadata (DIR/<dataset>/<split>/, e.g. a subset of a split), or builtin: the shipped "
        "wsolevaluation metadata",
    )
    parser.add_argument(
        "--mask-root", metavar="DIR",
        help="where a split with mask localization (OpenImages) has its masks: DIR/<dataset>/<mask_path>, as "
        "wsolevaluation's --mask_root (its download puts them with the images: DIR is then the data root)",
    )
    parser.add_argument(
        "--cam-curve-interval", type=cam_curve_interval, metavar="STEP", default=DEFAULT_CAM_CURVE_INTERVAL,
        help="CAM threshold step (default: %(default)s, wsolevaluation's config.py; its evaluation.py "
        "command line defaults to 0.01)",
    )
    parser.add_argument(
        "--iou-thresholds", type=iou_threshold, nargs="+", default=[30, 50, 70], metavar="PERCENT",
        help="IoU thresholds of MaxBoxAccV2 (GT-known Loc needs 50; boxes only)",
    )
    parser.add_argument(
        "--multi-contour", action=argparse.BooleanOptionalAction, default=True,
        help="a box around every contour, the best one counts (MaxBoxAccV2 as the paper); --no-multi-contour: "
        "the largest contour's box only (the single-contour figures are reported either way; boxes only)",
    )
    parser.add_argument(
        "--out", default=".", metavar="DIR",
        help="where evaluate_maps_<dataset>_<split>.json and .md go",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out (refused otherwise)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fastwsol.evaluate_maps import check_outputs, evaluate_scoremaps, markdown_report, write_results

    check_outputs(args.out, args.dataset, args.split, args.overwrite)  # a refusal: exit 2, as every command's

    def warn(line: str) -> None:
        print(f"fastwsol evaluate-maps: warning: {line}", file=sys.stderr, flush=True)

    try:
        result = evaluate_scoremaps(
            args.scoremap_root,
            args.dataset,
            args.split,
            metadata_root=args.metadata_root,
            mask_root=args.mask_root,
            cam_curve_interval=args.cam_curve_interval,
            iou_thresholds=args.iou_thresholds,
            multi_contour=args.multi_contour,
            warn=warn,
        )
    except (ValueError, OSError) as exc:  # the maps, masks or metadata are at fault
        print(f"fastwsol evaluate-maps: error: {exc}", file=sys.stderr)
        return 1
    json_path, md_path = write_results(result, args.out)
    print(json.dumps(result, indent=2) if args.json else markdown_report(result))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr if args.json else sys.stdout)
    return 0
