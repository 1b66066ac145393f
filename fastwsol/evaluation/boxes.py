"""Score map → boxes at every CAM threshold, the OpenCV way (the protocol's reference).

This module is the literal wsolevaluation procedure (``compute_bboxes_from_scoremaps`` and
``calculate_multiple_iou``); :mod:`fastwsol.evaluation.component_tree` must agree with it
image by image.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "SCOREMAP_SIZE",
    "cam_thresholds",
    "threshold_levels",
    "multiple_iou",
    "scoremap_to_uint8",
    "scoremap_opencv",
    "contour_boxes_at_thresholds",
    "boxes_at_thresholds",
    "correct_from_boxes",
    "correct_at_thresholds_opencv",
    "resize_boxes",
]

SCOREMAP_SIZE = 224


def cam_thresholds(cam_curve_interval: float = 0.005) -> np.ndarray:
    """The CAM thresholds t ∈ {0, Δ, 2Δ, …} < 1, as wsolevaluation builds them
    (``np.arange(0, 1, cam_curve_interval)``; 200 values for Δ = 0.005)."""
    if not 0 < cam_curve_interval < 1:
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval}")
    return np.arange(0, 1, cam_curve_interval)


def threshold_levels(thresholds: np.ndarray) -> np.ndarray:
    """Integer cut levels, shape (len(thresholds), 256): ``levels[k, m] = int(t_k · m)``.

    A pixel with quantised value q is foreground at threshold k of a map whose maximum is m iff
    ``q > levels[k, m]``. Computed with the reference's own float64 product and truncation.
    """
    maxima = np.arange(256, dtype=np.uint8)
    return np.array([[int(t * m) for m in maxima] for t in thresholds], dtype=np.int64)


def multiple_iou(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """IoU matrix (num_a, num_b) of x0y0x1y1 boxes with inclusive corners:
    area = (x1 − x0 + 1)(y1 − y0 + 1); IoU = inter / (area_a + area_b − inter), 0 if that
    union is non-positive (wsolevaluation's ``calculate_multiple_iou``)."""
    a = np.asarray(box_a, dtype=np.int64)[:, None, :]
    b = np.asarray(box_b, dtype=np.int64)[None, :, :]
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    degenerate = union <= 0
    iou = inter / np.where(degenerate, 1, union)
    iou[degenerate] = 0
    return iou


def scoremap_opencv(cam: np.ndarray, size: int = SCOREMAP_SIZE) -> np.ndarray:
    """One CAM → score map, literally as wsolevaluation: ``cv2.resize(INTER_CUBIC)`` then
    ``normalize_scoremap`` (NaN or constant → zeros; subtract the min, divide by the new max).
    The reference the batched torch path (:mod:`~fastwsol.evaluation.scoremap`) is tested against."""
    cam = cv2.resize(np.asarray(cam), (size, size), interpolation=cv2.INTER_CUBIC)
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def scoremap_to_uint8(scoremap: np.ndarray) -> np.ndarray:
    """q = uint8(score · 255) with truncation (in the map's own dtype), after the reference's
    validity check (no NaN, values in [0, 1]); works on one map or a stack."""
    scoremap = np.asarray(scoremap)
    if scoremap.ndim < 2:
        raise ValueError(f"a score map must be (..., H, W), got shape {scoremap.shape}")
    if np.isnan(scoremap).any():
        raise ValueError("the score map contains NaN (normalise it first: NaN maps become zeros)")
    if scoremap.size and (scoremap.min() < 0 or scoremap.max() > 1):
        raise ValueError(
            f"score map values must lie in [0, 1], got [{scoremap.min()}, {scoremap.max()}]"
        )
    return (scoremap * 255).astype(np.uint8)


def _contours_at_thresholds(scoremap: np.ndarray, thresholds: np.ndarray):
    """Yield (contours, W, H) per threshold: cv2.threshold (strict, at int(t · max q)) then
    cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE), as wsolevaluation's
    ``compute_bboxes_from_scoremaps`` does. A uint8 map is taken as already quantised (q)."""
    if np.ndim(scoremap) != 2:
        raise ValueError(f"a score map must be 2-D, got shape {np.shape(scoremap)}")
    height, width = np.shape(scoremap)
    quantised = scoremap if np.asarray(scoremap).dtype == np.uint8 else scoremap_to_uint8(scoremap)
    scoremap_image = np.expand_dims(quantised, 2)
    for threshold in thresholds:
        _, thr_gray_heatmap = cv2.threshold(
            src=scoremap_image,
            thresh=int(threshold * np.max(scoremap_image)),
            maxval=255,
            type=cv2.THRESH_BINARY,
        )
        contours = cv2.findContours(
            image=thr_gray_heatmap, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE
        )[0]
        yield contours, width, height


def _contour_box(contour, width: int, height: int) -> list[int]:
    """boundingRect (x, y, w, h) → (x, y, min(x+w, W−1), min(y+h, H−1))."""
    x, y, w, h = cv2.boundingRect(contour)
    return [x, y, min(x + w, width - 1), min(y + h, height - 1)]


_NO_CONTOUR = np.zeros((1, 4), dtype=np.int64)


def boxes_at_thresholds(
    scoremap: np.ndarray, thresholds: np.ndarray, multi_contour: bool = True
) -> list[np.ndarray]:
    """Candidate boxes (k_t, 4) at each threshold: every contour's box (multi-contour) or
    the box of the first contour of largest cv2.contourArea (single); no contour →
    [[0, 0, 0, 0]]. ``scoremap``: floats in [0, 1], or its uint8 quantisation
    (:func:`scoremap_to_uint8`)."""
    result = []
    for contours, width, height in _contours_at_thresholds(scoremap, thresholds):
        if len(contours) == 0:
            result.append(_NO_CONTOUR)
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        result.append(np.asarray([_contour_box(c, width, height) for c in contours], np.int64))
    return result


def contour_boxes_at_thresholds(
    scoremap: np.ndarray, thresholds: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Both modes from one findContours per threshold: [(multi boxes, single box), ...]."""
    result = []
    for contours, width, height in _contours_at_thresholds(scoremap, thresholds):
        if len(contours) == 0:
            result.append((_NO_CONTOUR, _NO_CONTOUR))
            continue
        every = np.asarray([_contour_box(c, width, height) for c in contours], np.int64)
        largest = np.asarray([_contour_box(max(contours, key=cv2.contourArea), width, height)])
        result.append((every, largest))
    return result


def correct_from_boxes(
    boxes: list[np.ndarray], gt_boxes: np.ndarray, iou_thresholds: tuple[int, ...]
) -> np.ndarray:
    """Bool (len(iou_thresholds), T): max IoU of the threshold's candidates with any GT box
    ≥ δ/100 (wsolevaluation's ``BoxEvaluator.accumulate``)."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    # one IoU matrix for all thresholds' candidates, then the max within each threshold
    counts = np.array([len(b) for b in boxes])
    ious = multiple_iou(np.concatenate(boxes), gt_boxes).max(axis=1)
    best = np.maximum.reduceat(ious, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    return np.stack([best >= (delta / 100) for delta in iou_thresholds])


def correct_at_thresholds_opencv(
    scoremap: np.ndarray,
    gt_boxes: np.ndarray,
    thresholds: np.ndarray,
    iou_thresholds: tuple[int, ...] = (30, 50, 70),
    multi_contour: bool = True,
) -> np.ndarray:
    """Bool (len(iou_thresholds), len(thresholds)): is the best candidate box's IoU with any
    GT box ≥ δ/100 at this CAM threshold — the reference the fast path must equal."""
    return correct_from_boxes(boxes_at_thresholds(scoremap, thresholds, multi_contour), gt_boxes, iou_thresholds)


def resize_boxes(boxes: np.ndarray, width: int, height: int, size: int = 224) -> np.ndarray:
    """Rescale (k, 4) boxes from a width×height image to size×size with the protocol's
    truncation: x' = int(x · size / width), y' = int(y · size / height).

    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (k, 4), got {boxes.shape}")
    # wsolevaluation's resize_bbox: float(x) * size / width (multiply first), then int().
    divisors = np.array([width, height, width, height], dtype=np.float64)
    return (boxes.astype(np.float64) * size / divisors).astype(np.int64)
