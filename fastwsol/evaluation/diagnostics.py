"""Checks on score maps that the protocol's box metrics cannot see.

The protocol's multi-contour evaluation (docs/protocol.md) takes a box around *every* contour
at a threshold, holes included. A map that is high on the background and low on the object
("inverted") then still scores: the hole's contour outlines the object. Two per-image facts
expose such maps, whatever the box metric says:

* **inverted**: the mean score inside the GT boxes is below the mean score outside them;
* **peak inside GT**: the map's maximum lies inside a GT box.

Both are read on the 224² score maps the box metrics use, with the GT boxes in the same
pixels (inclusive corners). Single-contour box metrics (the box of the largest contour only,
``BoxEvaluator(multi_contour=False)``) are the other half of the check: an inverted map's
largest contour is the background.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gt_masks", "inverted_maps", "peaks_inside_gt", "per_class_gt_known", "per_class_percent", "MapDiagnostics"]


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def gt_masks(gt_boxes, height: int, width: int) -> np.ndarray:
    """Bool (N, height, width): the union of each image's (k, 4) x0y0x1y1 boxes, corners
    inclusive, clipped to the map."""
    masks = np.zeros((len(gt_boxes), height, width), bool)
    for mask, boxes in zip(masks, gt_boxes):
        for x0, y0, x1, y1 in np.asarray(_as_numpy(boxes), dtype=np.int64).reshape(-1, 4):
            mask[max(y0, 0) : max(y1 + 1, 0), max(x0, 0) : max(x1 + 1, 0)] = True
    return masks


def _checked(scoremaps, gt_boxes) -> tuple[np.ndarray, np.ndarray]:
    maps = _as_numpy(scoremaps).astype(np.float64, copy=False)
    if maps.ndim != 3:
        raise ValueError(f"score maps must be (N, H, W), got shape {maps.shape}")
    if len(gt_boxes) != len(maps):
        raise ValueError(f"{len(gt_boxes)} GT box arrays for {len(maps)} score maps")
    return maps, gt_masks(gt_boxes, *maps.shape[1:])


def inverted_maps(scoremaps, gt_boxes) -> np.ndarray:
    """Bool (N,): mean score inside the GT boxes < mean score outside them. A map whose boxes
    cover it entirely has no outside and is not inverted."""
    maps, inside = _checked(scoremaps, gt_boxes)
    n_in = inside.sum(axis=(1, 2))
    n_out = inside[0].size - n_in
    sum_in = (maps * inside).sum(axis=(1, 2))
    sum_out = maps.sum(axis=(1, 2)) - sum_in
    mean_in = sum_in / np.maximum(n_in, 1)
    mean_out = sum_out / np.maximum(n_out, 1)
    return (n_out > 0) & (mean_in < mean_out)


def peaks_inside_gt(scoremaps, gt_boxes) -> np.ndarray:
    """Bool (N,): the map's maximum (the first in row-major order if tied) lies in a GT box."""
    maps, inside = _checked(scoremaps, gt_boxes)
    peak = maps.reshape(len(maps), -1).argmax(axis=1)
    return inside.reshape(len(maps), -1)[np.arange(len(maps)), peak]


def per_class_gt_known(correct: np.ndarray, labels, num_classes: int) -> tuple[int, np.ndarray]:
    """GT-known Loc (%) of each class at the threshold that maximises it over all images.

    ``correct``: bool (N, T), image n's box at CAM threshold t has IoU ≥ 50 with a GT box (a
    ``BoxEvaluator.correct_at_thresholds`` row); ``labels`` (N,). Returns (the threshold index,
    the first if tied, as the evaluator picks it; float (num_classes,), NaN for a class with no
    image). Equal class sizes: the classes' mean is the split's GT-known Loc. A split-level
    figure can hide that a method wins in a few classes only."""
    correct = np.asarray(correct, bool)
    labels = np.asarray(_as_numpy(labels), np.int64).reshape(-1)
    if correct.ndim != 2 or len(correct) != len(labels):
        raise ValueError(f"correct must be (N, T) with N = {len(labels)} labels, got shape {correct.shape}")
    best = int(np.argmax(correct.sum(axis=0)))
    return best, per_class_percent(correct[:, best], labels, num_classes)


def per_class_percent(hits, labels, num_classes: int) -> np.ndarray:
    """Share (%) of each class's images whose ``hits`` entry is true; NaN for a class with no
    image."""
    labels = np.asarray(_as_numpy(labels), np.int64).reshape(-1)
    hit = np.bincount(labels, weights=np.asarray(_as_numpy(hits), bool).reshape(-1), minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hit / counts, np.nan)


class MapDiagnostics:
    """Counts of inverted maps and of maps peaking inside a GT box over a stream of batches;
    ``state_vector``/``add_state_vector`` as :class:`~fastwsol.evaluation.BoxEvaluator`'s, so a
    distributed run sums them."""

    def __init__(self) -> None:
        self.counts = np.zeros(3, np.int64)  # inverted, peak inside GT, images

    def accumulate(self, scoremaps, gt_boxes) -> None:
        self.counts += (int(inverted_maps(scoremaps, gt_boxes).sum()), int(peaks_inside_gt(scoremaps, gt_boxes).sum()),
                        len(gt_boxes))

    def state_vector(self) -> np.ndarray:
        return self.counts.copy()

    def add_state_vector(self, vector) -> None:
        vector = np.asarray(_as_numpy(vector), dtype=np.int64)
        if vector.shape != self.counts.shape:
            raise ValueError(f"state vector must have shape {self.counts.shape}, got {vector.shape}")
        self.counts += vector

    def compute(self) -> dict:
        """``inverted_pct`` and ``peak_in_gt_pct``, in percent of the images."""
        inverted, peak_inside, images = self.counts
        if images == 0:
            raise ValueError("no image accumulated")
        return {"inverted_pct": float(100.0 * inverted / images), "peak_in_gt_pct": float(100.0 * peak_inside / images)}
