"""The fused training losses on F (kernels/feature_losses.py: L_drop, L_sim, L_norm of F.float(), one
backward kernel) under TRITON_INTERPRET=1, at tiny shapes:

- against the float64 reference (``fastwsol.method.reference``) on the same values, forward and
  the three gradients, fp32 and bf16, NCHW and channels_last (tolerances of
  ``fastwsol.kernel_cases``: the alignment's, the consistency loss's relative one);
- bitwise the separate fp32 kernels on one fp32 copy of F, with autograd adding the two fp32
  gradients of F and rounding once: what the training objective computed with ``.float()``;
- an upstream gradient left out (None) counts as zero; opcheck; no graph break under torch.compile.
"""

from __future__ import annotations

import pytest
import torch

from fastwsol.kernel_cases import ALIGNMENT_TOLERANCES, CONSISTENCY_LOSS_RTOL, DTYPE_LAYOUT_CASES, DTYPES, LAYOUTS
from fastwsol.kernels import alignment_loss, consistency_loss
from fastwsol.kernels import feature_losses as kernel
from fastwsol.kernels.runtime import interpreter_enabled
from fastwsol.method import reference

DEVICE = "cpu" if interpreter_enabled() or not torch.cuda.is_available() else "cuda"
THRESHOLDS = {"fg_threshold": 0.6, "bg_threshold": 0.2}
UPSTREAM = (3.0, 0.7, 1.3)  # (g_drop, g_sim, g_norm): distinct, so an exchange of paths shows


def _inputs(shape, classes, dtype, layout, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(shape, generator=generator)
    dropped = feature * (torch.rand(shape, generator=generator) < 0.7)  # equal where kept: sign 0
    weight = torch.randn(classes, shape[1], generator=generator)
    target = torch.randint(0, classes, (shape[0],), generator=generator)
    fmt = LAYOUTS[layout]
    return (feature.to(dtype).contiguous(memory_format=fmt), dropped.to(dtype).contiguous(memory_format=fmt),
            weight, target)


def _reference_losses(feature, dropped, weight, target, fine_grained):
    loss_drop = reference.consistency_loss(feature, dropped)
    return (loss_drop, *reference.alignment_loss(feature, weight, target, **THRESHOLDS, fine_grained=fine_grained))


def _run(fn, tensors, target, fine_grained, upstream=UPSTREAM):
    leaves = [t.detach().to(DEVICE).clone(memory_format=torch.preserve_format).requires_grad_() for t in tensors]
    losses = fn(*leaves, target.to(DEVICE), fine_grained)
    grads = torch.autograd.grad(losses, leaves, [torch.tensor(u, device=DEVICE, dtype=loss.dtype)
                                                 for u, loss in zip(upstream, losses)])
    return [loss.detach().cpu() for loss in losses], [g.cpu() for g in grads]


def _fused(feature, dropped, weight, target, fine_grained):
    return kernel.feature_losses(feature, dropped, weight, target, **THRESHOLDS, fine_grained=fine_grained)


@pytest.mark.parametrize("dtype,layout", DTYPE_LAYOUT_CASES, ids="-".join)
@pytest.mark.parametrize("fine_grained", [False, True], ids=["target", "fine"])
def test_against_the_float64_reference(fine_grained, dtype, layout):
    feature, dropped, weight, target = _inputs((3, 12, 5, 6), 7, DTYPES[dtype], layout)
    losses, grads = _run(_fused, (feature, dropped, weight), target, fine_grained)
    ref_losses, ref_grads = _run(_reference_losses, [t.double() for t in (feature, dropped, weight)], target,
                                 fine_grained)
    assert all(loss.dtype == torch.float32 for loss in losses)  # the losses of F.float()
    tolerance = ALIGNMENT_TOLERANCES[dtype]
    torch.testing.assert_close(losses[0].double(), ref_losses[0], rtol=CONSISTENCY_LOSS_RTOL["fp32"], atol=0)
    for got, want in zip(losses[1:], ref_losses[1:]):
        torch.testing.assert_close(got.double(), want, atol=tolerance["loss"], rtol=0)
    for got, want, source in zip(grads, ref_grads, (feature, dropped, weight)):
        assert got.dtype == source.dtype and got.stride() == source.stride()
        scale = max(float(want.abs().max()), 1e-30)
        torch.testing.assert_close(got.double(), want, atol=tolerance["grad"] * scale, rtol=0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_bitwise_the_separate_fp32_kernels_on_one_fp32_copy(dtype, layout):
    """∂L/∂F = round(fp32 alignment gradient + fp32 L_drop gradient): one rounding, as autograd's sum
    over one F.float() copy; the losses, ∂L/∂F_drop and ∂L/∂w are the separate kernels' exactly."""
    feature, dropped, weight, target = _inputs((2, 40, 5, 6), 130, DTYPES[dtype], layout, seed=1)

    def separate(feature, dropped, weight, target, fine_grained):
        feature32 = feature.float()  # one copy: autograd adds both fp32 gradients, then one cast back
        loss_drop = consistency_loss.consistency_loss(feature32, dropped.float())
        return (loss_drop, *alignment_loss.alignment_loss(feature32, weight, target, **THRESHOLDS,
                                                          fine_grained=fine_grained))

    losses, grads = _run(_fused, (feature, dropped, weight), target, True)
    want_losses, want_grads = _run(separate, (feature, dropped, weight), target, True)
    for got, want in zip(losses + grads, want_losses + want_grads):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert int((grads[1] == 0).sum()) > 0 and int((grads[0] != 0).sum()) > 0  # sign 0 seen, gradients seen


def test_unused_losses_give_zero_upstream():
    """Only L_drop reaches the total: the alignment's upstream gradients are None, taken as 0."""
    feature, dropped, weight, target = _inputs((2, 6, 4, 5), 3, torch.float32, "nchw", seed=2)
    leaves = [t.to(DEVICE).requires_grad_() for t in (feature, dropped, weight)]
    loss_drop, _, _ = kernel.feature_losses(*leaves, target.to(DEVICE), **THRESHOLDS, fine_grained=True)
    grads = torch.autograd.grad(2.0 * loss_drop, leaves)
    ref = [t.detach().clone().requires_grad_() for t in leaves[:2]]
    want = torch.autograd.grad(2.0 * reference.consistency_loss(*ref), ref)
    assert torch.equal(grads[0], want[0]) and torch.equal(grads[1], want[1])
    assert torch.equal(grads[2], torch.zeros_like(grads[2]))


def test_opcheck():
    feature, dropped, weight, target = (t.to(DEVICE) for t in _inputs((2, 5, 4, 6), 5, torch.float32, "channels_last"))
    args = [t.requires_grad_() for t in (feature, dropped, weight)]
    torch.library.opcheck(kernel._feature_losses_op, (*args, target, 0.6, 0.2, True))
    _, _, _, *maps = kernel._feature_losses_op(*args, target, 0.6, 0.2, True)
    upstream = tuple(torch.tensor(u, device=DEVICE) for u in UPSTREAM)
    torch.library.opcheck(kernel._feature_losses_backward_op,
                          (*upstream, *(t.detach() for t in args), target, *(m.detach() for m in maps)))


def test_compiles_without_graph_break():
    feature, dropped, weight, target = (t.to(DEVICE) for t in _inputs((2, 6, 4, 5), 5, torch.float32, "nchw", seed=3))

    def step(f, g, w):
        loss_drop, loss_sim, loss_norm = kernel.feature_losses(f, g, w, target, **THRESHOLDS, fine_grained=True)
        return 3 * loss_drop + loss_sim + loss_norm

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_() for t in (feature, dropped, weight)]
    compiled(*leaves).backward()
    eager = [t.clone().requires_grad_() for t in (feature, dropped, weight)]
    step(*eager).backward()
    for got, want in zip(leaves, eager):
        assert torch.equal(got.grad, want.grad)
