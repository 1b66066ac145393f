"""Triton attentive dropout (kernels/attentive_dropout.py) against the reference (docs/method.md §3).

Runs under TRITON_INTERPRET=1 (tests/conftest.py), so shapes are small. With ``uniform`` given
the kernel must equal the reference exactly (mask, output and gradient). With the internal
Philox draw the mask is checked against its definition: keep = 1 wherever m ≤ γ·max, and the
drop frequency inside the candidate region m > γ·max matches p (binomial bound below).
"""

from __future__ import annotations

import math

import pytest
import torch

from fastwsol.kernel_cases import DTYPE_LAYOUT_CASES, DTYPES, LAYOUTS
from fastwsol.kernels import attentive_dropout as dropout_kernel
from fastwsol.kernels.attentive_dropout import attentive_dropout, attentive_dropout_backward_op, attentive_dropout_op
from fastwsol.kernels.runtime import interpreter_enabled
from fastwsol.method import reference

# CPU under the interpreter (the default test run); the GPU with TRITON_INTERPRET=0.
DEVICE = "cpu" if interpreter_enabled() or not torch.cuda.is_available() else "cuda"

# (shape, γ, p): tails in every block dimension (D = 7, 37, 300; 13×17), and the real 14×14 map.
CASES = [((1, 7, 7, 7), 0.8, 0.5), ((3, 37, 13, 17), 0.3, 0.9), ((2, 300, 7, 7), 0.8, 0.5), ((3, 64, 14, 14), 0.5, 0.2)]


def _input(shape, dtype, memory_format, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).to(DEVICE, dtype).contiguous(memory_format=memory_format)
    uniform = torch.rand((shape[0], 1, *shape[2:]), generator=generator).to(DEVICE)
    return x, uniform


@pytest.mark.parametrize("shape,threshold,drop_prob", CASES, ids=str)
@pytest.mark.parametrize("dtype,layout", DTYPE_LAYOUT_CASES, ids="-".join)
def test_with_uniform_equals_reference_exactly(shape, dtype, layout, threshold, drop_prob):
    x, uniform = _input(shape, DTYPES[dtype], LAYOUTS[layout])
    x.requires_grad_(True)
    out, keep = attentive_dropout(x, threshold, drop_prob, uniform=uniform)
    ref_out, ref_keep = reference.attentive_dropout(x, threshold, drop_prob, uniform=uniform)
    assert keep.shape == ref_keep.shape and keep.dtype == ref_keep.dtype
    assert torch.equal(keep, ref_keep)
    assert 0 < (keep == 0).sum() < keep.numel()  # the case is not trivial
    assert torch.equal(out, ref_out)
    assert out.stride() == x.stride()  # keeps the memory format

    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    (ref_grad,) = torch.autograd.grad(ref_out, x, grad_out)
    assert torch.equal(grad, ref_grad)
    assert grad.stride() == x.stride()


def test_uniform_honours_its_strides_and_the_boundary():
    x, _ = _input((2, 5, 6, 6), torch.float32, torch.contiguous_format)
    # r == p drops (r <= p); a transposed, non-contiguous uniform.
    uniform = torch.rand(2, 1, 6, 6, device=DEVICE).transpose(2, 3).contiguous().transpose(2, 3)
    uniform[0, 0, :3] = 0.5
    out, keep = attentive_dropout(x, 0.0, 0.5, uniform=uniform)
    ref_out, ref_keep = reference.attentive_dropout(x, 0.0, 0.5, uniform=uniform)
    assert torch.equal(keep, ref_keep) and torch.equal(out, ref_out)


def test_all_equal_means_and_negative_max():
    # Constant channel mean: m == max, so with γ = 1 nothing is a candidate (strict >).
    x = torch.full((2, 3, 5, 5), 2.0, device=DEVICE)
    _, keep = attentive_dropout(x, 1.0, 1.0)
    assert torch.equal(keep, torch.ones_like(keep))
    # Negative means: γ·max > max for γ < 1, the reference semantics still hold exactly.
    x, uniform = _input((2, 4, 5, 5), torch.float32, torch.contiguous_format)
    x = x - 3.0
    out, keep = attentive_dropout(x, 0.8, 0.7, uniform=uniform)
    ref_out, ref_keep = reference.attentive_dropout(x, 0.8, 0.7, uniform=uniform)
    assert torch.equal(keep, ref_keep) and torch.equal(out, ref_out)


def _candidates(x, threshold):
    channel_mean = x.mean(dim=1, keepdim=True)
    return channel_mean > threshold * channel_mean.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_internal_draw_respects_the_candidate_region_and_p(layout):
    """keep = 1 wherever m ≤ γ·max; inside the candidate region the number of drops is
    Binomial(n, p): we require |drops − n·p| ≤ 5·sqrt(n·p·(1−p)) (a false failure has
    probability < 1e-6) over n ≈ 2,800 candidate positions."""
    torch.manual_seed(1)
    threshold, drop_prob = 0.2, 0.3
    x = torch.rand(8, 16, 28, 28, device=DEVICE).contiguous(memory_format=LAYOUTS[layout])  # positive means: many candidates
    candidates = _candidates(x, threshold)
    drops, trials = 0, 0
    for _ in range(3):
        out, keep = attentive_dropout(x, threshold, drop_prob)
        assert torch.all(keep[~candidates] == 1)
        assert set(keep.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(out, x * keep)
        drops += int((keep[candidates] == 0).sum())
        trials += int(candidates.sum())
    expected, spread = trials * drop_prob, math.sqrt(trials * drop_prob * (1 - drop_prob))
    assert trials > 2000
    assert abs(drops - expected) <= 5 * spread, (drops, expected, spread)


def test_same_seed_same_mask_successive_calls_differ():
    x = torch.rand(2, 8, 14, 14, device=DEVICE)
    torch.manual_seed(123)
    _, first = attentive_dropout(x, 0.1, 0.5)
    _, second = attentive_dropout(x, 0.1, 0.5)
    torch.manual_seed(123)
    _, first_again = attentive_dropout(x, 0.1, 0.5)
    assert torch.equal(first, first_again)
    assert not torch.equal(first, second)


def test_drop_prob_edges():
    x = torch.rand(2, 4, 7, 7, device=DEVICE)
    _, keep_none = attentive_dropout(x, 0.5, 0.0)
    _, keep_all = attentive_dropout(x, 0.5, 1.0)
    candidates = _candidates(x, 0.5)
    # r ∈ [0, 1): r <= 0 has probability 2^-24 per position, r <= 1 always holds.
    assert int((keep_none == 0).sum()) <= 1
    assert torch.equal(keep_all == 0, candidates)


def test_opcheck():
    x, uniform = _input((2, 5, 6, 7), torch.float32, torch.channels_last)
    x.requires_grad_(True)
    seed = torch.tensor([42], dtype=torch.int64, device=DEVICE)
    torch.library.opcheck(attentive_dropout_op, (x, 0.5, 0.5, None, uniform))
    torch.library.opcheck(attentive_dropout_op, (x, 0.5, 0.5, seed, None))
    keep = reference.attentive_dropout(x, 0.5, 0.5, uniform=uniform)[1]
    torch.library.opcheck(attentive_dropout_backward_op, (torch.randn(2, 5, 6, 7, device=DEVICE), keep))


def test_gradient_of_an_expanded_output_gradient():
    # out.sum() gives a stride-0 (expanded) dout: the backward kernel reads it through its strides.
    x, uniform = _input((2, 5, 6, 6), torch.float32, torch.contiguous_format)
    x.requires_grad_(True)
    attentive_dropout(x, 0.5, 0.5, uniform=uniform)[0].sum().backward()
    expected = reference.attentive_dropout(x.detach(), 0.5, 0.5, uniform=uniform)[1].expand_as(x)
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=str)
def test_nan_input_matches_reference(dtype):
    """A NaN channel mean makes torch's image max NaN, so that image drops nothing; NaN flows to the output."""
    x, uniform = _input((2, 5, 4, 4), dtype, torch.contiguous_format, seed=4)
    x[0, 1, 2, 2] = float("nan")
    out, keep = attentive_dropout(x, 0.3, 0.9, uniform=uniform)
    ref_out, ref_keep = reference.attentive_dropout(x, 0.3, 0.9, uniform=uniform)
    assert (ref_keep[1] == 0).any()  # the NaN-free image still drops
    assert torch.equal(keep, ref_keep)
    assert torch.equal(out.nan_to_num(7.0), ref_out.nan_to_num(7.0))


@pytest.mark.parametrize("images", [1, 2], ids=["1-image-groups", "2-image-groups"])
@pytest.mark.parametrize("dtype,layout", [("fp32", "nchw"), ("bf16", "channels_last")], ids="-".join)
def test_image_groups_give_the_same_result(images, dtype, layout, monkeypatch):
    """The forward launches once per group of images and once more (the means of group k while
    the mask is applied to group k − 1): any grouping gives the reference's result with a uniform
    draw, and the same mask with the Philox draw of one seed; a NaN image keeps every position."""
    x, uniform = _input((3, 37, 13, 17), DTYPES[dtype], LAYOUTS[layout], seed=5)
    x[1, 4, 2, 3] = float("nan")
    monkeypatch.setattr(dropout_kernel, "GROUP_BYTES", images * x[0].numel() * x.element_size())
    assert dropout_kernel.images_per_group(x) == images
    out, keep = attentive_dropout(x, 0.3, 0.9, uniform=uniform)
    ref_out, ref_keep = reference.attentive_dropout(x, 0.3, 0.9, uniform=uniform)
    assert torch.equal(keep, ref_keep) and torch.equal(out.nan_to_num(7.0), ref_out.nan_to_num(7.0))
    assert (keep[0] == 0).any() and (keep[2] == 0).any() and torch.all(keep[1] == 1)
    torch.manual_seed(9)
    _, grouped = attentive_dropout(x, 0.3, 0.9)
    monkeypatch.setattr(dropout_kernel, "GROUP_BYTES", 2**40)
    torch.manual_seed(9)
    _, whole = attentive_dropout(x, 0.3, 0.9)
    assert torch.equal(grouped, whole)
