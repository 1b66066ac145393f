"""Evaluator benchmark at ImageNet-validation scale.

The 50,000 ILSVRC test images with their real GT boxes (the builtin wsolevaluation metadata), and
synthetic 14×14 CAMs (1–3 ReLU'd Gaussian bumps near a GT box plus noise, seeded), evaluated
end to end — bicubic upsample, min–max normalise, uint8, boxes at 200 CAM thresholds, counts —
with the fast path (BoxEvaluator(backend="component_tree")). The OpenCV reference (cv2.resize +
wsolevaluation's loop) runs on a subset only; its full-set time is EXTRAPOLATED from that
subset's images/s. The subset's counts are checked equal between the two paths.

    python -m bench.bench_evaluator [--num-images 50000] [--reference-images 300]

Prints a table and writes bench/results/evaluator.{json,csv} (results/quick/ unless a full run: bench/common.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numba
import numpy as np
import torch

from bench.common import format_table, save_results
from fastwsol.data import read_split_metadata
from fastwsol.evaluation import (
    BoxEvaluator,
    resize_boxes,
    upsample_cams,
)
from fastwsol.evaluation.boxes import scoremap_opencv
from fastwsol.evaluation.component_tree import normalize_and_quantize
from fastwsol.evaluation.evaluator import CAM_CHUNK

CAM_SIZE = 14


def synthetic_cams(gt_boxes: list[np.ndarray], seed: int) -> torch.Tensor:
    """(N, 14, 14) float32 CAMs: 1–3 Gaussian bumps, the first centred near a GT box, plus
    noise, ReLU'd — smooth, peaky maps like a trained network's."""
    rng = np.random.default_rng(seed)
    grid = (np.arange(CAM_SIZE) + 0.5) * 224 / CAM_SIZE
    cams = np.empty((len(gt_boxes), CAM_SIZE, CAM_SIZE), np.float32)
    for i, boxes in enumerate(gt_boxes):
        x0, y0, x1, y1 = boxes[rng.integers(len(boxes))]
        cam = rng.normal(0, 0.1, (CAM_SIZE, CAM_SIZE))
        for b in range(rng.integers(1, 4)):
            if b == 0:
                cx = (x0 + x1) / 2 + rng.normal(0, 15)
                cy = (y0 + y1) / 2 + rng.normal(0, 15)
                sx = max(8.0, (x1 - x0) / rng.uniform(1.5, 4))
                sy = max(8.0, (y1 - y0) / rng.uniform(1.5, 4))
            else:
                cx, cy = rng.uniform(0, 224, 2)
                sx, sy = rng.uniform(10, 60, 2)
            bump = np.exp(-0.5 * (((grid[None, :] - cx) / sx) ** 2 + ((grid[:, None] - cy) / sy) ** 2))
            cam += rng.uniform(0.3, 1.0) * bump
        cams[i] = np.maximum(cam, 0)
    return torch.from_numpy(cams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=50000)
    parser.add_argument("--reference-images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t = time.perf_counter()
    meta = read_split_metadata("builtin", "ILSVRC", "test")
    metadata_seconds = time.perf_counter() - t
    n = min(args.num_images, len(meta))
    gt_boxes = [resize_boxes(meta.boxes[i], int(meta.sizes[i, 0]), int(meta.sizes[i, 1])) for i in range(n)]
    cams = synthetic_cams(gt_boxes, args.seed)

    # First call: numba loads its on-disk cache (or compiles once, ~tens of seconds).
    t = time.perf_counter()
    BoxEvaluator().accumulate_cams(cams[:2], gt_boxes[:2])
    first_call_seconds = time.perf_counter() - t

    fast = BoxEvaluator(backend="component_tree")
    cpu_total = time.process_time()
    t_total = time.perf_counter()
    for start in range(0, n, args.batch_size):
        stop = min(start + args.batch_size, n)
        fast.accumulate_cams(cams[start:stop], gt_boxes[start:stop])
    fast_seconds = time.perf_counter() - t_total
    fast_cpu_seconds = time.process_time() - cpu_total
    fast_metrics = fast.compute()

    # Stage split on a sample: CAM → uint8 score maps (in the evaluator's chunks), then boxes + counts.
    sample = min(n, 2000)
    t = time.perf_counter()
    for s in range(0, sample, CAM_CHUNK):
        normalize_and_quantize(upsample_cams(cams[s:s + CAM_CHUNK]).numpy())
    scoremap_seconds = (time.perf_counter() - t) * n / sample

    m = min(args.reference_images, n)
    reference = BoxEvaluator(backend="opencv")
    cpu = time.process_time()
    t = time.perf_counter()
    for i in range(m):
        reference.accumulate(scoremap_opencv(cams[i].numpy().copy())[None], gt_boxes[i:i + 1])
    reference_seconds = time.perf_counter() - t
    reference_cpu_seconds = time.process_time() - cpu
    subset = BoxEvaluator(backend="component_tree")
    subset.accumulate_cams(cams[:m], gt_boxes[:m])
    # cv2 and torch bicubic differ by float32 rounding, which can move a pixel by one uint8
    # level; count the subset images whose per-threshold outcomes differ (expected 0 or a few).
    ref_maps = np.stack([scoremap_opencv(cams[i].numpy().copy()) for i in range(m)])
    same_maps = BoxEvaluator(backend="component_tree")
    same_maps.accumulate(ref_maps, gt_boxes[:m])
    subset_counts_equal = bool((same_maps.correct_counts == reference.correct_counts).all())

    fast_ips = n / fast_seconds
    reference_ips = m / reference_seconds
    result = {
        "num_images": n,
        "reference_images": m,
        "fast_seconds": round(fast_seconds, 3),
        "fast_images_per_second": round(fast_ips, 1),
        "fast_cam_to_uint8_seconds_estimated": round(scoremap_seconds, 3),
        "fast_boxes_and_counts_seconds_estimated": round(fast_seconds - scoremap_seconds, 3),
        "first_call_seconds": round(first_call_seconds, 3),
        "metadata_parse_seconds": round(metadata_seconds, 3),
        "reference_seconds_subset": round(reference_seconds, 3),
        "reference_images_per_second": round(reference_ips, 2),
        "reference_seconds_extrapolated_full": round(n / reference_ips, 1),
        "speedup": round(fast_ips / reference_ips, 1),
        # CPU time per image (all threads) is less sensitive to other jobs on the machine
        "fast_cpu_ms_per_image": round(1000 * fast_cpu_seconds / n, 3),
        "reference_cpu_ms_per_image": round(1000 * reference_cpu_seconds / m, 3),
        "speedup_cpu_time": round((reference_cpu_seconds / m) / (fast_cpu_seconds / n), 1),
        "subset_counts_equal_on_identical_maps": subset_counts_equal,
        "subset_counts_equal_end_to_end": bool((subset.correct_counts == reference.correct_counts).all()),
        "metrics_fast_full": fast_metrics,
        "threads": {"numba": numba.get_num_threads(), "torch": torch.get_num_threads()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "versions": {"numba": numba.__version__, "opencv": cv2.__version__, "torch": torch.__version__},
        "note": "reference full-set time is extrapolated from the subset's images/s",
    }

    rows = [
        ("metadata parse (ILSVRC test)", f"{metadata_seconds:.2f} s", ""),
        ("first call (numba cache load/compile)", f"{first_call_seconds:.2f} s", ""),
        (f"fast, {n} images end to end", f"{fast_seconds:.1f} s", f"{fast_ips:.0f} img/s"),
        ("  of which CAM -> uint8 map (from a 2,000 sample)", f"{scoremap_seconds:.1f} s", ""),
        (f"OpenCV reference, {m} images", f"{reference_seconds:.1f} s", f"{reference_ips:.1f} img/s"),
        (f"OpenCV reference, {n} images (extrapolated)", f"{n / reference_ips:.0f} s", ""),
        ("speed-up (images/s)", f"{fast_ips / reference_ips:.1f}x", "target >= 100x"),
        ("CPU ms per image: fast / reference",
         f"{1000 * fast_cpu_seconds / n:.2f} / {1000 * reference_cpu_seconds / m:.1f}",
         f"{(reference_cpu_seconds / m) / (fast_cpu_seconds / n):.1f}x less CPU"),
        ("counts equal on the subset (same maps)", str(subset_counts_equal), ""),
    ]
    print(f"Evaluator benchmark — {os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(format_table(("measurement", "value", ""), rows, indent="  "))
    print(f"  MaxBoxAccV2 (synthetic CAMs) {fast_metrics['max_box_acc_v2']:.2f}")

    save_results("evaluator", result, [{k: v for k, v in result.items() if not isinstance(v, dict)}],
                 parser=parser, args=args)


if __name__ == "__main__":
    main()
