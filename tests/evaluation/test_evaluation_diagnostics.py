"""Diagnostics of score maps that box metrics cannot see: inverted maps, where the peak lies,
and the single-contour figures that a ring-shaped (inverted) map cannot fool."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastwsol.evaluation import BACKENDS, BoxEvaluator, MapDiagnostics, inverted_maps, peaks_inside_gt
from fastwsol.evaluation.diagnostics import gt_masks

BOX = np.array([[80, 60, 159, 139]])  # x0, y0, x1, y1, inclusive: 80×80 pixels


def _blob(centre_x: float, centre_y: float, sigma: float = 25.0) -> np.ndarray:
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    return np.exp(-((xx - centre_x) ** 2 + (yy - centre_y) ** 2) / (2 * sigma**2))


def _correct_map() -> np.ndarray:
    return _blob(119.5, 99.5)  # centred on the box


def _ring_map() -> np.ndarray:
    """High everywhere except a hole exactly over the GT box: what an inverted CAM looks like."""
    scoremap = np.full((224, 224), 0.9, np.float32)
    scoremap[60:140, 80:160] = 0.05
    return scoremap


def test_gt_masks_are_inclusive_unions_clipped_to_the_map():
    masks = gt_masks([np.array([[0, 0, 1, 2], [220, 220, 300, 300]])], 224, 224)
    assert masks.shape == (1, 224, 224)
    assert masks[0, :3, :2].all() and masks[0].sum() == 3 * 2 + 4 * 4


def test_inverted_and_peak_on_hand_made_maps():
    maps = np.stack([_correct_map(), _ring_map(), _blob(20, 200)])  # right, inverted, off the object
    boxes = [BOX] * 3
    assert inverted_maps(maps, boxes).tolist() == [False, True, True]
    assert peaks_inside_gt(maps, boxes).tolist() == [True, False, False]
    # a torch batch gives the same answers
    assert inverted_maps(torch.from_numpy(maps), boxes).tolist() == [False, True, True]


def test_a_map_whose_boxes_cover_it_is_not_inverted():
    assert inverted_maps(np.zeros((1, 224, 224)), [np.array([[0, 0, 223, 223]])]).tolist() == [False]


def test_map_diagnostics_accumulates_and_sums_states():
    first, second = MapDiagnostics(), MapDiagnostics()
    first.accumulate(np.stack([_correct_map(), _ring_map()]), [BOX, BOX])
    second.accumulate(_correct_map()[None], [BOX])
    first.add_state_vector(second.state_vector())
    assert first.compute() == pytest.approx({"inverted_pct": 100 / 3, "peak_in_gt_pct": 200 / 3})
    with pytest.raises(ValueError, match="no image"):
        MapDiagnostics().compute()
    with pytest.raises(ValueError, match="GT box arrays"):
        first.accumulate(np.stack([_correct_map()]), [BOX, BOX])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ring_map_scores_with_multi_contour_but_not_single(backend):
    """The hole's contour outlines the GT box, so multi-contour evaluation counts the inverted
    map as a hit; the largest contour is the background frame, so single-contour does not."""
    results = {}
    for multi in (True, False):
        evaluator = BoxEvaluator(multi_contour=multi, backend=backend)
        evaluator.accumulate(np.stack([_ring_map(), _correct_map()]), [BOX, BOX])
        results[multi] = evaluator.compute()["gt_known_loc"]
    assert results[True] == 100.0  # ring and blob both localised
    assert results[False] == 50.0  # only the blob


def test_per_class_gt_known_reads_every_class_at_the_splits_best_threshold():
    from fastwsol.evaluation.diagnostics import per_class_gt_known, per_class_percent

    # rows: images; columns: CAM thresholds. Class 0 is boxed at threshold 1 only, class 1 at 0 and 2
    # in one image each; the split's best threshold is 1 (3 of 5), not a per-class optimum.
    correct = np.array(
        [[0, 1, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], bool
    )
    labels = np.array([0, 0, 0, 1, 1])
    best, per_class = per_class_gt_known(correct, labels, num_classes=3)
    assert best == 1
    assert per_class[0] == 100.0 and per_class[1] == 0.0 and np.isnan(per_class[2])  # no image of class 2
    # a tie picks the first threshold, as BoxEvaluator does
    assert per_class_gt_known(np.array([[1, 1], [0, 0]], bool), np.array([0, 1]), 2)[0] == 0
    # the per-class share of any per-image flag (reproduce: top-1), NaN for an empty class
    shares = per_class_percent(np.array([True, False, True, True]), np.array([0, 0, 1, 1]), 3)
    assert shares[0] == 50.0 and shares[1] == 100.0 and np.isnan(shares[2])
    with pytest.raises(ValueError, match=r"correct must be \(N, T\) with N = 3"):
        per_class_gt_known(correct, np.array([0, 1, 2]), 3)
