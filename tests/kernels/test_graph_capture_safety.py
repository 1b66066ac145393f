"""The kernel ops' host code (``fastwsol.kernels``), forward and backward, makes no tensor from
Python data and reads no tensor's value back: on a GPU the first is a synchronous host-to-device
copy and the second a device-to-host one. CUDA graph capture refuses both (check-gpu times the
kernels from captured graphs; a graph-captured training step needs the same), and each stalls
every call. Recorded with a dispatch mode on the CPU, where the same host code runs under Triton's
interpreter, inside the custom ops too: ``aten.lift_fresh`` is ``torch.tensor(...)``,
``aten._local_scalar_dense`` is ``.item()`` / ``float(tensor)``, ``aten.nonzero`` a boolean-mask
index. (``fastwsol.ops`` checks the class indices' values on CPU tensors only, where that costs
nothing, so the kernel modules are called directly.)"""

from __future__ import annotations

import pytest
import torch
from torch._library.custom_ops import CustomOpDef
from torch.utils._python_dispatch import TorchDispatchMode

from fastwsol.kernels import alignment_loss, attentive_dropout, consistency_loss, feature_losses
from fastwsol.kernels.runtime import interpreter_enabled

# CPU under the interpreter (the default test run); the GPU with TRITON_INTERPRET=0.
DEVICE = "cpu" if interpreter_enabled() or not torch.cuda.is_available() else "cuda"

SYNCHRONISING = ("aten.lift_fresh", "aten._local_scalar_dense", "aten.nonzero")
# The Python body of each fastwsol custom op, run under the recording mode (a dispatch mode sees a
# custom op as one call and would not see inside it).
BODIES = {op._qualname: op._init_fn for module in (alignment_loss, attentive_dropout, consistency_loss, feature_losses)
          for op in vars(module).values() if isinstance(op, CustomOpDef)}


class Recorded(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        body = BODIES.get(func._schema.name)
        if body is not None:
            with self:
                return body(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _leaves(*tensors):
    return [t.to(DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_() for t in tensors]


def _feature_losses(fine_grained):
    generator = torch.Generator().manual_seed(0)
    feature, dropped = _leaves(torch.randn(2, 16, 5, 5, generator=generator),
                               torch.randn(2, 16, 5, 5, generator=generator))
    weight = torch.randn(7, 16, generator=generator).to(DEVICE).requires_grad_()
    target = torch.tensor([1, 4], device=DEVICE)
    leaves = [feature, dropped, weight]

    def call():
        losses = feature_losses.feature_losses(feature, dropped, weight, target, fg_threshold=0.6,
                                               bg_threshold=0.1, fine_grained=fine_grained)
        return sum(losses)

    return call, leaves


def _alignment(fine_grained):
    generator = torch.Generator().manual_seed(1)
    (feature,) = _leaves(torch.randn(2, 16, 5, 5, generator=generator))
    weight = torch.randn(7, 16, generator=generator).to(DEVICE).requires_grad_()
    target = torch.tensor([2, 6], device=DEVICE)

    def call():
        return sum(alignment_loss.alignment_loss(feature, weight, target, fg_threshold=0.6, bg_threshold=0.1,
                                                 fine_grained=fine_grained))

    return call, [feature, weight]


def _consistency(_):
    generator = torch.Generator().manual_seed(2)
    leaves = _leaves(torch.randn(2, 16, 5, 5, generator=generator), torch.randn(2, 16, 5, 5, generator=generator))
    return (lambda: consistency_loss.consistency_loss(*leaves)), leaves


def _dropout(_):
    (x,) = _leaves(torch.rand(2, 16, 5, 5, generator=torch.Generator().manual_seed(3)))
    return (lambda: attentive_dropout.attentive_dropout(x, 0.9, 0.5)[0].sum()), [x]


@pytest.mark.parametrize("make,fine_grained", [(_feature_losses, True), (_feature_losses, False), (_alignment, True),
                                               (_alignment, False), (_consistency, None), (_dropout, None)],
                         ids=["feature_losses-fine", "feature_losses-target", "alignment-fine", "alignment-target",
                              "consistency", "dropout"])
def test_no_host_round_trip_forward_or_backward(make, fine_grained):
    call, leaves = make(fine_grained)
    with Recorded() as recorded:
        total = call()
        torch.autograd.grad(total, leaves)

    assert any(op.startswith("fastwsol.") for op in recorded.ops) and any("empty" in op for op in recorded.ops)
    found = sorted({op for op in recorded.ops if op.startswith(SYNCHRONISING)})
    assert found == []


def test_every_custom_op_body_is_found():
    assert set(BODIES) == {"fastwsol::alignment_loss", "fastwsol::alignment_loss_backward", "fastwsol::attentive_dropout",
                           "fastwsol::attentive_dropout_backward", "fastwsol::consistency_loss",
                           "fastwsol::consistency_loss_backward", "fastwsol::feature_losses",
                           "fastwsol::feature_losses_backward"}
