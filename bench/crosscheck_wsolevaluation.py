"""fastwsol's evaluators against wsolevaluation's own code, on the same files.

The tests prove the fast paths equal fastwsol's transcription of the protocol (BoxEvaluator's
"opencv" backend, MaskEvaluator's "reference" backend). This closes the loop with the benchmark's
code itself, which fastwsol does not ship: give a checkout of clovaai/wsolevaluation (its
``evaluation.py`` needs munch, torch and OpenCV). On a CUB test subset (builtin metadata, score
maps peaking near the GT boxes) and an OpenImages test subset (generated instance and ignore
PNGs at assorted sizes), wsolevaluation's ``evaluate_wsol`` runs in a subprocess and
``fastwsol.evaluate_maps.evaluate_scoremaps`` on the same folders; compared:

- MaxBoxAccV2 (``multi_iou_eval``: BoxAcc at IoU 30/50/70 averaged) and GT-known Loc (IoU 50
  alone), each with ``multi_contour_eval`` on (fastwsol's default) and off (fastwsol's
  ``*_single`` keys);
- PxAP.

numpy >= 1.24 has no ``np.float``, which that code uses for float64: the subprocess sets
``np.float = float`` before importing it; nothing else is changed.

    python -m bench.crosscheck_wsolevaluation --wsolevaluation DIR [--box-images 300] [--mask-images 300]

Prints a table and writes bench/results/crosscheck_wsolevaluation.{json,csv} (results/quick/
unless a full run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_mask_evaluator import save_scoremaps, scoremaps_near, spread, write_mask_pngs, write_subset
from bench.common import format_table, save_results
from fastwsol.data.metadata import read_split_metadata
from fastwsol.evaluate import gt_boxes_224
from fastwsol.evaluate_maps import DEFAULT_CAM_CURVE_INTERVAL, evaluate_scoremaps

# Run inside the wsolevaluation checkout: evaluate_wsol's result as the last stdout line.
WSOLEVALUATION_CALL = """
import json, sys
import numpy as np
np.float = float  # removed from numpy 1.24; wsolevaluation uses it as float64
from evaluation import evaluate_wsol
print(json.dumps(float(evaluate_wsol(**json.loads(sys.argv[1])))))
"""


def wsolevaluation(checkout: Path, **kwargs) -> float:
    """``evaluation.evaluate_wsol(**kwargs)`` of the checkout, in a subprocess."""
    done = subprocess.run(
        [sys.executable, "-c", WSOLEVALUATION_CALL, json.dumps(kwargs)], cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
    )
    if done.returncode:
        raise SystemExit(f"wsolevaluation's evaluate_wsol failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def box_rows(args, folder: Path) -> list[dict]:
    metadata_root, root = folder / "metadata", folder / "maps"
    write_subset("CUB", spread(read_split_metadata("builtin", "CUB", "test").image_ids, args.box_images),
                 metadata_root)
    metadata = read_split_metadata(metadata_root, "CUB", "test")
    save_scoremaps(root, metadata.image_ids, scoremaps_near(gt_boxes_224(metadata, np.arange(len(metadata))),
                                                            args.seed))
    ours = evaluate_scoremaps(root, "CUB", "test", metadata_root=metadata_root,
                              cam_curve_interval=args.cam_curve_interval, progress=False)
    common = {"scoremap_root": str(root), "metadata_root": str(metadata_root), "mask_root": str(folder),
              "dataset_name": "CUB", "split": "test", "cam_curve_interval": args.cam_curve_interval}
    rows = []
    for multi_contour, suffix in ((True, ""), (False, "_single")):
        for metric, multi_iou, ious in (("max_box_acc_v2", True, [30, 50, 70]), ("gt_known_loc", False, [50])):
            theirs = wsolevaluation(args.wsolevaluation, **common, multi_contour_eval=multi_contour,
                                    multi_iou_eval=multi_iou, iou_threshold_list=ious)
            rows.append({"dataset": "CUB test", "images": len(metadata), "metric": metric + suffix,
                         "fastwsol": ours[metric + suffix], "wsolevaluation": theirs})
    return rows


def mask_rows(args, folder: Path) -> list[dict]:
    metadata_root, mask_root, root = folder / "metadata", folder / "data", folder / "maps"
    write_subset("OpenImages",
                 spread(read_split_metadata("builtin", "OpenImages", "test").image_ids, args.mask_images),
                 metadata_root)
    metadata = read_split_metadata(metadata_root, "OpenImages", "test")
    boxes = write_mask_pngs(metadata, mask_root / "OpenImages", np.random.default_rng(args.seed + 1))
    save_scoremaps(root, metadata.image_ids, scoremaps_near(boxes, args.seed + 1))
    ours = evaluate_scoremaps(root, "OpenImages", "test", metadata_root=metadata_root, mask_root=mask_root,
                              cam_curve_interval=args.cam_curve_interval, progress=False)
    theirs = wsolevaluation(args.wsolevaluation, scoremap_root=str(root), metadata_root=str(metadata_root),
                            mask_root=str(mask_root), dataset_name="OpenImages", split="test",
                            multi_contour_eval=True, multi_iou_eval=True, iou_threshold_list=[30, 50, 70],
                            cam_curve_interval=args.cam_curve_interval)
    return [{"dataset": "OpenImages test", "images": len(metadata), "metric": "pxap", "fastwsol": ours["pxap"],
             "wsolevaluation": theirs}]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # not required=True: bench.common.is_full_run parses the defaults
    parser.add_argument("--wsolevaluation", type=Path, help="a checkout of clovaai/wsolevaluation (required)")
    parser.add_argument("--box-images", type=int, default=300, help="CUB test images")
    parser.add_argument("--mask-images", type=int, default=300, help="OpenImages test images")
    parser.add_argument("--cam-curve-interval", type=float, default=DEFAULT_CAM_CURVE_INTERVAL)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.wsolevaluation is None or not (args.wsolevaluation / "evaluation.py").is_file():
        parser.error(f"--wsolevaluation {args.wsolevaluation}: no evaluation.py there")
    with tempfile.TemporaryDirectory(prefix="crosscheck_wsolevaluation.") as temporary:
        rows = box_rows(args, Path(temporary) / "boxes") + mask_rows(args, Path(temporary) / "masks")
    for row in rows:
        row["difference"] = abs(row["fastwsol"] - row["wsolevaluation"])
    print(f"fastwsol evaluate-maps vs wsolevaluation's evaluate_wsol, CAM threshold step {args.cam_curve_interval:g}")
    print(format_table(("split", "images", "metric", "fastwsol", "wsolevaluation", "|difference|"),
                       [(r["dataset"], r["images"], r["metric"], f"{r['fastwsol']:.10g}", f"{r['wsolevaluation']:.10g}",
                         f"{r['difference']:.1e}") for r in rows], indent="  "))
    payload = {"rows": rows, "cam_curve_interval": args.cam_curve_interval, "max_difference": max(r["difference"]
                                                                                                  for r in rows)}
    save_results("crosscheck_wsolevaluation", payload, rows, parser=parser, args=args, ignore=("wsolevaluation",))
    if payload["max_difference"] > 1e-9:
        raise SystemExit("fastwsol and wsolevaluation disagree")


if __name__ == "__main__":
    main()
