"""Every Triton op on inputs that are not plain NCHW-contiguous — a batch-expanded view (batch
stride 0), channels_last, a channel slice (gaps between channels), a spatial crop (rows not
back to back) — forward and the gradients reaching the leaf, against the reference on the same
values. The gradient buffers must be written with their own strides, never the input's.

Tiny shapes (the interpreter is slow): B=2, D=6, 5×6 maps.
"""

from __future__ import annotations

import pytest
import torch

from fastwsol.kernel_cases import ALIGNMENT_TOLERANCES, CONSISTENCY_LOSS_RTOL, UPSTREAM
from fastwsol.kernels import alignment_loss as alignment_kernel
from fastwsol.kernels import attentive_dropout as dropout_kernel
from fastwsol.kernels import consistency_loss as consistency_kernel
from fastwsol.kernels import feature_losses as feature_losses_kernel
from fastwsol.kernels.runtime import interpreter_enabled
from fastwsol.method import reference

DEVICE = "cpu" if interpreter_enabled() or not torch.cuda.is_available() else "cuda"
SHAPE = (2, 6, 5, 6)


def _leaf_and_view(layout: str, seed: int):
    """(leaf, view of SHAPE derived from the leaf by ``layout``)."""
    generator = torch.Generator().manual_seed(seed)
    b, d, h, w = SHAPE
    if layout == "batch_expanded":
        leaf = torch.randn(1, d, h, w, generator=generator)
        return leaf, lambda t: t.expand(b, d, h, w)
    if layout == "channels_last":
        leaf = torch.randn(SHAPE, generator=generator).contiguous(memory_format=torch.channels_last)
        return leaf, lambda t: t
    if layout == "channel_slice":
        leaf = torch.randn(b, 2 * d, h, w, generator=generator)
        return leaf, lambda t: t[:, ::2]
    if layout == "spatial_crop":
        leaf = torch.randn(b, d, h + 2, w + 3, generator=generator)
        return leaf, lambda t: t[:, :, 1:-1, 2:-1]
    raise ValueError(layout)


LAYOUTS = ["batch_expanded", "channels_last", "channel_slice", "spatial_crop"]


def _grads(fn, leaves, views, dtype, device, upstream):
    """Run ``fn`` on the views of fresh leaf copies; return (outputs, leaf gradients)."""
    leaves = [leaf.detach().to(device, dtype).clone(memory_format=torch.preserve_format).requires_grad_() for leaf in leaves]
    outputs = fn(*(view(leaf) for view, leaf in zip(views, leaves)))
    total = sum(u * o.float().sum() for u, o in zip(upstream, outputs) if o.requires_grad)
    total.backward()
    return [o.detach().cpu() for o in outputs], [leaf.grad.cpu() for leaf in leaves]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_consistency_loss(layout):
    leaf, view = _leaf_and_view(layout, seed=0)
    other, other_view = _leaf_and_view(layout, seed=1)
    args = ([leaf, other], [view, other_view], torch.float32)
    got = _grads(lambda f, g: (consistency_kernel.consistency_loss(f, g),), *args, DEVICE, (1.7,))
    want = _grads(lambda f, g: (reference.consistency_loss(f, g),), *args, "cpu", (1.7,))
    torch.testing.assert_close(got[0][0], want[0][0], rtol=CONSISTENCY_LOSS_RTOL["fp32"], atol=0)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_attentive_dropout(layout):
    leaf, view = _leaf_and_view(layout, seed=2)
    uniform = torch.rand(SHAPE[0], 1, *SHAPE[2:], generator=torch.Generator().manual_seed(3))
    out, keep = dropout_kernel.attentive_dropout(view(leaf.to(DEVICE)), 0.3, 0.6, uniform=uniform.to(DEVICE))
    assert 0 < int((keep == 0).sum()) < keep.numel()  # the case is not trivial
    got = _grads(lambda x: dropout_kernel.attentive_dropout(x, 0.3, 0.6, uniform=uniform.to(DEVICE))[:1],
                 [leaf], [view], torch.float32, DEVICE, (1.3,))
    want = _grads(lambda x: reference.attentive_dropout(x, 0.3, 0.6, uniform=uniform)[:1],
                  [leaf], [view], torch.float32, "cpu", (1.3,))
    assert torch.equal(got[0][0], want[0][0])
    assert torch.equal(got[1][0], want[1][0])


@pytest.mark.parametrize("fine_grained", [False, True], ids=["target", "fine"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_alignment_loss(layout, fine_grained):
    leaf, view = _leaf_and_view(layout, seed=4)
    weight = torch.randn(5, SHAPE[1], generator=torch.Generator().manual_seed(5))
    target = torch.tensor([1, 3])

    def run(fn, dtype, device):
        return _grads(lambda f, w: fn(f, w, target.to(device), fg_threshold=0.6, bg_threshold=0.2, fine_grained=fine_grained),
                      [leaf, weight], [view, lambda w: w], dtype, device, UPSTREAM)

    got = run(alignment_kernel.alignment_loss, torch.float32, DEVICE)
    want = run(reference.alignment_loss, torch.float64, "cpu")
    tolerance = ALIGNMENT_TOLERANCES["fp32"]
    for g, w in zip(got[0], want[0]):
        torch.testing.assert_close(g.double(), w, rtol=0, atol=tolerance["loss"])
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g.double(), w, rtol=0, atol=tolerance["grad"] * float(w.abs().max()))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_feature_losses(layout):
    """The fused losses on F (one backward kernel writing ∂L/∂F and ∂L/∂F_drop with their own strides)."""
    leaf, view = _leaf_and_view(layout, seed=6)
    other, other_view = _leaf_and_view(layout, seed=7)
    weight = torch.randn(5, SHAPE[1], generator=torch.Generator().manual_seed(8))
    target = torch.tensor([4, 0])
    thresholds = {"fg_threshold": 0.6, "bg_threshold": 0.2, "fine_grained": True}

    def fused(f, g, w):
        return feature_losses_kernel.feature_losses(f, g, w, target.to(DEVICE), **thresholds)

    def separate(f, g, w):
        return (reference.consistency_loss(f, g), *reference.alignment_loss(f, w, target, **thresholds))

    leaves, views = [leaf, other, weight], [view, other_view, lambda w: w]
    got = _grads(fused, leaves, views, torch.float32, DEVICE, (3.0, *UPSTREAM))
    want = _grads(separate, leaves, views, torch.float64, "cpu", (3.0, *UPSTREAM))
    tolerance = ALIGNMENT_TOLERANCES["fp32"]
    torch.testing.assert_close(got[0][0].double(), want[0][0], rtol=CONSISTENCY_LOSS_RTOL["fp32"], atol=0)
    for g, w in zip(got[0][1:], want[0][1:]):
        torch.testing.assert_close(g.double(), w, rtol=0, atol=tolerance["loss"])
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g.double(), w, rtol=0, atol=tolerance["grad"] * float(w.abs().max()))
