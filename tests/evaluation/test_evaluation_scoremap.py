"""Score maps: torch bicubic vs cv2.resize(INTER_CUBIC), and min–max normalisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fastwsol.evaluation import cams_to_scoremaps, normalize_scoremaps, scoremap_to_uint8, upsample_cams
from fastwsol.evaluation.boxes import scoremap_opencv


@pytest.mark.parametrize("size", [7, 14, 28])
def test_upsampling_matches_opencv_inter_cubic(size):
    """Tolerance: |torch − cv2| ≤ 1e-6 · max|cv2| (float32 rounding only). After
    normalisation and uint8 quantisation, at most 1e-4 of the pixels may differ, by 1 level
    (a value within rounding of a multiple of 1/255)."""
    rng = np.random.default_rng(size)
    cams = (rng.standard_normal((64, size, size)) * rng.uniform(0.01, 100, (64, 1, 1))).astype(np.float32)
    cams[::4] = np.maximum(cams[::4], 0) ** 2  # ReLU'd, peaky CAMs as networks produce them
    reference = np.stack([cv2.resize(c, (224, 224), interpolation=cv2.INTER_CUBIC) for c in cams])
    upsampled = upsample_cams(torch.from_numpy(cams)).numpy()
    scale = np.abs(reference).max(axis=(1, 2), keepdims=True)
    assert (np.abs(upsampled - reference) <= 1e-6 * scale).all()

    q_reference = np.stack([scoremap_to_uint8(scoremap_opencv(c)) for c in cams])
    q_torch = scoremap_to_uint8(cams_to_scoremaps(torch.from_numpy(cams)).numpy())
    differ = q_reference != q_torch
    assert differ.mean() <= 1e-4
    assert np.abs(q_reference.astype(int) - q_torch).max() <= 1


def test_upsampling_keeps_device_and_shape():
    cams = torch.rand(3, 14, 14, dtype=torch.float64)
    maps = cams_to_scoremaps(cams)
    assert maps.shape == (3, 224, 224) and maps.dtype == torch.float32 and maps.device == cams.device
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        upsample_cams(torch.rand(14, 14))


def test_normalisation_constant_and_nan_become_zeros():
    maps = torch.rand(4, 224, 224) * 3 + 1
    maps[1] = 7.0
    maps[2, 5, 5] = float("nan")
    out = normalize_scoremaps(maps)
    assert out[0].min() == 0 and out[0].max() == 1
    assert (out[1] == 0).all() and (out[2] == 0).all()
    expected = (maps[3] - maps[3].min()) / (maps[3] - maps[3].min()).max()
    assert torch.equal(out[3], expected)


def test_normalisation_matches_wsolevaluation_bit_for_bit():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((16, 224, 224)).astype(np.float32)
    ours = normalize_scoremaps(torch.from_numpy(maps)).numpy()
    for m, o in zip(maps, ours):
        m = m.copy()
        m -= m.min()
        m /= m.max()
        assert np.array_equal(m, o)


def test_fused_normalize_and_quantize_is_bit_identical():
    from fastwsol.evaluation.component_tree import normalize_and_quantize, quantize_scoremaps

    rng = np.random.default_rng(3)
    cams = torch.from_numpy(rng.standard_normal((40, 14, 14)).astype(np.float32))
    cams[1] = 3.0
    cams[2, 4, 4] = float("nan")
    cams[3:20] = cams[3:20].relu() ** 2
    upsampled = upsample_cams(cams)
    fused = normalize_and_quantize(upsampled.numpy())
    assert np.array_equal(fused, quantize_scoremaps(normalize_scoremaps(upsampled).numpy()))
    assert np.array_equal(fused, scoremap_to_uint8(cams_to_scoremaps(cams).numpy()))
    assert (fused[1] == 0).all() and (fused[2] == 0).all()


def test_accumulate_cams_equals_accumulate_scoremaps(wsol_metadata_root):
    from fastwsol.data import read_split_metadata
    from fastwsol.evaluation import BoxEvaluator, resize_boxes

    meta = read_split_metadata(wsol_metadata_root, "CUB", "test")
    gt = [resize_boxes(meta.boxes[i], int(meta.sizes[i, 0]), int(meta.sizes[i, 1])) for i in range(32)]
    cams = torch.randn(32, 14, 14, generator=torch.Generator().manual_seed(0)).relu()
    from_cams, from_maps = BoxEvaluator(), BoxEvaluator()
    from_cams.accumulate_cams(cams, gt)
    from_maps.accumulate(cams_to_scoremaps(cams), gt)
    assert from_cams.num_images == 32
    assert np.array_equal(from_cams.correct_counts, from_maps.correct_counts)
