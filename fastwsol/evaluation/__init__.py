"""The wsolevaluation protocol (docs/protocol.md): score maps, boxes, BoxEvaluator, GT masks and
MaskEvaluator. It consumes the metadata that :mod:`fastwsol.data.metadata` reads."""

from fastwsol.evaluation.boxes import (
    boxes_at_thresholds,
    cam_thresholds,
    contour_boxes_at_thresholds,
    correct_at_thresholds_opencv,
    correct_from_boxes,
    multiple_iou,
    resize_boxes,
    scoremap_to_uint8,
    threshold_levels,
)
from fastwsol.evaluation.component_tree import correct_at_thresholds_component_tree
from fastwsol.evaluation.diagnostics import MapDiagnostics, inverted_maps, peaks_inside_gt
from fastwsol.evaluation.evaluator import BACKENDS, BoxEvaluator
from fastwsol.evaluation.masks import IGNORE, MASK_BACKENDS, MaskEvaluator, gt_mask, load_gt_masks
from fastwsol.evaluation.scoremap import cams_to_scoremaps, normalize_scoremaps, upsample_cams

__all__ = [
    "BACKENDS",
    "BoxEvaluator",
    "IGNORE",
    "MASK_BACKENDS",
    "MaskEvaluator",
    "MapDiagnostics",
    "boxes_at_thresholds",
    "cam_thresholds",
    "cams_to_scoremaps",
    "gt_mask",
    "load_gt_masks",
    "contour_boxes_at_thresholds",
    "correct_at_thresholds_component_tree",
    "correct_at_thresholds_opencv",
    "correct_from_boxes",
    "inverted_maps",
    "multiple_iou",
    "normalize_scoremaps",
    "peaks_inside_gt",
    "resize_boxes",
    "scoremap_to_uint8",
    "threshold_levels",
    "upsample_cams",
]
