"""A full training step under ``torch.compile(fullgraph=True)``: the two-path model forward
(attentive dropout through ``model(x, backend=...)``), all four losses (CE; consistency, alignment
L_sim and L_norm through ``fastwsol.ops.feature_losses``, as the training objective) and the backward, with no graph break, and gradients
equal to the eager reference step.

``drop_prob = 1`` makes the dropout mask deterministic (r <= 1 always holds: keep = 0 exactly
where m > γ·max), so eager and compiled steps see the same mask. Dynamo traces ``backward()``
only with ``torch._dynamo.config.trace_autograd_ops``. The Triton step compiles with Inductor
(the production path, ~50-100 s cold here); the compiled-backend step with ``aot_eager`` (same
Dynamo graph and AOT autograd, no code generation): Inductor on the reference ops is already
checked op by op in tests/test_ops_backends.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fastwsol import ops
from fastwsol.kernels import runtime as kernel_runtime
from fastwsol.models import create_model

LOSS_WEIGHTS = {"drop": 3.0, "sim": 0.5, "norm": 1.5}


def train_step(model, images: torch.Tensor, labels: torch.Tensor, backend: str) -> torch.Tensor:
    out = model(images, backend=backend)
    loss_ce = F.cross_entropy(out["logits"], labels)
    loss_drop, loss_sim, loss_norm = ops.feature_losses(
        out["feature"], out["feature_dropped"], model.fc.weight, labels, fg_threshold=0.6, bg_threshold=0.1,
        fine_grained=True, backend=backend,
    )
    total = (loss_ce + LOSS_WEIGHTS["drop"] * loss_drop + LOSS_WEIGHTS["sim"] * loss_sim
             + LOSS_WEIGHTS["norm"] * loss_norm)
    total.backward()
    return total.detach()


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.compile
@pytest.mark.parametrize("backend,compiler", [("triton", "inductor"), ("compiled", "aot_eager")])
def test_fullgraph_train_step_matches_eager_reference(backend, compiler, monkeypatch):
    # Count the Triton launches (every custom-op forward and backward checks its device first).
    launches = []
    # Only calls at run time: an append traced by Dynamo (ops.py's check) is replayed after the
    # graph, overwriting what the custom ops appended while it ran.
    monkeypatch.setattr(kernel_runtime, "check_runnable",
                        lambda tensor, op: None if torch.compiler.is_compiling() else launches.append(op))
    torch.manual_seed(0)
    model = create_model("vgg_small", num_classes=5, drop_threshold=0.5, drop_prob=1.0).train()
    reference_model = copy.deepcopy(model)
    images = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([1, 3])

    expected = train_step(reference_model, images, labels, "reference")
    with torch.no_grad():
        keep = ops.attentive_dropout(reference_model.head(images), 0.5, 1.0, backend="reference")[1]
    assert 0 < (keep == 0).sum() < keep.numel()  # the dropout does something
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        torch._dynamo.reset()
        step = torch.compile(train_step, fullgraph=True, backend=compiler)  # raises on any graph break
        total = step(model, images, labels, backend)

    # the dropout forward and backward; the losses on F: the consistency and alignment forwards, one backward
    expected_launches = 2 * ["alignment_loss"] + 2 * ["attentive_dropout"] + ["consistency_loss"]
    assert sorted(launches) == (expected_launches if backend == "triton" else [])
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
    gradients, expected_gradients = _gradients(model), _gradients(reference_model)
    assert gradients.keys() == expected_gradients.keys() and len(gradients) > 0
    # A conv bias in front of a BatchNorm has an exactly-zero gradient: only rounding noise, so
    # both must be negligible. Every other gradient: norm-wise relative error ≤ 1e-4 (BatchNorm on
    # a batch of 2 amplifies Inductor's reordered fp32 sums element-wise, not norm-wise).
    scale = max(float(g.norm()) for g in expected_gradients.values())
    modules = dict(model.named_modules())
    errors = {}
    for name, grad in gradients.items():
        expected_grad = expected_gradients[name]
        module, _, kind = name.rpartition(".")
        if kind == "bias" and modules.get(module.replace(".conv", ".bn")) is not None and ".conv" in module:
            assert max(float(grad.norm()), float(expected_grad.norm())) <= 1e-4 * scale, name
            continue
        errors[name] = float((grad - expected_grad).norm() / expected_grad.norm())
    assert len(errors) > len(gradients) // 2
    assert max(errors.values()) <= 1e-4, sorted(errors.items(), key=lambda item: -item[1])[:3]
