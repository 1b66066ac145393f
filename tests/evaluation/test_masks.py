"""GT masks from PNGs, the mask evaluator's two backends, PxAP and PIoU on hand-computable maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fastwsol.data import MaskAnnotation
from fastwsol.evaluation import IGNORE, MaskEvaluator, gt_mask, load_gt_masks


def _png(path, array) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(array, np.uint8))
    return str(path)


# -- GT masks ------------------------------------------------------------------------------

def test_gt_mask_nearest_resize_threshold_and_union(tmp_path):
    # 2x2 -> 4x4 nearest: each pixel becomes a 2x2 block; any value > 0.5 (here 1) is foreground
    first = _png(tmp_path / "m1.png", [[0, 1], [0, 0]])
    second = _png(tmp_path / "m2.png", [[0, 0], [255, 0]])
    expected = np.kron(np.array([[0, 1], [1, 0]], np.uint8), np.ones((2, 2), np.uint8))
    mask = gt_mask([first, second], size=4)
    assert mask.dtype == np.uint8 and mask.tolist() == expected.tolist()


def test_gt_mask_downsizes_with_nearest(tmp_path):
    source = np.zeros((448, 448), np.uint8)
    source[100:300, 50:200] = 255
    mask = gt_mask([_png(tmp_path / "m.png", source)])
    expected = cv2.resize(source.astype(np.float32), (224, 224), interpolation=cv2.INTER_NEAREST) > 0.5
    assert mask.shape == (224, 224) and (mask == expected).all() and 0 < mask.sum() < 224 * 224


def test_gt_mask_ignore_minus_foreground(tmp_path):
    instance = _png(tmp_path / "m.png", [[255, 0, 0], [0, 0, 0], [0, 0, 0]])
    ignore = _png(tmp_path / "ignore.png", [[255, 255, 0], [255, 0, 0], [0, 0, 0]])
    mask = gt_mask([instance], ignore, size=3)
    assert mask.tolist() == [[1, IGNORE, 0], [IGNORE, 0, 0], [0, 0, 0]]
    assert gt_mask([instance], None, size=3).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_gt_mask_names_missing_and_unreadable_files(tmp_path):
    good = _png(tmp_path / "m.png", [[255]])
    with pytest.raises(FileNotFoundError, match=r"mask file not found: .*absent.png"):
        gt_mask([good, tmp_path / "absent.png"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"cannot read mask image .*broken.png"):
        gt_mask([good], tmp_path / "broken.png")
    with pytest.raises(ValueError, match="at least one instance mask"):
        gt_mask([])


def test_load_gt_masks_reads_annotations_under_the_mask_dir(tmp_path):
    _png(tmp_path / "test/c/1_m_a.png", [[255, 0], [0, 0]])
    _png(tmp_path / "test/c/1_m_b.png", [[0, 0], [0, 255]])
    _png(tmp_path / "test/c/1_ignore.png", [[0, 255], [255, 255]])
    _png(tmp_path / "test/c/2_m_a.png", [[0, 0], [255, 0]])
    annotations = [
        MaskAnnotation(("test/c/1_m_a.png", "test/c/1_m_b.png"), "test/c/1_ignore.png"),
        MaskAnnotation(("test/c/2_m_a.png",), None),
    ]
    masks = load_gt_masks(tmp_path, annotations, size=2)
    assert masks.dtype == np.uint8
    assert masks.tolist() == [[[1, IGNORE], [IGNORE, 1]], [[0, 0], [1, 0]]]
    assert load_gt_masks(tmp_path, [], size=2).shape == (0, 2, 2)


# -- PxAP / PIoU on hand-computable maps ---------------------------------------------------

def _mask_and_map():
    """4 foreground pixels scored 0.875, 0.875, 0.375, 0.375; 4 background pixels scored 0.625,
    0, 0, 0; 2 ignored pixels scored 1 (counted nowhere)."""
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0, IGNORE, IGNORE]], np.uint8)
    scores = np.array([[0.875, 0.875, 0.375, 0.375, 0.625, 0, 0, 0, 1, 1]], np.float32)
    return scores[None], mask[None]


def test_known_precision_recall():
    """Thresholds 0, 1/8, ..., 7/8 (exact in binary). From the top: at t in (5/8, 7/8] tp=2, fp=0
    (P=1, R=1/2); (3/8, 5/8]: tp=2, fp=1; (0, 3/8]: tp=4, fp=1 (P=4/5, R=1); t=0: tp=4, fp=4.
    PxAP = 1·1/2 + 4/5·1/2 = 90 %. IoU = tp/(#fg + fp): 2/4, 2/5, 4/5, 4/8 -> PIoU 80 % first
    reached at t=1/8."""
    scores, mask = _mask_and_map()
    for backend in ("histogram", "reference"):
        evaluator = MaskEvaluator(cam_curve_interval=0.125, backend=backend)
        evaluator.accumulate(scores, mask)
        result = evaluator.compute()
        assert result["pxap"] == pytest.approx(90.0, abs=1e-12)
        assert result["piou"] == pytest.approx(80.0, abs=1e-12)
        assert result["best_threshold"] == 0.125 and result["num_images"] == 1


def test_perfect_map():
    """Score 1 on the foreground, 0 elsewhere: PxAP 100; IoU 1 from the second threshold up
    (the first, t=0, takes every pixel)."""
    rng = np.random.default_rng(1)
    mask = (rng.random((3, 16, 16)) < 0.3).astype(np.uint8)
    mask[0, 0, :4] = IGNORE
    evaluator = MaskEvaluator(cam_curve_interval=0.001)
    evaluator.accumulate((mask == 1).astype(np.float32), mask)
    result = evaluator.compute()
    assert result["pxap"] == 100.0 and result["piou"] == 100.0 and result["best_threshold"] == 0.001


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_map(value):
    """Every pixel scored alike: one precision (the foreground fraction) over the whole recall."""
    mask = np.zeros((2, 10, 10), np.uint8)
    mask[:, :3, :] = 1  # 60 of 200 pixels
    mask[:, 9, :] = IGNORE
    evaluator = MaskEvaluator()
    evaluator.accumulate(np.full(mask.shape, value, np.float64), mask)
    result = evaluator.compute()
    fraction = 60 / 180
    assert result["pxap"] == pytest.approx(100 * fraction, rel=1e-12)
    assert result["piou"] == pytest.approx(100 * fraction, rel=1e-12) and result["best_threshold"] == 0.0


def test_compute_errors():
    evaluator = MaskEvaluator()
    with pytest.raises(ValueError, match="no image accumulated"):
        evaluator.compute()
    evaluator.accumulate(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(RuntimeError, match="No positive ground truth"):
        evaluator.compute()


# -- the two backends -----------------------------------------------------------------------

def _random_maps(rng, shape, dtype, edges):
    """Random scores with many exactly on bin edges (as float32 or float64), 0.0 and 1.0."""
    maps = rng.random(shape)
    flat = maps.reshape(-1)
    n = flat.size
    picks = rng.choice(n, size=n // 2, replace=False)
    flat[picks[: n // 4]] = rng.choice(edges[edges <= 1], n // 4)
    flat[picks[n // 4: n // 4 + n // 16]] = 0.0
    flat[picks[n // 4 + n // 16: n // 4 + n // 8]] = 1.0
    # neighbours of the edges, one float step on either side
    near = picks[n // 4 + n // 8:]
    flat[near] = np.nextafter(rng.choice(edges[edges <= 1], len(near)), rng.choice([-1.0, 2.0], len(near)))
    return np.clip(maps, 0, 1).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("interval", [0.001, 0.005, 0.01, 0.1, 0.3])
def test_histogram_backend_counts_equal_the_reference(dtype, interval):
    rng = np.random.default_rng(int(interval * 1000) + (dtype == np.float32))
    fast = MaskEvaluator(interval, backend="histogram")
    reference = MaskEvaluator(interval, backend="reference")
    counted = 0
    for _ in range(2):
        maps = _random_maps(rng, (3, 40, 50), dtype, fast.bin_edges)
        masks = rng.choice(np.array([0, 1, IGNORE], np.uint8), size=maps.shape, p=[0.5, 0.35, 0.15])
        fast.accumulate(maps, masks)
        reference.accumulate(maps, masks)
        counted += int((masks != IGNORE).sum())
    assert fast.foreground_hist.dtype == np.int64
    np.testing.assert_array_equal(fast.foreground_hist, reference.foreground_hist)
    np.testing.assert_array_equal(fast.background_hist, reference.background_hist)
    assert fast.foreground_hist.sum() + fast.background_hist.sum() == counted
    assert fast.compute() == reference.compute()


def test_scores_on_edges_fall_in_the_bin_they_open():
    """A score equal to t_k is counted at threshold t_k; 1.0 lies in [1, 2), above every t."""
    evaluator = MaskEvaluator(0.25)
    scores = np.array([[[0.0, 0.25, 0.5, 0.75, 1.0]]], np.float32)
    evaluator.accumulate(scores, np.ones(scores.shape, np.uint8))
    assert evaluator.foreground_hist.tolist() == [1, 1, 1, 1, 1, 0]


def test_tensor_and_half_precision_inputs():
    rng = np.random.default_rng(4)
    maps = rng.random((2, 8, 8)).astype(np.float32)
    masks = rng.choice(np.array([0, 1, IGNORE], np.uint8), size=maps.shape)
    from_numpy, from_tensor = MaskEvaluator(), MaskEvaluator()
    from_numpy.accumulate(maps, masks)
    from_tensor.accumulate(torch.from_numpy(maps), torch.from_numpy(masks))
    np.testing.assert_array_equal(from_numpy.state_vector(), from_tensor.state_vector())
    half = torch.from_numpy(maps).to(torch.bfloat16)
    for backend in ("histogram", "reference"):
        evaluator = MaskEvaluator(backend=backend)
        evaluator.accumulate(half, masks)
        evaluator.accumulate(maps.astype(np.float16), masks)
        assert evaluator.num_images == 4
    expected = MaskEvaluator(backend="reference")
    expected.accumulate(half.float().numpy(), masks)
    expected.accumulate(maps.astype(np.float16).astype(np.float32), masks)
    np.testing.assert_array_equal(evaluator.state_vector(), expected.state_vector())


@pytest.mark.parametrize(
    "maps, masks, error, match",
    [
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), ValueError, r"\(N, H, W\).*got shape \(4, 4\)"),
        (np.zeros((2, 4, 4), np.int64), np.zeros((2, 4, 4), np.uint8), ValueError, "floating point"),
        (np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 5), np.uint8), ValueError, r"shape \(2, 4, 4\), got \(2, 4, 5\)"),
        (np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.int64), ValueError, "must be uint8"),
        (np.zeros((2, 4, 4), np.float32), np.full((2, 4, 4), 7, np.uint8), ValueError, r"GT mask 0 holds values other than 0, 1 and 255: \[7\]"),
    ],
    ids=["2-d", "integer-maps", "shape-mismatch", "mask-dtype", "mask-values"],
)
def test_bad_batches_are_named(maps, masks, error, match):
    with pytest.raises(error, match=match):
        MaskEvaluator().accumulate(maps, masks)


@pytest.mark.parametrize("bad, match", [(np.nan, r"score map 2 has NaN"), (1.5, r"score map 2 has values in \[0.0, 1.5\]"),
                                        (-0.25, r"score map 2 has values in \[-0.25, 0.0\]")])
def test_out_of_range_map_is_named(bad, match):
    maps = np.zeros((3, 4, 4), np.float32)
    maps[2, 1, 1] = bad
    for backend in ("histogram", "reference"):
        with pytest.raises(ValueError, match=match):
            MaskEvaluator(backend=backend).accumulate(maps, np.zeros(maps.shape, np.uint8))


# -- merging (distributed evaluation) ----------------------------------------------------------

def test_merge_equals_one_evaluator_over_both_shards():
    rng = np.random.default_rng(5)
    maps = rng.random((6, 12, 12)).astype(np.float32)
    masks = rng.choice(np.array([0, 1, IGNORE], np.uint8), size=maps.shape)
    whole, first, second = MaskEvaluator(0.01), MaskEvaluator(0.01), MaskEvaluator(0.01, backend="reference")
    whole.accumulate(maps, masks)
    first.accumulate(maps[:4], masks[:4])
    second.accumulate(maps[4:], masks[4:])
    merged = first.merge(second)
    assert merged is first
    np.testing.assert_array_equal(merged.state_vector(), whole.state_vector())
    assert merged.compute() == whole.compute() and merged.num_images == 6
    summed = MaskEvaluator(0.01)
    summed.add_state_vector(torch.from_numpy(whole.state_vector()))
    assert summed.compute() == whole.compute()
    with pytest.raises(ValueError, match="cam_curve_interval"):
        whole.merge(MaskEvaluator(0.005))
    with pytest.raises(ValueError, match="state vector must have shape"):
        whole.add_state_vector(np.zeros(3, np.int64))


# -- compute against an independent transcription of wsolevaluation's --------------------------

def _benchmark_pxap(foreground_hist, background_hist):
    """wsolevaluation's PxAP re-derived point by point: walk the thresholds from the top bin
    down, and add precision × recall gain at each point that predicts something."""
    bins = len(foreground_hist)
    total_foreground = float(sum(foreground_hist))
    area, tp, fp, previous_recall = 0.0, 0.0, 0.0, 0.0
    for position, bin_index in enumerate(range(bins - 1, -1, -1)):
        tp += float(foreground_hist[bin_index])
        fp += float(background_hist[bin_index])
        recall = tp / total_foreground
        if position >= 1 and tp + fp != 0:
            area += tp / (tp + fp) * (recall - previous_recall)
        previous_recall = recall
    return 100 * area


def _pixel_iou(foreground_hist, background_hist, thresholds):
    """max over t_k of tp/(tp + fp + fn), by direct sums over the bins at or above k."""
    total_foreground = sum(foreground_hist)
    best, best_t = -1.0, None
    for k, t in enumerate(thresholds):
        tp, fp = sum(foreground_hist[k:]), sum(background_hist[k:])
        iou = tp / (tp + fp + (total_foreground - tp))
        if iou > best:
            best, best_t = iou, t
    return 100 * best, best_t


@pytest.mark.parametrize("seed", range(6))
def test_compute_matches_an_independent_transcription(seed):
    rng = np.random.default_rng(seed)
    evaluator = MaskEvaluator(cam_curve_interval=[0.001, 0.01, 0.05][seed % 3])
    bins = len(evaluator.foreground_hist)
    foreground = rng.integers(0, 50, bins) * (rng.random(bins) < 0.3)
    background = rng.integers(0, 80, bins) * (rng.random(bins) < 0.5)
    foreground[rng.integers(bins - 2)] += 1  # some foreground below the 1.0 bin
    if seed % 2:
        foreground[-3:] = background[-3:] = 0  # nothing at the top: tp + fp == 0 there
    evaluator.foreground_hist += foreground
    evaluator.background_hist += background
    evaluator.num_images = 1
    result = evaluator.compute()
    assert result["pxap"] == pytest.approx(_benchmark_pxap(foreground.tolist(), background.tolist()), rel=1e-12)
    piou, best_t = _pixel_iou(foreground.tolist(), background.tolist(), evaluator.cam_thresholds.tolist())
    assert result["piou"] == pytest.approx(piou, rel=1e-12) and result["best_threshold"] == best_t


@pytest.mark.parametrize("guess_scale", [0.0, 0.37, 1000.0, 1e6])
def test_binning_is_exact_whatever_the_first_guess(guess_scale):
    """The compiled pass's first guess of the bin only sets its speed: with guesses far off in
    either direction it still walks to np.histogram's bin (edges, 0.0 and 1.0 included)."""
    from fastwsol.evaluation.masks import _add_histograms

    rng = np.random.default_rng(7)
    edges = MaskEvaluator(0.001).bin_edges
    for dtype in (np.float32, np.float64):
        scores = _random_maps(rng, (4000,), dtype, edges)
        counts = np.zeros((2, len(edges) - 1), np.int64)
        _add_histograms(scores, np.ones(len(scores), np.uint8), edges, guess_scale, counts)
        np.testing.assert_array_equal(counts[1], np.histogram(scores, bins=edges)[0])
        assert counts[0].sum() == 0
