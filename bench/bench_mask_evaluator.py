"""Mask evaluator and ``fastwsol evaluate-maps`` benchmark, in one run.

(a) MaskEvaluator: the compiled "histogram" backend vs "reference", the benchmark's per-image
    np.histogram loop, on N synthetic 224×224 maps (smooth: 14×14 CAMs of 1–3 bumps, bicubic
    upsampled and min–max normalised) and GT masks (an ellipse, and an ignore rectangle minus the
    ellipse); the int64 histograms are checked equal.
(b) ``evaluate-maps`` end to end (``fastwsol.evaluate_maps.evaluate_scoremaps``: scan, read the
    .npy maps with a few threads, score, all its metrics) on generated score-map folders, against
    wsolevaluation's own per-image loop over the same files: ``np.load`` per map, then
    - boxes (images spread over the builtin CUB test split, a metadata subset written for them):
      ``BoxEvaluator(backend="opencv")`` one map at a time, the literal wsolevaluation loop;
    - masks (images spread over the builtin OpenImages test split, their instance and ignore PNGs
      generated at assorted sizes): ``load_gt_masks`` per image (cv2.imread of each PNG, as wsolevaluation's
      get_mask) and ``MaskEvaluator(backend="reference")`` one map at a time.
    The metrics are checked equal. evaluate-maps also computes the single-contour metrics and the
    map diagnostics for boxes, work the reference loop does not do.

    python -m bench.bench_mask_evaluator [--quick] [--images 2000] [--box-images 1000] [--mask-images 1000]

Prints a table and writes bench/results/mask_evaluator.{json,csv} (results/quick/ unless a full
run: bench/common.py). The generated files live in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numba
import numpy as np
import torch

from bench.bench_evaluator import synthetic_cams
from bench.common import format_table, save_results
from fastwsol.data.metadata import BUILTIN_METADATA_ROOT, read_split_metadata
from fastwsol.evaluate import gt_boxes_224
from fastwsol.evaluate_maps import DEFAULT_CAM_CURVE_INTERVAL, READERS, evaluate_scoremaps, scoremap_path
from fastwsol.evaluation import IGNORE, BoxEvaluator, MaskEvaluator, cams_to_scoremaps, load_gt_masks

QUICK = {"images": 200, "box_images": 30, "mask_images": 60}
METADATA_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


def random_boxes(count: int, rng: np.random.Generator, size: int = 224) -> list[np.ndarray]:
    """One (1, 4) box per image, 20–90 % of the side."""
    boxes = []
    for _ in range(count):
        w, h = rng.integers(int(0.2 * size), int(0.9 * size), 2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        boxes.append(np.array([[x0, y0, x0 + w - 1, y0 + h - 1]]))
    return boxes


def scoremaps_near(boxes: list[np.ndarray], seed: int, batch: int = 500) -> np.ndarray:
    """(N, 224, 224) float64 score maps, peaky near each image's box (bench_evaluator's CAMs)."""
    cams = synthetic_cams(boxes, seed)
    return np.concatenate([cams_to_scoremaps(cams[s:s + batch]).numpy() for s in range(0, len(cams), batch)]).astype(
        np.float64)


def synthetic_masks(boxes: list[np.ndarray], rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """(N, size, size) uint8 GT masks: the ellipse inscribed in the box is foreground, a random
    rectangle minus it is ignored (IGNORE), the rest background."""
    masks = np.zeros((len(boxes), size, size), np.uint8)
    for mask, ((x0, y0, x1, y1),) in zip(masks, boxes):
        ignore = np.zeros((size, size), np.uint8)
        ix, iy = rng.integers(0, size - 40, 2)
        cv2.rectangle(ignore, (int(ix), int(iy)), (int(ix) + 60, int(iy) + 50), 1, -1)
        cv2.ellipse(mask, ((x0 + x1) // 2, (y0 + y1) // 2), (max((x1 - x0) // 2, 1), max((y1 - y0) // 2, 1)),
                    0, 0, 360, 1, -1)
        mask[(ignore == 1) & (mask == 0)] = IGNORE
    return masks


def spread(ids: tuple[str, ...], count: int) -> set[str]:
    """``count`` image ids evenly spread over the split (so over its classes)."""
    return {ids[i] for i in np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int)}


def write_subset(dataset: str, keep: set[str], metadata_root: Path) -> None:
    """The builtin split's files restricted to ``keep``: a user's own metadata root."""
    source, target = BUILTIN_METADATA_ROOT / dataset / "test", metadata_root / dataset / "test"
    target.mkdir(parents=True)
    for name in METADATA_FILES:
        lines = (source / name).read_text().splitlines()
        (target / name).write_text("".join(f"{line}\n" for line in lines if line.split(",")[0] in keep))


def save_scoremaps(root: Path, image_ids, maps: np.ndarray) -> None:
    for image_id, scoremap in zip(image_ids, maps):
        path = scoremap_path(root, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap)  # float64: the dtype wsolevaluation's loop requires


def write_mask_pngs(metadata, mask_dir: Path, rng: np.random.Generator) -> list[np.ndarray]:
    """Each image's instance PNGs (ellipses) and ignore PNG (a rectangle) at an assorted size,
    0/255 as OpenImages'; returns one box per image in 224² pixels around its first instance,
    where its score map peaks."""
    boxes = []
    for annotation in metadata.masks:
        width, height = (int(v) for v in rng.integers(200, 640, 2))
        first = None
        for name in annotation.mask_paths:
            png = np.zeros((height, width), np.uint8)
            cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
            ax, ay = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
            cv2.ellipse(png, (cx, cy), (ax, ay), 0, 0, 360, 255, -1)
            first = first or (cx - ax, cy - ay, cx + ax, cy + ay)
            path = mask_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), png)
        if annotation.ignore_path:
            png = np.zeros((height, width), np.uint8)
            x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            cv2.rectangle(png, (x, y), (x + width // 3, y + height // 3), 255, -1)
            cv2.imwrite(str(mask_dir / annotation.ignore_path), png)
        x0, y0, x1, y1 = first
        scale = np.array([224 / width, 224 / height] * 2)
        boxes.append(np.clip(np.array([[x0, y0, x1, y1]]) * scale, 0, 223).astype(np.int64))
    return boxes


def timed(function):
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def mask_backends(args) -> dict:
    """(a): histogram vs reference backend on in-memory maps and masks."""
    rng = np.random.default_rng(args.seed)
    boxes = random_boxes(args.images, rng)
    maps = scoremaps_near(boxes, args.seed).astype(np.float32)  # a model's maps are float32
    masks = synthetic_masks(boxes, rng)
    MaskEvaluator(args.cam_curve_interval).accumulate(maps[:2], masks[:2])  # numba: load the cache or compile
    fast = MaskEvaluator(args.cam_curve_interval, backend="histogram")
    reference = MaskEvaluator(args.cam_curve_interval, backend="reference")

    def run_fast():
        for start in range(0, len(maps), args.batch_size):
            fast.accumulate(maps[start:start + args.batch_size], masks[start:start + args.batch_size])
        return fast

    def run_reference():
        for scoremap, mask in zip(maps, masks):
            reference.accumulate(scoremap[None], mask[None])
        return reference

    result = compare(run_fast, run_reference, len(maps), lambda a, b: bool((a.state_vector() == b.state_vector()).all()),
                     lambda evaluator: evaluator.compute())
    return {**result, "ignored_pixel_share": round(float((masks == IGNORE).mean()), 4)}


def box_end_to_end(args, folder: Path) -> dict:
    """(b) boxes: evaluate-maps vs the literal wsolevaluation loop on the same .npy files."""
    metadata_root, root = folder / "metadata", folder / "maps"
    ids = read_split_metadata("builtin", "CUB", "test").image_ids
    write_subset("CUB", spread(ids, args.box_images), metadata_root)
    metadata = read_split_metadata(metadata_root, "CUB", "test")
    boxes = gt_boxes_224(metadata, np.arange(len(metadata)))
    save_scoremaps(root, metadata.image_ids, scoremaps_near(boxes, args.seed + 1))
    BoxEvaluator().accumulate(np.zeros((2, 224, 224)), boxes[:2])  # numba: load the cache or compile

    def fast():
        return evaluate_scoremaps(root, "CUB", "test", metadata_root=metadata_root,
                                  cam_curve_interval=args.cam_curve_interval, progress=False)

    def reference():
        evaluator = BoxEvaluator(cam_curve_interval=args.cam_curve_interval, backend="opencv")
        for image_id, gt in zip(metadata.image_ids, boxes):
            evaluator.accumulate(np.load(scoremap_path(root, image_id))[None], [gt])
        return evaluator.compute()

    keys = ("box_acc", "max_box_acc_v2", "gt_known_loc", "best_threshold")
    return compare(fast, reference, len(metadata), same_metrics(keys), pick(keys))


def mask_end_to_end(args, folder: Path) -> dict:
    """(b) masks: evaluate-maps vs wsolevaluation's loop (PNG reads + np.histogram per image)."""
    metadata_root, mask_root, root = folder / "metadata", folder / "data", folder / "maps"
    ids = read_split_metadata("builtin", "OpenImages", "test").image_ids
    write_subset("OpenImages", spread(ids, args.mask_images), metadata_root)
    metadata = read_split_metadata(metadata_root, "OpenImages", "test")
    mask_dir = mask_root / "OpenImages"
    boxes = write_mask_pngs(metadata, mask_dir, np.random.default_rng(args.seed + 2))
    save_scoremaps(root, metadata.image_ids, scoremaps_near(boxes, args.seed + 2))

    def fast():
        return evaluate_scoremaps(root, "OpenImages", "test", metadata_root=metadata_root, mask_root=mask_root,
                                  cam_curve_interval=args.cam_curve_interval, progress=False)

    def reference():
        evaluator = MaskEvaluator(args.cam_curve_interval, backend="reference")
        for image_id, annotation in zip(metadata.image_ids, metadata.masks):
            mask = load_gt_masks(mask_dir, [annotation])  # one image's PNGs at a time, as wsolevaluation
            evaluator.accumulate(np.load(scoremap_path(root, image_id))[None], mask)
        return evaluator.compute()

    keys = ("pxap", "piou", "best_threshold")
    return compare(fast, reference, len(metadata), same_metrics(keys), pick(keys))


def compare(fast, reference, n: int, same, metrics) -> dict:
    """Time ``fast()`` then ``reference()`` over the same ``n`` images: images/s, CPU ms per image
    (all threads; less sensitive to other jobs on the machine), ``same(fast result, reference
    result)`` and ``metrics(fast result)``."""
    fast_result, fast_s, fast_cpu = timed(fast)
    reference_result, reference_s, reference_cpu = timed(reference)
    return {
        "images": n,
        "fast_images_per_second": round(n / fast_s, 1),
        "reference_images_per_second": round(n / reference_s, 1),
        "speedup": round(reference_s / fast_s, 1),
        "fast_cpu_ms_per_image": round(1000 * fast_cpu / n, 3),
        "reference_cpu_ms_per_image": round(1000 * reference_cpu / n, 3),
        "equal": bool(same(fast_result, reference_result)),
        "metrics": metrics(fast_result),
    }


def same_metrics(keys):
    return lambda a, b: all(a[k] == b[k] for k in keys)


def pick(keys):
    return lambda result: {k: result[k] for k in keys}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="(a) synthetic maps and masks")
    parser.add_argument("--box-images", type=int, default=1000, help="(b) score maps of CUB test images")
    parser.add_argument("--mask-images", type=int, default=1000, help="(b) score maps of OpenImages test images")
    parser.add_argument("--cam-curve-interval", type=float, default=DEFAULT_CAM_CURVE_INTERVAL)
    parser.add_argument("--batch-size", type=int, default=64, help="(a) maps per histogram-backend call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: {QUICK['images']}, {QUICK['box_images']} and {QUICK['mask_images']} images")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, min(getattr(args, key), value))

    backends = mask_backends(args)
    with tempfile.TemporaryDirectory(prefix="bench_mask_evaluator.") as temporary:
        boxes = box_end_to_end(args, Path(temporary) / "boxes")
        masks = mask_end_to_end(args, Path(temporary) / "masks")

    result = {
        "mask_backends": backends,
        "evaluate_maps_boxes": boxes,
        "evaluate_maps_masks": masks,
        "cam_curve_interval": args.cam_curve_interval,
        "threads": {"numba": numba.get_num_threads(), "torch": torch.get_num_threads(), "readers": READERS},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "versions": {"numba": numba.__version__, "numpy": np.__version__, "opencv": cv2.__version__},
    }
    rows = [
        {"what": f"(a) MaskEvaluator, {backends['images']} maps in memory", "fast": "histogram backend",
         "fast_img_s": backends["fast_images_per_second"], "reference": "np.histogram per image",
         "reference_img_s": backends["reference_images_per_second"], "speedup": backends["speedup"],
         "equal": backends["equal"]},
        {"what": f"(b) evaluate-maps CUB test boxes, {boxes['images']} .npy maps", "fast": "evaluate-maps",
         "fast_img_s": boxes["fast_images_per_second"], "reference": "np.load + OpenCV loop per map",
         "reference_img_s": boxes["reference_images_per_second"], "speedup": boxes["speedup"],
         "equal": boxes["equal"]},
        {"what": f"(b) evaluate-maps OpenImages test masks, {masks['images']} .npy maps", "fast": "evaluate-maps",
         "fast_img_s": masks["fast_images_per_second"], "reference": "np.load + PNG reads + np.histogram per map",
         "reference_img_s": masks["reference_images_per_second"], "speedup": masks["speedup"],
         "equal": masks["equal"]},
    ]
    print(f"Mask evaluator and evaluate-maps benchmark — {os.cpu_count()} CPUs, numba threads "
          f"{numba.get_num_threads()}, readers {READERS}, load avg {os.getloadavg()[0]:.1f}, "
          f"CAM threshold step {args.cam_curve_interval:g}")
    print(format_table(("measurement", "fast img/s", "reference img/s", "speed-up", "same result"),
                       [(r["what"], f"{r['fast_img_s']:.0f}", f"{r['reference_img_s']:.1f}", f"{r['speedup']:.1f}x",
                         str(r["equal"])) for r in rows], indent="  "))
    save_results("mask_evaluator", result, rows, parser=parser, args=args)
    if not all(r["equal"] for r in rows):
        raise SystemExit("the fast and reference results differ")


if __name__ == "__main__":
    main()
