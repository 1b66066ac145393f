"""``fastwsol localize``: top-5 classes, box and overlay for images of any size."""

from __future__ import annotations

import argparse
import sys

from fastwsol.cli.common import add_device_option, check_output_file, fraction
from fastwsol.method import MAP_KINDS
from fastwsol.report import LOCALIZATION_COLUMNS

DESCRIPTION = """\
Top-5 classes, the predicted box (in the image's own pixels) and an overlay picture per image.
Images of any size and mode: a large one is decoded reduced to what the model needs, transparent
pixels are composited on white, and overlays are drawn at most 1024 px on their longest side.
A file that cannot be read is reported on its own line and the others are still processed; the
exit status is 1 when any failed."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "localize", help="top-5 classes, box and overlay for images of any size", description=DESCRIPTION
    )
    parser.add_argument("checkpoint", help="a fastwsol train checkpoint (RUN/best.pt holds the validated threshold)")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files of any size (JPEG, PNG, ...), folders (their image files, sorted; not subfolders) "
        "or quoted glob patterns ('photos/**/*.jpg')",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="write <image>_<map>.png overlays here (images from several folders keep their folders)",
    )
    parser.add_argument(
        "--boxes-csv",
        metavar="FILE",
        help=f"write one CSV row per image, columns {', '.join(LOCALIZATION_COLUMNS)} (the box x0..y1 in the "
        "original's pixels; error: why a file failed)",
    )
    parser.add_argument("--boxes-json", metavar="FILE", help="write the results, as --json prints them, to FILE")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace overlays already in --out and existing --boxes-csv/--boxes-json files (refused otherwise)",
    )
    parser.add_argument("--map", default="cam", choices=MAP_KINDS, help="localisation map: cam, norm (F̂) or sim (S)")
    parser.add_argument(
        "--threshold",
        type=fraction,
        help="score-map threshold in [0, 1] (default: the one validated at the run's best epoch, "
        "which the checkpoint records)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON, and nothing else, on stdout (the header line goes to stderr)",
    )
    add_device_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fastwsol.checkpoint import load_trained
    from fastwsol.io import write_text_atomic
    from fastwsol.localize import OVERLAY_MAX_SIDE, localization_threshold, localize_images
    from fastwsol.report import (
        format_localization,
        format_localization_header,
        localization_rows,
        threshold_source,
    )
    from fastwsol.tables import csv_text

    if args.boxes_csv and args.boxes_csv == args.boxes_json:
        raise ValueError(f"--boxes-csv and --boxes-json both name {args.boxes_csv}")
    for flag, path in (("--boxes-csv", args.boxes_csv), ("--boxes-json", args.boxes_json)):
        if path:
            check_output_file(path, flag, args.overwrite)
    trained = load_trained(args.checkpoint, device=args.device)
    threshold = localization_threshold(trained, args.threshold)
    source = threshold_source(trained.epoch, trained.threshold_epoch, args.threshold is not None)
    header = format_localization_header(args.map, threshold, source, bool(trained.class_names))
    print(header, file=sys.stderr if args.json else sys.stdout, flush=True)
    results = localize_images(
        trained, args.images, map_kind=args.map, threshold=threshold, out_dir=args.out, overwrite=args.overwrite
    )
    failed = 0
    for result in results:
        if "error" in result:
            failed += 1
            print(f"fastwsol localize: error: {result['error']}", file=sys.stderr)
            continue
        if "notes" in result:
            print(f"fastwsol localize: note: {result['path']}: {'; '.join(result['notes'])}", file=sys.stderr)
        if not args.json:
            print(format_localization(result, trained.class_names))
    if any("picture" in r and max(r["size"]) > OVERLAY_MAX_SIDE for r in results):
        print(
            f"fastwsol localize: note: overlays are drawn at most {OVERLAY_MAX_SIDE} px on their longest side; "
            "boxes stay in the original images' pixels",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(results, indent=2))
    if args.boxes_csv:
        write_text_atomic(args.boxes_csv, csv_text(localization_rows(results), LOCALIZATION_COLUMNS))
    if args.boxes_json:
        write_text_atomic(args.boxes_json, json.dumps(results, indent=2) + "\n")
    if failed:
        print(f"fastwsol localize: {failed} of {len(results)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
