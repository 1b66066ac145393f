"""Fast component-tree boxes vs the literal OpenCV procedure, image by image.

~2,000 score maps of many kinds (blobs, rings and holes, thin lines, plateaus with
quantisation ties, noise, constant/NaN maps, border-touching objects, tiny components,
upsampled low-resolution CAMs) against real GT boxes (CUB test and multi-box ILSVRC test
images). Each map is evaluated by the OpenCV reference once per mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastwsol.data import read_split_metadata
from fastwsol.evaluation import (
    BoxEvaluator,
    boxes_at_thresholds,
    cam_thresholds,
    cams_to_scoremaps,
    contour_boxes_at_thresholds,
    correct_at_thresholds_component_tree,
    correct_at_thresholds_opencv,
    correct_from_boxes,
    multiple_iou,
    resize_boxes,
    scoremap_to_uint8,
    threshold_levels,
)

SIZE = 224
THRESHOLDS = cam_thresholds(0.005)
LEVELS = threshold_levels(THRESHOLDS)
YY, XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)


def _blob(rng, cx=None, cy=None, scale=None):
    cx = rng.uniform(-20, SIZE + 20) if cx is None else cx
    cy = rng.uniform(-20, SIZE + 20) if cy is None else cy
    sx, sy = (rng.uniform(3, 60, 2) if scale is None else scale)
    angle = rng.uniform(0, np.pi)
    u = (XX - cx) * np.cos(angle) + (YY - cy) * np.sin(angle)
    v = -(XX - cx) * np.sin(angle) + (YY - cy) * np.cos(angle)
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def _ring(rng):
    cx, cy = rng.uniform(20, SIZE - 20, 2)
    radius, width = rng.uniform(5, 90), rng.uniform(0.6, 12)
    r = np.hypot(XX - cx, YY - cy)
    m = np.exp(-0.5 * ((r - radius) / width) ** 2)
    if rng.random() < 0.5:  # a blob inside the hole: a component nested in a hole
        m = np.maximum(m, _blob(rng, cx, cy, rng.uniform(1, radius / 3 + 1, 2)) * rng.uniform(0.3, 1))
    return m


def _thin(rng):
    m = np.zeros((SIZE, SIZE))
    for _ in range(rng.integers(1, 8)):
        x0, y0, x1, y1 = rng.integers(-10, SIZE + 10, 4)
        n = max(abs(x1 - x0), abs(y1 - y0)) + 1
        xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, SIZE - 1)
        ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, SIZE - 1)
        m[ys, xs] = np.maximum(m[ys, xs], rng.uniform(0.2, 1))
    return m


def _grid(rng):
    """Lattices of 1-px lines: many holes, some touching diagonally, and diagonal walls."""
    step = rng.integers(2, 6)
    m = ((XX % step == 0) | (YY % step == 0)).astype(float)
    if rng.random() < 0.5:
        m = ((XX + YY) % step == 0) | ((XX - YY) % step == 0)
        m = m.astype(float)
    x0, y0 = rng.integers(0, SIZE - 40, 2)
    w, h = rng.integers(8, 40, 2)  # small patches: every hole is a contour for OpenCV to trace
    out = np.zeros((SIZE, SIZE))
    out[y0:y0 + h, x0:x0 + w] = m[y0:y0 + h, x0:x0 + w] * rng.uniform(0.3, 1)
    return np.maximum(out, rng.random((SIZE, SIZE)) < 0.0005)


def _plateaus(rng):
    """Piecewise-constant maps from a low-res grid: large flat zones, many quantisation ties."""
    cells = rng.integers(2, 17)
    levels = rng.integers(2, 6)
    low = rng.integers(0, levels, (cells, cells)) / (levels - 1)
    idx = (np.arange(SIZE) * cells) // SIZE
    return low[np.ix_(idx, idx)]


def _noise(rng):
    m = np.zeros((SIZE, SIZE))
    x0, y0 = rng.integers(0, SIZE - 30, 2)
    w, h = rng.integers(6, 40, 2)
    m[y0:y0 + h, x0:x0 + w] = rng.random((SIZE, SIZE))[y0:y0 + h, x0:x0 + w]
    return np.maximum(m, _blob(rng) * rng.uniform(0, 1))


def _pixels(rng):
    """Isolated pixels and 2-px specks: contours of area 0 and single-contour ties."""
    m = np.zeros((SIZE, SIZE))
    n = rng.integers(1, 12)
    ys, xs = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
    m[ys, xs] = rng.choice([0.5, 1.0], n)
    m[np.clip(ys + 1, 0, SIZE - 1), xs] *= rng.random() < 0.5
    return m


def _border(rng):
    side = rng.integers(4)
    c = [(rng.uniform(0, SIZE), 0), (rng.uniform(0, SIZE), SIZE - 1), (0, rng.uniform(0, SIZE)),
         (SIZE - 1, rng.uniform(0, SIZE))][side]
    m = _blob(rng, c[0], c[1])
    if rng.random() < 0.5:
        m[:, 0] = np.maximum(m[:, 0], rng.uniform(0.2, 1))  # a line along the frame
    return m


def _fitted(rng, gt):
    """Blobs shaped like a GT box, so IoU crosses 0.3/0.5/0.7 at some CAM threshold."""
    x0, y0, x1, y1 = gt[rng.integers(len(gt))]
    m = _blob(rng, (x0 + x1) / 2 + rng.normal(0, 8), (y0 + y1) / 2 + rng.normal(0, 8),
              (max(1.0, (x1 - x0) / rng.uniform(2, 5)), max(1.0, (y1 - y0) / rng.uniform(2, 5))))
    if rng.random() < 0.5:
        m = np.maximum(m, _blob(rng) * rng.uniform(0.2, 1))
    return m


def _lowres_cam(rng):
    s = int(rng.choice([7, 14, 28]))
    cam = torch.from_numpy(rng.standard_normal((1, s, s)).astype(np.float32))
    if rng.random() < 0.5:
        cam = cam.relu() ** 2
    return cams_to_scoremaps(cam)[0].numpy()


def _degenerate(rng):
    kind = rng.integers(4)
    if kind == 0:
        return np.zeros((SIZE, SIZE))
    if kind == 1:
        return np.ones((SIZE, SIZE))
    if kind == 2:
        return np.full((SIZE, SIZE), rng.uniform(0, 1))
    cam = torch.from_numpy(rng.standard_normal((1, 14, 14)).astype(np.float32))
    cam[0, rng.integers(14), rng.integers(14)] = float("nan")
    return cams_to_scoremaps(cam)[0].numpy()  # NaN → zeros


GENERATORS = [_blob, _ring, _thin, _grid, _plateaus, _noise, _pixels, _border, _lowres_cam]


def _normalise(m, rng):
    m = np.asarray(m, dtype=np.float64)
    if rng.random() < 0.15:  # small noise on top of structure: ragged level sets
        m = m + (rng.random(m.shape) < 0.02) * rng.uniform(0, 0.05)
    m = m - m.min()
    if m.max() > 0:
        m = m / m.max()
    dtype = np.float32 if rng.random() < 0.7 else np.float64
    return m.astype(dtype)


@pytest.fixture(scope="module")
def real_gt_boxes(wsol_metadata_root):
    """GT boxes in 224 coordinates: CUB test and ILSVRC test images with several boxes."""
    boxes = []
    for dataset, keep_multi in (("CUB", False), ("ILSVRC", True)):
        meta = read_split_metadata(wsol_metadata_root, dataset, "test")
        for i in range(len(meta)):
            if keep_multi and len(meta.boxes[i]) < 2 and i % 7:
                continue
            w, h = meta.sizes[i]
            boxes.append(resize_boxes(meta.boxes[i], int(w), int(h)))
            if len(boxes) >= (600 if dataset == "CUB" else 1200):
                break
    return boxes


def _zoo(real_gt_boxes, count, seed):
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    for i in range(count):
        gt = real_gt_boxes[rng.integers(len(real_gt_boxes))]
        kind = i % (len(GENERATORS) + 3)
        if kind < len(GENERATORS):
            m = GENERATORS[kind](rng)
        elif kind == len(GENERATORS):
            m = _degenerate(rng)
        else:
            m = _fitted(rng, gt)
        if kind != len(GENERATORS):
            m = _normalise(m, rng)
        maps.append(m)
        gts.append(gt)
    return maps, gts


@pytest.fixture(scope="module")
def zoo(real_gt_boxes):
    """2,000 maps with GT boxes and the OpenCV reference in both modes (one findContours
    call per threshold serves both)."""
    maps, gts = _zoo(real_gt_boxes, 2000, seed=1)
    multi, single = [], []
    for m, g in zip(maps, gts):
        pairs = contour_boxes_at_thresholds(m, THRESHOLDS)
        multi.append(correct_from_boxes([every for every, _ in pairs], g, (30, 50, 70)))
        single.append(correct_from_boxes([largest for _, largest in pairs], g, (30, 50, 70)))
    return maps, gts, {True: np.stack(multi), False: np.stack(single)}


@pytest.mark.parametrize("multi_contour", [True, False], ids=["multi", "single"])
def test_fast_equals_opencv_image_by_image(zoo, multi_contour):
    maps, gts, reference = zoo
    reference = reference[multi_contour]
    assert len(maps) >= 2000
    assert sum(len(g) > 1 for g in gts) > 100  # multi-box images are represented
    q = np.stack([scoremap_to_uint8(m) for m in maps])
    fast = correct_at_thresholds_component_tree(q, gts, LEVELS, (30, 50, 70), multi_contour)
    # the zoo must exercise both outcomes at every IoU threshold
    assert reference.any(axis=(0, 2)).all() and not reference.all(axis=(0, 2)).any()
    mismatched = np.flatnonzero((fast != reference).any(axis=(1, 2)))
    assert mismatched.size == 0, f"fast path differs from OpenCV on maps {mismatched[:10]}"


def _fast_and_opencv(m, gt, iou, multi_contour):
    """correct_at_thresholds_component_tree and of OpenCV for one map and its GT boxes."""
    gt = np.array(gt)
    fast = correct_at_thresholds_component_tree(scoremap_to_uint8(m)[None], [gt], LEVELS, (iou,), multi_contour)[0]
    return fast, correct_at_thresholds_opencv(m, gt, THRESHOLDS, (iou,), multi_contour)


def test_hole_contours_are_reported_and_matched():
    """A ring whose hole box is the only box matching the GT: the hole contour counts."""
    m = np.zeros((SIZE, SIZE), np.float32)
    m[50:150, 50:150] = 1
    m[60:140, 60:140] = 0  # hole 60..139 → contour rect from 59 to 140
    m[0:5, 0:223] = 1  # a wide stripe so the outer box of the ring is not the only one
    gt = np.array([[59, 59, 141, 141]])
    boxes = boxes_at_thresholds(m, THRESHOLDS[:1])[0]
    assert [59, 59, 141, 141] in boxes.tolist()
    fast, ref = _fast_and_opencv(m, gt, 70, True)
    assert ref[0, 0] and (fast == ref).all()


@pytest.mark.parametrize("hole_w, hole_h, gt_w, gt_h", [(37, 17, 80, 20), (37, 37, 40, 80)])
@pytest.mark.parametrize("speck", [False, True], ids=["one-hole", "and-a-1px-hole"])
def test_hole_box_at_the_exact_size_bound(hole_w, hole_h, gt_w, gt_h, speck):
    """The hole sweep runs only where a hole box could be large enough: a component's crack
    length (4-adjacent pairs of its pixel and another) bounds its holes' widths + heights,
    and a GT box bounds from below the width + height of any box matching it. A rectangular
    ring meets the first bound with equality, and the GT box is one the hole box matches at
    exactly IoU 0.5 with the least width + height any matching box can have: a bound one
    pixel too tight (or one that miscounts a second hole) drops the hit."""
    x0 = y0 = 100
    m = np.zeros((SIZE, SIZE), np.float32)
    m[y0 - 3:y0 + hole_h + 3, x0 - 3:x0 + hole_w + 3] = 1  # a ring 3 px thick
    m[y0:y0 + hole_h, x0:x0 + hole_w] = 0
    if speck:
        m[y0 - 2, x0 + 5] = 0  # a one-pixel hole in the ring's band
    box = [x0 - 1, y0 - 1, x0 + hole_w + 1, y0 + hole_h + 1]  # the hole contour's box: 3 wider, 3 taller
    assert box in boxes_at_thresholds(m, THRESHOLDS[:1])[0].tolist()
    gt = [[x0 - 1, y0 - 1, x0 - 2 + gt_w, y0 - 2 + gt_h]]
    assert multiple_iou(np.array([box]), np.array(gt))[0, 0] == 0.5
    fast, ref = _fast_and_opencv(m, gt, 50, True)
    assert ref[0, 0] and (fast == ref).all()
    filled = m.copy()
    filled[y0:y0 + hole_h, x0:x0 + hole_w] = 1
    assert not _fast_and_opencv(filled, gt, 50, True)[1][0, 0]  # the outer box alone does not match


@pytest.mark.parametrize("opens_into", ["frame", "enclosing-hole"])
def test_hole_that_opens_stops_counting(opens_into):
    """A ring whose hole box alone matches the GT, with a notch of lower score through its
    wall: below the notch's score the hole is enclosed and counts; above it the hole joins
    the background outside the ring (the frame's component, or the hole of a ring around
    it), and its hit must go. A ring beside it, with an arm under it, has a hole large
    enough and a box over the GT box at every threshold, so the hole sweep runs to the top."""
    m = np.zeros((SIZE, SIZE), np.float32)
    m[0:221, 160:221] = 1
    m[5:216, 165:216] = 0  # the ring beside ...
    m[216:221, 10:160] = 1  # ... and its arm
    if opens_into == "enclosing-hole":
        m[35:156, 35:156] = 1
        m[40:151, 40:151] = 0
    m[70:131, 70:131] = 1
    m[78:123, 78:123] = 0  # hole 78..122 → rect 77..123; the smaller hole, the one merged away
    m[70:78, 98:102] = 0.5  # the notch through the top wall
    gt = [[77, 77, 124, 124]]
    fast, ref = _fast_and_opencv(m, gt, 70, True)
    assert ref[0, 0] and not ref[0, -1] and (fast == ref).all()


def test_single_contour_tie_picks_opencv_first_max():
    """Two single pixels (contourArea 0 each): OpenCV lists the later one (raster order)
    first, so single-contour keeps it; the GT matches only that one."""
    m = np.zeros((SIZE, SIZE), np.float32)
    m[20, 30] = 1
    m[100, 10] = 1
    first_listed = boxes_at_thresholds(m, THRESHOLDS[:1], multi_contour=False)[0]
    assert first_listed.tolist() == [[10, 100, 11, 101]]
    for gt in ([[10, 100, 11, 101]], [[30, 20, 31, 21]]):
        fast, ref = _fast_and_opencv(m, gt, 50, False)
        assert (fast == ref).all()


def test_single_contour_compares_enclosed_areas_of_rings():
    """contourArea counts what a contour encloses. A thick ring (more pixels of its own) and
    a thin ring whose enclosed area lies between the thick ring's own pixels and its
    enclosed area: OpenCV keeps the thick ring. The fast path must not decide from the thick
    ring's own pixels, a lower bound of its area."""
    m = np.zeros((SIZE, SIZE), np.float32)
    m[10:90, 10:90] = 1
    m[20:80, 20:80] = 0  # thick ring: ~2,800 px of its own, encloses ~6,200
    m[120:190, 120:190] = 1
    m[121:189, 121:189] = 0  # thin ring: ~280 px of its own, encloses ~4,800
    largest = boxes_at_thresholds(m, THRESHOLDS[:1], multi_contour=False)[0]
    assert largest.tolist() == [[10, 10, 90, 90]]
    for gt in ([[10, 10, 90, 90]], [[120, 120, 190, 190]]):
        fast, ref = _fast_and_opencv(m, gt, 70, False)
        assert (fast == ref).all()


def test_no_foreground_gives_zero_box():
    m = np.zeros((SIZE, SIZE), np.float32)
    assert boxes_at_thresholds(m, THRESHOLDS[:2])[1].tolist() == [[0, 0, 0, 0]]
    gt = np.array([[0, 0, 0, 0]])
    fast = correct_at_thresholds_component_tree(scoremap_to_uint8(m)[None], [gt], LEVELS, (50,), True)[0]
    assert fast.all()  # IoU((0,0,0,0), (0,0,0,0)) = 1 at every threshold, as in the reference


def test_multiple_iou_inclusive_convention():
    iou = multiple_iou(np.array([[0, 0, 9, 9], [0, 0, 0, 0]]), np.array([[5, 5, 14, 14], [20, 20, 19, 10]]))
    assert iou[0, 0] == pytest.approx(25 / 175)
    assert iou[1, 0] == 0 and iou[0, 1] == 0  # non-positive union → 0


def test_evaluator_backends_merge_and_metrics(real_gt_boxes):
    maps, gts = _zoo(real_gt_boxes, 48, seed=7)
    rng = np.random.default_rng(0)
    top1 = rng.random(48) < 0.7
    top5 = top1 | (rng.random(48) < 0.5)
    fast = BoxEvaluator()
    fast.accumulate(np.stack(maps[:20]).astype(np.float32), gts[:20], top1[:20], top5[:20])
    second = BoxEvaluator()
    second.accumulate(torch.from_numpy(np.stack(maps[20:]).astype(np.float32)), gts[20:], top1[20:], top5[20:])
    fast.merge(second)
    reference = BoxEvaluator(backend="opencv")
    reference.accumulate(np.stack(maps).astype(np.float32), gts, top1, top5)
    assert (fast.correct_counts == reference.correct_counts).all()
    assert fast.correct_counts.shape == (3, 200)
    result = fast.compute()
    assert result == reference.compute()
    accuracy = reference.correct_counts * 100.0 / 48
    assert result["box_acc"] == {d: accuracy[j].max() for j, d in enumerate((30, 50, 70))}
    assert result["max_box_acc_v2"] == pytest.approx(accuracy.max(axis=1).mean())
    best = int(np.argmax(reference.correct_counts[1]))
    assert result["best_threshold"] == THRESHOLDS[best]
    per_image = reference.correct_at_thresholds(np.stack(maps).astype(np.float32), gts)[:, 1, best]
    assert result["top1_loc"] == pytest.approx(100 * (per_image & top1).mean())
    assert result["top5_loc"] == pytest.approx(100 * (per_image & top5).mean())
    assert result["num_images"] == 48
    summed = BoxEvaluator()
    summed.add_state_vector(fast.state_vector())
    assert summed.compute() == result


def test_evaluator_rejects_bad_input():
    ev = BoxEvaluator()
    with pytest.raises(ValueError, match="NaN"):
        ev.accumulate(np.full((1, SIZE, SIZE), np.nan, np.float32), [np.array([[0, 0, 5, 5]])])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.accumulate(np.full((1, SIZE, SIZE), 2, np.float32), [np.array([[0, 0, 5, 5]])])
    with pytest.raises(ValueError, match="GT box arrays"):
        ev.accumulate(np.zeros((2, SIZE, SIZE), np.float32), [np.array([[0, 0, 5, 5]])])
    with pytest.raises(ValueError, match="backend"):
        BoxEvaluator(backend="gpu")
    with pytest.raises(ValueError, match="different setups"):
        ev.merge(BoxEvaluator(multi_contour=False))


def test_resize_boxes_truncates_like_wsolevaluation():
    boxes = np.array([[45, 49, 499, 162], [0, 0, 1, 1]])
    expected = [[int(x * 224 / 500), int(y * 224 / 375), int(x1 * 224 / 500), int(y1 * 224 / 375)]
                for x, y, x1, y1 in boxes.tolist()]
    assert resize_boxes(boxes, 500, 375).tolist() == expected == [[20, 29, 223, 96], [0, 0, 0, 0]]
    assert resize_boxes(boxes, 500, 375).dtype == np.int64
    with pytest.raises(ValueError, match="shape"):
        resize_boxes(np.zeros(4), 10, 10)
