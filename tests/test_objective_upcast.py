"""The training objective's losses on a 16-bit F without an fp32 copy, under
TRITON_INTERPRET=1 at small shapes.

``upcast=True`` asks an op for its result on ``F.float()`` (and ``fc_weight.float()``): the Triton
kernels read the 16-bit F and compute in fp32 as they do for an fp32 F, so against the fp32
kernels run on ``F.float()`` the losses (fp32) and the gradients (the fp32 gradient rounded to F's
dtype, as ``.float()``'s backward rounds it) are bitwise equal. In the full objective F feeds both
L_drop and the alignment losses: with ``.float()`` autograd adds their fp32 gradients and rounds
once; ``ops.feature_losses`` (one Triton op for the three, one backward kernel) does the same, so
the objective is bitwise the old one. The reference and compiled backends keep the literal ``.float()``.
"""

from __future__ import annotations

import pytest
import torch

from fastwsol import ops
from fastwsol.kernels import alignment_loss as alignment_kernel
from fastwsol.kernels import consistency_loss as consistency_kernel
from fastwsol.objective import Objective

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
THRESHOLDS = {"fg_threshold": 0.6, "bg_threshold": 0.1}


def _inputs(shape, classes, layout, seed=0, dtype=torch.bfloat16):
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(shape, generator=generator).to(dtype).contiguous(memory_format=FORMATS[layout])
    dropped = (feature.float() * (torch.rand(shape, generator=generator) < 0.8)).to(dtype)
    dropped = dropped.contiguous(memory_format=FORMATS[layout])
    weight = torch.randn(classes, shape[1], generator=generator)  # fp32, as the fc layer's parameter
    target = torch.randint(0, classes, (shape[0],), generator=generator)
    return feature.requires_grad_(True), dropped.requires_grad_(True), weight.requires_grad_(True), target


@pytest.mark.parametrize("fine_grained,classes", [(True, 5), (True, 130), (False, 7)], ids=["fine5", "fine130", "target"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_alignment_upcast_is_bitwise_the_fp32_kernels_on_the_fp32_copy(fine_grained, classes, layout):
    feature, _, weight, target = _inputs((3, 40, 5, 6), classes, layout)
    kwargs = {**THRESHOLDS, "fine_grained": fine_grained}
    direct = alignment_kernel.alignment_loss(feature, weight, target, upcast=True, **kwargs)
    copied = alignment_kernel.alignment_loss(feature.float(), weight, target, **kwargs)
    for loss, expected in zip(direct, copied):
        assert loss.dtype == torch.float32 and torch.equal(loss, expected), (loss, expected)
    upstream = (torch.tensor(0.7), torch.tensor(-1.3))
    grads = torch.autograd.grad(direct, (feature, weight), upstream)
    expected_grads = torch.autograd.grad(copied, (feature, weight), upstream)
    assert grads[0].dtype == torch.bfloat16 and grads[0].stride() == feature.stride()
    assert grads[0].abs().sum() > 0
    for grad, expected in zip(grads, expected_grads):
        assert torch.equal(grad, expected)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_consistency_upcast_is_bitwise_the_fp32_kernels_on_the_fp32_copies(layout):
    feature, dropped, _, _ = _inputs((2, 37, 5, 7), 3, layout)
    direct = consistency_kernel.consistency_loss(feature, dropped, upcast=True)
    copied = consistency_kernel.consistency_loss(feature.float(), dropped.float())
    assert direct.dtype == torch.float32 and torch.equal(direct, copied)
    # Not the bf16 op's value: that one rounds F − F_drop to bf16 (as torch subtracts in bf16).
    assert not torch.equal(consistency_kernel.consistency_loss(feature, dropped).float(), direct)
    upstream = torch.tensor(3.0)
    grads = torch.autograd.grad(direct, (feature, dropped), upstream)
    expected_grads = torch.autograd.grad(copied, (feature, dropped), upstream)
    for grad, expected in zip(grads, expected_grads):
        assert grad.dtype == torch.bfloat16 and torch.equal(grad, expected)


def test_ops_upcast_on_the_reference_is_the_reference_on_float():
    feature, dropped, weight, target = _inputs((2, 16, 4, 4), 6, "nchw")
    with pytest.raises(ValueError, match="dtype"):
        ops.alignment_loss(feature, weight, target, **THRESHOLDS, fine_grained=True, backend="reference")
    got = ops.alignment_loss(feature, weight, target, **THRESHOLDS, fine_grained=True, backend="reference", upcast=True)
    want = ops.alignment_loss(feature.float(), weight, target, **THRESHOLDS, fine_grained=True, backend="reference")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    got = ops.consistency_loss(feature, dropped, backend="reference", upcast=True)
    assert torch.equal(got, ops.consistency_loss(feature.float(), dropped.float(), backend="reference"))


def _objective(fine_grained=True):
    return Objective(method="bridging_gap", lambda_drop=3.0, lambda_sim=0.5, lambda_norm=0.15, warm_epochs=0,
                     fine_grained=fine_grained, **THRESHOLDS)


def _old_losses(objective, out, labels, fc_weight, backend):
    """The objective with literal .float() copies of F, F_drop and the weight, then the ops."""
    feature = out["feature"].float()
    terms = {"ce": torch.nn.functional.cross_entropy(out["logits"], labels)}
    terms["drop"] = ops.consistency_loss(feature, out["feature_dropped"].float(), backend=backend)
    terms["sim"], terms["norm"] = ops.alignment_loss(
        feature, fc_weight.float(), labels, fg_threshold=objective.fg_threshold,
        bg_threshold=objective.bg_threshold, fine_grained=objective.fine_grained, backend=backend)
    return terms


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_objective_on_bf16_features_is_the_float_copy_path(backend):
    """The full objective (L_drop and the alignment losses on one F): bitwise the old objective's
    literal .float() copies, gradients included; with Triton one op's backward adds the two fp32
    gradients of F before one rounding, as autograd does for the fp32 copy."""
    feature, dropped, weight, labels = _inputs((3, 40, 5, 6), 130, "channels_last", seed=1)
    logits = torch.randn(3, 130, requires_grad=True)
    out = {"logits": logits, "feature": feature, "feature_dropped": dropped}
    objective = _objective()
    terms = objective.losses(out, labels, weight, full=True, backend=backend)
    old_terms = _old_losses(objective, out, labels, weight, backend)
    for name in ("ce", "drop", "sim", "norm"):
        assert terms[name].dtype == torch.float32 and torch.equal(terms[name], old_terms[name]), name
    inputs = (feature, dropped, weight)
    grads = torch.autograd.grad(objective.total(terms), inputs)
    old_grads = torch.autograd.grad(objective.total(old_terms), inputs)
    assert grads[0].dtype == torch.bfloat16
    if backend == "triton":
        assert grads[0].stride() == feature.stride()
    for grad, old_grad in zip(grads, old_grads):
        assert torch.equal(grad, old_grad)


@pytest.mark.parametrize("full", [False, True], ids=["warm", "full"])
def test_objective_without_a_dropped_path_or_in_the_warm_stage(full):
    """Only one of the losses on F: each op on its own, with upcast (one gradient, one rounding)."""
    feature, dropped, weight, labels = _inputs((2, 16, 4, 5), 9, "nchw", seed=2)
    logits = torch.randn(2, 9, requires_grad=True)
    out = {"logits": logits, "feature": feature}
    if not full:
        out["feature_dropped"] = dropped
    objective = _objective()
    terms = objective.losses(out, labels, weight, full=full, backend="triton")
    old_terms = _old_losses(objective, {**out, "feature_dropped": dropped}, labels, weight, "triton")
    used = ("sim", "norm") if full else ("drop",)
    for name in ("drop", "sim", "norm"):
        assert torch.equal(terms[name], old_terms[name] if name in used else torch.zeros(())), name
    inputs = (feature, dropped, weight) if not full else (feature, weight)
    grads = torch.autograd.grad(objective.total(terms), inputs, allow_unused=True)
    old_total = objective.total({**old_terms, **{k: torch.zeros(()) for k in ("drop", "sim", "norm") if k not in used}})
    old_grads = torch.autograd.grad(old_total, inputs, allow_unused=True)
    for grad, old_grad in zip(grads, old_grads):
        assert (grad is None and old_grad is None) or torch.equal(grad, old_grad)
