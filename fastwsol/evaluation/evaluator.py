"""BoxEvaluator: MaxBoxAccV2, GT-known / Top-1 / Top-5 Loc over a stream of score maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fastwsol.evaluation.boxes import (
    SCOREMAP_SIZE,
    cam_thresholds,
    correct_at_thresholds_opencv,
    threshold_levels,
)
from fastwsol.evaluation.component_tree import (
    correct_at_thresholds_component_tree,
    normalize_and_quantize,
    quantize_scoremaps,
)
from fastwsol.evaluation.scoremap import normalize_scoremaps, upsample_cams

__all__ = ["BoxEvaluator", "BACKENDS"]

BACKENDS = ("component_tree", "opencv")
GT_KNOWN_IOU = 50
CAM_CHUNK = 128  # CAMs upsampled and quantised at a time by accumulate_cams


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class BoxEvaluator:
    """Accumulates, per IoU threshold δ and CAM threshold t, how many images have a candidate
    box with IoU ≥ δ against one of their GT boxes (docs/protocol.md).

    ``backend="component_tree"`` computes all thresholds from one component-tree pass per image
    (:mod:`~fastwsol.evaluation.component_tree`); ``"opencv"`` is the literal wsolevaluation
    loop. Both give the same counts. Counts are plain integer arrays: evaluators of disjoint
    shards :meth:`merge`, and :meth:`state_vector` / :meth:`add_state_vector` let a
    distributed run all-reduce them.
    """

    def __init__(
        self,
        iou_thresholds: Sequence[int] = (30, 50, 70),
        cam_curve_interval: float = 0.005,
        multi_contour: bool = True,
        backend: str = "component_tree",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.iou_thresholds = tuple(int(d) for d in iou_thresholds)
        if not self.iou_thresholds or any(not 0 <= d <= 100 for d in self.iou_thresholds):
            raise ValueError(f"iou_thresholds must be percentages in [0, 100], got {iou_thresholds}")
        self.cam_curve_interval = float(cam_curve_interval)
        self.cam_thresholds = cam_thresholds(self.cam_curve_interval)
        self.multi_contour = bool(multi_contour)
        self.backend = backend
        self._levels = threshold_levels(self.cam_thresholds)
        num_thresholds = len(self.cam_thresholds)
        self.correct_counts = np.zeros((len(self.iou_thresholds), num_thresholds), np.int64)
        self.top1_counts = np.zeros(num_thresholds, np.int64)  # correct at δ=50 and top-1 right
        self.top5_counts = np.zeros(num_thresholds, np.int64)
        self.num_images = 0
        self.num_with_classification = 0

    # -- accumulation -------------------------------------------------------------------
    def correct_at_thresholds(self, scoremaps, gt_boxes) -> np.ndarray:
        """Bool (N, len(iou_thresholds), T) for a batch, without accumulating."""
        maps = _as_numpy(scoremaps)
        if maps.ndim != 3:
            raise ValueError(f"score maps must be (N, H, W), got shape {maps.shape}")
        if len(gt_boxes) != len(maps):
            raise ValueError(f"{len(gt_boxes)} GT box arrays for {len(maps)} score maps")
        boxes = [np.asarray(_as_numpy(b), dtype=np.int64).reshape(-1, 4) for b in gt_boxes]
        if self.backend == "opencv":
            if not len(maps):
                return np.zeros((0, len(self.iou_thresholds), len(self.cam_thresholds)), bool)
            return np.stack([
                correct_at_thresholds_opencv(
                    m, b, self.cam_thresholds, self.iou_thresholds, self.multi_contour
                )
                for m, b in zip(maps, boxes)
            ])
        quantised = quantize_scoremaps(maps)
        return correct_at_thresholds_component_tree(
            quantised, boxes, self._levels, self.iou_thresholds, self.multi_contour
        )

    def accumulate(self, scoremaps, gt_boxes, top1_correct=None, top5_correct=None) -> None:
        """Add a batch: ``scoremaps`` (N, H, W) in [0, 1] (array or tensor), ``gt_boxes`` a
        list of (k_i, 4) integer boxes in score-map pixels, ``top1_correct`` /
        ``top5_correct`` optional length-N booleans (is the class right) for Top-1/5 Loc."""
        self._add(self.correct_at_thresholds(scoremaps, gt_boxes), top1_correct, top5_correct)

    def accumulate_cams(self, cams, gt_boxes, top1_correct=None, top5_correct=None) -> None:
        """Like :meth:`accumulate` from raw (N, h, w) CAMs of the GT class: upsample to
        224×224 (:func:`~fastwsol.evaluation.scoremap.upsample_cams`), then normalise and
        quantise in one compiled pass — the same counts as
        ``accumulate(cams_to_scoremaps(cams), ...)`` without the float score maps."""
        cams = cams if isinstance(cams, torch.Tensor) else torch.as_tensor(np.asarray(cams))
        if self.backend == "opencv":
            self.accumulate(normalize_scoremaps(upsample_cams(cams)), gt_boxes, top1_correct, top5_correct)
            return
        if cams.ndim != 3:
            raise ValueError(f"CAMs must be (N, h, w), got shape {tuple(cams.shape)}")
        if len(gt_boxes) != len(cams):
            raise ValueError(f"{len(gt_boxes)} GT box arrays for {len(cams)} CAMs")
        # Upsampled in chunks (each map's values do not depend on the chunk: checked
        # bit for bit on the benchmark's 50,000 maps) so the float32 maps stay in cache
        # instead of a (N, 224, 224) temporary per batch.
        quantised = np.empty((len(cams), SCOREMAP_SIZE, SCOREMAP_SIZE), np.uint8)
        for start in range(0, len(cams), CAM_CHUNK):
            stop = min(start + CAM_CHUNK, len(cams))
            normalize_and_quantize(upsample_cams(cams[start:stop]).cpu().numpy(), quantised[start:stop])
        boxes = [np.asarray(_as_numpy(b), dtype=np.int64).reshape(-1, 4) for b in gt_boxes]
        correct = correct_at_thresholds_component_tree(
            quantised, boxes, self._levels, self.iou_thresholds, self.multi_contour
        )
        self._add(correct, top1_correct, top5_correct)

    def _add(self, correct: np.ndarray, top1_correct, top5_correct) -> None:
        n = correct.shape[0]
        self.correct_counts += correct.sum(axis=0)
        if (top1_correct is None) != (top5_correct is None):
            raise ValueError("give both top1_correct and top5_correct, or neither")
        if top1_correct is not None:
            top1 = _as_numpy(top1_correct).astype(bool).reshape(-1)
            top5 = _as_numpy(top5_correct).astype(bool).reshape(-1)
            if len(top1) != n or len(top5) != n:
                raise ValueError(f"top1/top5_correct must have {n} entries, got {len(top1)}/{len(top5)}")
            gt_known = correct[:, self._gt_known_row()]
            self.top1_counts += (gt_known & top1[:, None]).sum(axis=0)
            self.top5_counts += (gt_known & top5[:, None]).sum(axis=0)
            self.num_with_classification += n
        self.num_images += n

    def _gt_known_row(self) -> int:
        if GT_KNOWN_IOU not in self.iou_thresholds:
            raise ValueError(f"Top-1/5 and GT-known Loc need δ={GT_KNOWN_IOU} in iou_thresholds")
        return self.iou_thresholds.index(GT_KNOWN_IOU)

    # -- combining ----------------------------------------------------------------------
    def _require_same_setup(self, other: BoxEvaluator) -> None:
        mine = (self.iou_thresholds, self.cam_curve_interval, self.multi_contour)
        theirs = (other.iou_thresholds, other.cam_curve_interval, other.multi_contour)
        if mine != theirs:
            raise ValueError(f"cannot merge evaluators with different setups: {mine} vs {theirs}")

    def merge(self, other: BoxEvaluator) -> BoxEvaluator:
        """Add another evaluator's counts (a disjoint shard of images) into this one."""
        self._require_same_setup(other)
        self.add_state_vector(other.state_vector())
        return self

    def state_vector(self) -> np.ndarray:
        """All counts as one int64 vector (sum it across processes, then add_state_vector)."""
        return np.concatenate([
            self.correct_counts.ravel(), self.top1_counts, self.top5_counts,
            [self.num_images, self.num_with_classification],
        ]).astype(np.int64)

    def add_state_vector(self, vector) -> None:
        vector = np.asarray(_as_numpy(vector), dtype=np.int64)
        expected = self.state_vector().shape
        if vector.shape != expected:
            raise ValueError(f"state vector must have shape {expected}, got {vector.shape}")
        i = self.correct_counts.size
        t = len(self.cam_thresholds)
        self.correct_counts += vector[:i].reshape(self.correct_counts.shape)
        self.top1_counts += vector[i:i + t]
        self.top5_counts += vector[i + t:i + 2 * t]
        self.num_images += int(vector[-2])
        self.num_with_classification += int(vector[-1])

    # -- metrics ------------------------------------------------------------------------
    def compute(self) -> dict:
        """Metrics in percent. BoxAcc(δ) = 100·max_t correct(δ, t)/N; MaxBoxAccV2 = mean of
        BoxAcc over the IoU thresholds; GT-known Loc = BoxAcc(50); Top-1/5 Loc are read at
        ``best_threshold``, the CAM threshold maximising GT-known Loc (the first if tied)."""
        if self.num_images == 0:
            raise ValueError("no image accumulated")
        accuracy = self.correct_counts * 100.0 / self.num_images
        box_acc = {d: float(accuracy[j].max()) for j, d in enumerate(self.iou_thresholds)}
        result = {
            "box_acc": box_acc,
            "max_box_acc_v2": float(np.mean(list(box_acc.values()))),
            "gt_known_loc": None,
            "top1_loc": None,
            "top5_loc": None,
            "best_threshold": None,
            "num_images": self.num_images,
        }
        if GT_KNOWN_IOU in self.iou_thresholds:
            best = int(np.argmax(self.correct_counts[self._gt_known_row()]))
            result["gt_known_loc"] = box_acc[GT_KNOWN_IOU]
            result["best_threshold"] = float(self.cam_thresholds[best])
            if self.num_with_classification == self.num_images:
                result["top1_loc"] = float(self.top1_counts[best] * 100.0 / self.num_images)
                result["top5_loc"] = float(self.top5_counts[best] * 100.0 / self.num_images)
            elif self.num_with_classification:
                raise ValueError(
                    f"top1/top5_correct given for {self.num_with_classification} of "
                    f"{self.num_images} images: give them for every batch or none"
                )
        return result
