"""``fastwsol.ops`` backend dispatch, and the ``"compiled"`` backend (torch.compile of the
reference) against the reference for every op, forward and gradients.

Compiled tests are few and marked ``compile``: each first compile takes seconds on 2 cores.
Tolerance for the compiled path, fp32: rtol 1e-5 / atol 1e-6 (Inductor reorders sums).
"""

from __future__ import annotations

import pytest
import torch

from fastwsol import ops
from fastwsol.method import compiled as compiled_backend
from fastwsol.method import reference

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def _feature(shape=(3, 16, 7, 7), seed=0, channels_last=False):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_(True)


def test_auto_resolves_to_compiled_on_cpu():
    assert ops._resolve_backend("auto", torch.zeros(1)) == "compiled"
    for backend in ("reference", "compiled"):
        assert ops._resolve_backend(backend, torch.zeros(1)) == backend


def test_unknown_backend_is_an_error():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="backend='cuda' is unknown"):
        ops.consistency_loss(x, x, backend="cuda")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    x = torch.zeros(1, 2, 3, 3)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # read at call time
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        ops.consistency_loss(x, x, backend="triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        ops.attentive_dropout(x, 0.5, 0.5, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops._resolve_backend("triton", x) == "triton"


def test_argument_errors_come_before_dispatch():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="uniform must have shape"):
        ops.attentive_dropout(x, 0.5, 0.5, uniform=torch.zeros(1, 2, 3, 3), backend="triton")
    with pytest.raises(ValueError, match="must match in shape"):
        ops.consistency_loss(x, torch.zeros(1, 2, 3, 4), backend="compiled")


def test_triton_backend_through_ops_matches_reference():
    x = _feature(channels_last=True)
    uniform = torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    out, keep = ops.attentive_dropout(x, 0.5, 0.5, uniform=uniform, backend="triton")
    ref_out, ref_keep = reference.attentive_dropout(x, 0.5, 0.5, uniform=uniform)
    assert torch.equal(out, ref_out) and torch.equal(keep, ref_keep)
    dropped = _feature(seed=2)
    torch.testing.assert_close(
        ops.consistency_loss(x, dropped, backend="triton"), reference.consistency_loss(x, dropped), **TOLERANCE
    )


def test_compiled_rejects_unknown_names():
    with pytest.raises(ValueError, match="no compiled version"):
        compiled_backend.compiled("localization_maps")


@pytest.mark.compile
def test_compiled_attentive_dropout_matches_reference():
    x = _feature()
    uniform = torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    out, keep = ops.attentive_dropout(x, 0.5, 0.5, uniform=uniform, backend="compiled")
    ref_out, ref_keep = reference.attentive_dropout(x, 0.5, 0.5, uniform=uniform)
    assert torch.equal(keep, ref_keep) and torch.equal(out, ref_out)
    grad = torch.randn_like(out)
    assert torch.equal(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(ref_out, x, grad)[0])
    # the compiled callable is cached: a second call does not compile again
    assert compiled_backend.compiled("attentive_dropout") is compiled_backend.compiled("attentive_dropout")


@pytest.mark.compile
def test_compiled_consistency_loss_matches_reference():
    feature, dropped = _feature(), _feature(seed=1)
    loss = ops.consistency_loss(feature, dropped, backend="compiled")
    ref_loss = reference.consistency_loss(feature, dropped)
    torch.testing.assert_close(loss, ref_loss, **TOLERANCE)
    grads = torch.autograd.grad(loss, (feature, dropped))
    ref_grads = torch.autograd.grad(ref_loss, (feature, dropped))
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, **TOLERANCE)


@pytest.mark.compile
def test_compiled_alignment_loss_matches_reference():
    feature = _feature((3, 16, 7, 7))
    fc_weight = torch.randn(5, 16, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    target = torch.tensor([0, 3, 3])
    kwargs = {"fg_threshold": 0.6, "bg_threshold": 0.2, "fine_grained": True}
    losses = ops.alignment_loss(feature, fc_weight, target, backend="compiled", **kwargs)
    ref_losses = reference.alignment_loss(feature, fc_weight, target, **kwargs)
    for loss, ref_loss in zip(losses, ref_losses):
        torch.testing.assert_close(loss, ref_loss, **TOLERANCE)
    grads = torch.autograd.grad(sum(losses), (feature, fc_weight))
    ref_grads = torch.autograd.grad(sum(ref_losses), (feature, fc_weight))
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.compile
def test_compiled_attentive_dropout_own_draw_follows_the_definition():
    x = torch.rand(2, 8, 14, 14)
    channel_mean = x.mean(dim=1, keepdim=True)
    candidates = channel_mean > 0.3 * channel_mean.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    torch.manual_seed(5)
    out, keep = ops.attentive_dropout(x, 0.3, 0.5, backend="compiled")
    torch.manual_seed(5)
    _, keep_again = ops.attentive_dropout(x, 0.3, 0.5, backend="compiled")
    assert torch.equal(keep, keep_again)  # reproducible from the seed
    assert torch.all(keep[~candidates] == 1) and 0 < (keep == 0).sum() < candidates.sum()
    assert torch.equal(out, x * keep)
