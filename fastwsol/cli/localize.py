"""``fastwsol localize``: top-5 classes, box and overlay for images of any size."""

from __future__ import annotations

import argparse
import sys

from fastwsol.cli.common import add_device_option, fraction
from fastwsol.method import MAP_KINDS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("localize", help="top-5 classes, box and overlay for images of any size")
    parser.add_argument("checkpoint", help="a fastwsol train checkpoint (RUN/best.pt holds the validated threshold)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files of any size (JPEG, PNG, ...)")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="write <image>_<map>.png overlays here (images from several folders keep their folders)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace overlays already in --out (refused otherwise)"
    )
    parser.add_argument("--map", default="cam", choices=MAP_KINDS, help="localisation map: cam, norm (F̂) or sim (S)")
    parser.add_argument(
        "--threshold",
        type=fraction,
        help="score-map threshold in [0, 1] (default: the one validated with the checkpoint)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    add_device_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fastwsol.checkpoint import load_trained
    from fastwsol.localize import localize_images

    trained = load_trained(args.checkpoint, device=args.device)
    results = localize_images(
        trained, args.images, map_kind=args.map, threshold=args.threshold, out_dir=args.out, overwrite=args.overwrite
    )
    from fastwsol.report import BOX_FORMAT, format_localization

    threshold = "validated with the checkpoint" if args.threshold is None else "from --threshold"
    named = (
        "class names from the run's metadata"
        if trained.class_names
        else "classes are label numbers (the run's metadata names none)"
    )
    print(
        f"{BOX_FORMAT}; map {args.map} thresholded at {results[0]['threshold'] if results else '-'} ({threshold}); "
        f"scores are softmax probabilities; {named}"
    )
    failed = 0
    for result in results:
        if "error" in result:
            failed += 1
            print(f"fastwsol localize: error: {result['error']}", file=sys.stderr)
            continue
        print(format_localization(result, trained.class_names))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0
