"""Why evaluate-maps may score a float32 map as float64: wsolevaluation quantises a box score map
as uint8(map * 255) computed in the map's own dtype, and for every float32 value in [0, 1] that
level is the same in float32 and float64 arithmetic. Not so for float16 (docs/evaluate_maps.md
states how many values differ)."""

import numpy as np

from fastwsol.evaluation.component_tree import quantize_scoremaps


def levels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8(x · 255) in x's dtype, and in float64."""
    return (x * x.dtype.type(255)).astype(np.uint8), (x.astype(np.float64) * 255).astype(np.uint8)


def test_every_float32_in_the_unit_interval_quantises_alike_in_float32_and_float64():
    last = int(np.float32(1.0).view(np.uint32))
    step = 1 << 24
    differing = 0
    for start in range(0, last + 1, step):
        x = np.arange(start, min(start + step, last + 1), dtype=np.uint32).view(np.float32)
        own, wide = levels(x)
        differing += int((own != wide).sum())
    assert differing == 0


def test_float16_quantises_differently_for_131_values_as_the_docs_say():
    x = np.arange(0, int(np.float16(1.0).view(np.uint16)) + 1, dtype=np.uint16).view(np.float16)
    own, wide = levels(x)
    assert (x * np.float16(255)).dtype == np.float16
    assert int((own != wide).sum()) == 131


def test_the_fast_quantiser_is_the_float64_level_for_float32_maps():
    x = np.random.default_rng(0).random((3, 224, 224), dtype=np.float32)
    assert np.array_equal(quantize_scoremaps(x), quantize_scoremaps(x.astype(np.float64)))
