"""Mask localization (OpenImages30k): GT masks, PxAP and PIoU over a stream of score maps.

GT mask of one image (wsolevaluation's ``get_mask``): each instance mask PNG is read in
grayscale as float32, resized to 224×224 with nearest-neighbour interpolation and thresholded at
> 0.5; the foreground is their union. The ignore PNG is read the same way, minus the foreground.
The result holds 1 (foreground), :data:`IGNORE` (ignored) and 0 (background).

Score histograms: the CAM thresholds t_k = ``np.arange(0, 1, Δ)`` (:func:`cam_thresholds`) and
1, 2, 3 are the bin edges, so bin k counts scores in [t_k, t_{k+1}) and the scores equal to 1 fall
in [1, 2). Two histograms are summed over the split: one of the scores at foreground pixels, one
at background pixels; ignored pixels count in neither. Their reversed cumulative sums are, for
each threshold from the top down, the true positives tp (foreground scores >= t) and the false
positives fp.

- PxAP (wsolevaluation's ``MaskEvaluator.compute``): precision = tp/(tp+fp), recall = tp/#fg,
  PxAP = 100·Σ_{k>=1} precision_k·(recall_k − recall_{k−1}) over the points where tp+fp > 0.
- PIoU, the pixel IoU at the best threshold (the mask counterpart of MaxBoxAcc's best-threshold
  rule; fastwsol's definition, since wsolevaluation's code has no PIoU): 100·max_k
  tp_k/(tp_k + fp_k + fn_k) with fn_k = #fg − tp_k, all counted over the split's pixels;
  ``best_threshold`` is the t_k reaching it (the lowest if tied); read from the same histograms.

Backends: ``"reference"`` is the benchmark's loop (``np.histogram`` per image); ``"histogram"``
bins a whole batch in one compiled pass. Both give identical integer counts: a score is compared
as float64 against the float64 edges, as ``np.histogram`` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numba as nb
import numpy as np
import torch

from fastwsol.evaluation.boxes import SCOREMAP_SIZE, cam_thresholds

__all__ = ["IGNORE", "MASK_BACKENDS", "MaskEvaluator", "gt_mask", "load_gt_masks"]

IGNORE = 255
MASK_BACKENDS = ("histogram", "reference")


def _read_binary_mask(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    image = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot read mask image {path} (not a readable PNG/image file)")
    resized = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
    return resized > 0.5


def gt_mask(
    mask_files: Sequence[str | os.PathLike], ignore_file: str | os.PathLike | None = None, size: int = SCOREMAP_SIZE
) -> np.ndarray:
    """uint8 (size, size): 1 inside any instance mask, :data:`IGNORE` inside the ignore mask but
    outside the foreground, 0 elsewhere. Missing or unreadable files are errors naming them."""
    if not mask_files:
        raise ValueError("an image needs at least one instance mask")
    foreground = np.zeros((size, size), bool)
    for file in mask_files:
        foreground |= _read_binary_mask(Path(file), size)
    mask = foreground.astype(np.uint8)
    if ignore_file is not None:
        mask[_read_binary_mask(Path(ignore_file), size) & ~foreground] = IGNORE
    return mask


def load_gt_masks(mask_dir: str | os.PathLike, annotations: Iterable, size: int = SCOREMAP_SIZE) -> np.ndarray:
    """(N, size, size) uint8 GT masks of ``annotations`` (:class:`~fastwsol.data.MaskAnnotation`
    items, paths relative to ``mask_dir`` = ``<mask_root>/<DATASET>``)."""
    mask_dir = Path(mask_dir)
    masks = [
        gt_mask([mask_dir / p for p in a.mask_paths], mask_dir / a.ignore_path if a.ignore_path else None, size)
        for a in annotations
    ]
    return np.stack(masks) if masks else np.zeros((0, size, size), np.uint8)


@nb.njit(cache=True, nogil=True)
def _add_histograms(scores, classes, edges, guess_scale, counts):
    """``counts[c, k]`` += the pixels of class c (0 background, 1 foreground; others skipped)
    whose score lies in bin k, with np.histogram's bins: [e_k, e_{k+1}), the last one closed.

    The bin is first guessed as ``int((score - e_0) * guess_scale)``, then moved to where
    ``e_k <= score < e_{k+1}`` holds exactly (in float64): the guess only sets the speed."""
    num_bins = edges.shape[0] - 1
    first, last = edges[0], edges[num_bins]
    for i in range(scores.shape[0]):
        c = classes[i]
        if c > 1:
            continue
        v = np.float64(scores[i])
        if not (first <= v <= last):
            continue
        if v == last:
            counts[c, num_bins - 1] += 1
            continue
        k = min(max(int((v - first) * guess_scale), 0), num_bins - 1)
        while v < edges[k]:
            k -= 1
        while v >= edges[k + 1]:
            k += 1
        counts[c, k] += 1


def _as_float_maps(scoremaps) -> np.ndarray:
    if isinstance(scoremaps, torch.Tensor):
        scoremaps = scoremaps.detach()
        if scoremaps.dtype not in (torch.float32, torch.float64):
            scoremaps = scoremaps.float()  # exact for float16/bfloat16
        scoremaps = scoremaps.cpu().numpy()
    maps = np.asarray(scoremaps)
    if maps.dtype == np.float16:
        maps = maps.astype(np.float32)  # exact; the compiled pass reads float32/float64
    if maps.ndim != 3:
        raise ValueError(f"score maps must be (N, H, W): one 2-D map per image, got shape {maps.shape}")
    if not np.issubdtype(maps.dtype, np.floating):
        raise ValueError(f"score maps must be floating point in [0, 1], got dtype {maps.dtype}")
    if maps.size and not (maps.min() >= 0 and maps.max() <= 1):  # NaN fails both comparisons
        bad = next(i for i, m in enumerate(maps) if not (m.min() >= 0 and m.max() <= 1))
        what = "NaN" if np.isnan(maps[bad]).any() else f"values in [{maps[bad].min()}, {maps[bad].max()}]"
        raise ValueError(f"score map {bad} has {what}: score maps must lie in [0, 1]")
    return maps


def _as_gt_masks(gt_masks, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(gt_masks, torch.Tensor):
        gt_masks = gt_masks.detach().cpu().numpy()
    masks = np.asarray(gt_masks)
    if masks.shape != shape:
        raise ValueError(f"GT masks must have the score maps' shape {shape}, got {masks.shape}")
    if masks.dtype != np.uint8:
        raise ValueError(f"GT masks must be uint8 (0, 1, {IGNORE}), got dtype {masks.dtype}")
    invalid = (masks > 1) & (masks != IGNORE)
    if invalid.any():
        bad = int(np.flatnonzero(invalid.reshape(len(masks), -1).any(axis=1))[0])
        raise ValueError(f"GT mask {bad} holds values other than 0, 1 and {IGNORE}: {np.unique(masks[bad]).tolist()}")
    return masks


class MaskEvaluator:
    """Accumulates the foreground and background score histograms of a split and computes PxAP
    and PIoU from them (module doc). Counts are int64 arrays: evaluators of disjoint shards
    :meth:`merge`, and :meth:`state_vector` / :meth:`add_state_vector` let a distributed run
    all-reduce them."""

    def __init__(self, cam_curve_interval: float = 0.001, backend: str = "histogram"):
        if backend not in MASK_BACKENDS:
            raise ValueError(f"backend must be one of {MASK_BACKENDS}, got {backend!r}")
        self.cam_curve_interval = float(cam_curve_interval)
        self.cam_thresholds = cam_thresholds(self.cam_curve_interval)
        self.backend = backend
        # bins [t_0, t_1), ..., [t_last, 1), [1, 2), [2, 3]: a score of 1 is above every threshold
        self.bin_edges = np.append(self.cam_thresholds, [1.0, 2.0, 3.0])
        if not (np.diff(self.bin_edges) > 0).all():
            raise ValueError(f"cam_curve_interval={cam_curve_interval} gives non-increasing bin edges")
        num_bins = len(self.bin_edges) - 1
        self.foreground_hist = np.zeros(num_bins, np.int64)
        self.background_hist = np.zeros(num_bins, np.int64)
        self.num_images = 0

    # -- accumulation -------------------------------------------------------------------
    def accumulate(self, scoremaps, gt_masks) -> None:
        """Add a batch: ``scoremaps`` (N, H, W) floats in [0, 1] (array or tensor), ``gt_masks``
        (N, H, W) uint8 from :func:`gt_mask` (0 background, 1 foreground, :data:`IGNORE`)."""
        maps = _as_float_maps(scoremaps)
        masks = _as_gt_masks(gt_masks, maps.shape)
        if self.backend == "reference":
            for scoremap, mask in zip(maps, masks):
                foreground, _ = np.histogram(scoremap[mask == 1], bins=self.bin_edges)
                background, _ = np.histogram(scoremap[mask == 0], bins=self.bin_edges)
                self.foreground_hist += foreground
                self.background_hist += background
        elif maps.size:
            counts = np.zeros((2, len(self.foreground_hist)), np.int64)
            # thresholds are about k·Δ: the guess is off by at most one bin
            guess_scale = len(self.cam_thresholds) / (1.0 - self.cam_thresholds[0])
            _add_histograms(maps.reshape(-1), masks.reshape(-1), self.bin_edges, guess_scale, counts)
            self.background_hist += counts[0]
            self.foreground_hist += counts[1]
        self.num_images += len(maps)

    # -- combining ----------------------------------------------------------------------
    def merge(self, other: MaskEvaluator) -> MaskEvaluator:
        """Add another evaluator's counts (a disjoint shard of images) into this one."""
        if other.cam_curve_interval != self.cam_curve_interval:
            raise ValueError(
                f"cannot merge evaluators with different cam_curve_interval: "
                f"{self.cam_curve_interval} vs {other.cam_curve_interval}"
            )
        self.add_state_vector(other.state_vector())
        return self

    def state_vector(self) -> np.ndarray:
        """All counts as one int64 vector (sum it across processes, then add_state_vector)."""
        return np.concatenate([self.foreground_hist, self.background_hist, [self.num_images]]).astype(np.int64)

    def add_state_vector(self, vector) -> None:
        if isinstance(vector, torch.Tensor):
            vector = vector.detach().cpu().numpy()
        vector = np.asarray(vector, dtype=np.int64)
        expected = self.state_vector().shape
        if vector.shape != expected:
            raise ValueError(f"state vector must have shape {expected}, got {vector.shape}")
        num_bins = len(self.foreground_hist)
        self.foreground_hist += vector[:num_bins]
        self.background_hist += vector[num_bins:2 * num_bins]
        self.num_images += int(vector[-1])

    # -- metrics ------------------------------------------------------------------------
    def compute(self) -> dict:
        """``{"pxap": %, "piou": %, "best_threshold": t, "num_images": N}`` (module doc)."""
        if self.num_images == 0:
            raise ValueError("no image accumulated")
        # from the highest bin down: position j counts the scores >= bin_edges[-2 - j]
        tp = self.foreground_hist[::-1].cumsum().astype(np.float64)
        fp = self.background_hist[::-1].cumsum().astype(np.float64)
        num_foreground = float(self.foreground_hist.sum())
        if num_foreground <= 0:
            raise RuntimeError("No positive ground truth in the eval set.")
        if ((tp + fp) <= 0).all():
            raise RuntimeError("No positive prediction in the eval set.")
        predicted = (tp + fp) != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = tp / (tp + fp)
        recall = tp / num_foreground
        pxap = float((precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100)
        # at threshold t_k (ascending k), tp and fp count the bins k and above
        num_thresholds = len(self.cam_thresholds)
        tp_at = tp[::-1][:num_thresholds]
        fp_at = fp[::-1][:num_thresholds]
        iou = tp_at / (num_foreground + fp_at)  # tp + fp + fn, fn = #fg - tp
        best = int(np.argmax(iou))
        return {
            "pxap": pxap,
            "piou": float(iou[best] * 100),
            "best_threshold": float(self.cam_thresholds[best]),
            "num_images": self.num_images,
        }
