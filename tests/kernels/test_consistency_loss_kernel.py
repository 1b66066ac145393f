"""Triton consistency loss (kernels/consistency_loss.py) against the reference, forward and both
gradients, under TRITON_INTERPRET=1 (small shapes).

Tolerances: the forward within ``fastwsol.kernel_cases.CONSISTENCY_LOSS_RTOL`` (shared with
``fastwsol check-gpu``); the gradients exact in both dtypes: g/N rounded as torch's mean
backward, times sign(F − F_drop).
"""

from __future__ import annotations

import pytest
import torch

from fastwsol.kernel_cases import CONSISTENCY_LOSS_RTOL, DTYPES, LAYOUTS
from fastwsol.kernels.consistency_loss import consistency_loss, consistency_loss_backward_op, consistency_loss_op
from fastwsol.kernels.runtime import interpreter_enabled
from fastwsol.method import reference

# CPU under the interpreter (the default test run); the GPU with TRITON_INTERPRET=0.
DEVICE = "cpu" if interpreter_enabled() or not torch.cuda.is_available() else "cuda"

SHAPES = [(1, 7, 7, 7), (3, 64, 14, 14), (3, 37, 13, 17), (2, 300, 7, 7)]


def _pair(shape, dtype, layouts, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(shape, generator=generator).to(DEVICE, dtype)
    dropped = torch.randn(shape, generator=generator).to(DEVICE, dtype)
    dropped.view(-1)[::5] = feature.view(-1)[::5]  # F == F_drop: sign 0, zero gradient
    return (
        feature.contiguous(memory_format=LAYOUTS[layouts[0]]).requires_grad_(True),
        dropped.contiguous(memory_format=LAYOUTS[layouts[1]]).requires_grad_(True),
    )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layouts", [("nchw", "nchw"), ("channels_last", "channels_last"), ("nchw", "channels_last")], ids="-".join)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_forward_and_gradients_match_reference(shape, layouts, dtype_name):
    dtype = DTYPES[dtype_name]
    feature, dropped = _pair(shape, dtype, layouts)
    loss = consistency_loss(feature, dropped)
    ref_loss = reference.consistency_loss(feature, dropped)
    assert loss.shape == () and loss.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, rtol=CONSISTENCY_LOSS_RTOL[dtype_name], atol=0)

    grad_loss = torch.tensor(1.7, dtype=dtype, device=DEVICE)
    grads = torch.autograd.grad(loss, (feature, dropped), grad_loss)
    ref_grads = torch.autograd.grad(ref_loss, (feature, dropped), grad_loss)
    for grad, ref_grad, tensor in zip(grads, ref_grads, (feature, dropped)):
        assert torch.equal(grad, ref_grad)
        assert grad.stride() == tensor.stride()
    assert torch.all(grads[0][(feature == dropped).detach()] == 0)  # sign(0) = 0


def test_identical_inputs_give_zero_loss_and_zero_gradient():
    feature = torch.randn(2, 9, 5, 5, device=DEVICE, requires_grad=True)
    loss = consistency_loss(feature, feature.detach().clone())
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, feature)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_gradient_to_one_input_only():
    feature = torch.randn(2, 9, 5, 5, device=DEVICE, requires_grad=True)
    dropped = torch.randn(2, 9, 5, 5, device=DEVICE)
    consistency_loss(feature, dropped).backward()
    ref = feature.detach().clone().requires_grad_(True)
    reference.consistency_loss(ref, dropped).backward()
    assert torch.equal(feature.grad, ref.grad)


def test_opcheck():
    feature, dropped = _pair((2, 5, 6, 7), torch.float32, ("channels_last", "nchw"))
    torch.library.opcheck(consistency_loss_op, (feature, dropped))
    torch.library.opcheck(consistency_loss_backward_op, (torch.tensor(0.5, device=DEVICE), feature.detach(), dropped.detach()))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=str)
def test_nan_input_gives_nan_loss(dtype):
    feature, dropped = _pair((2, 5, 4, 4), dtype, ("nchw", "nchw"), seed=3)
    with torch.no_grad():
        feature[1, 2, 3, 0] = float("nan")
    loss = consistency_loss(feature, dropped)
    assert torch.isnan(loss) and torch.isnan(reference.consistency_loss(feature, dropped))
    grads = torch.autograd.grad(loss, (feature, dropped))
    ref_grads = torch.autograd.grad(reference.consistency_loss(feature, dropped), (feature, dropped))
    for grad, ref_grad in zip(grads, ref_grads):
        assert torch.equal(grad.nan_to_num(7.0), ref_grad.nan_to_num(7.0))
