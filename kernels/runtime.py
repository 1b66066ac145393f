"""Where the Triton kernels can run: CUDA tensors, or CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1`` in the environment before the kernels are imported: Triton decides
between interpreter and compiler when a ``@triton.jit`` function is defined). One check, used
by ``fastwsol.ops`` (choosing a backend) and by every kernel op (before a launch)."""

from __future__ import annotations

import torch
from triton import knobs


class TritonUnavailableError(ValueError):
    """The Triton kernels cannot run on these tensors here."""


def interpreter_enabled() -> bool:
    """``TRITON_INTERPRET`` as Triton reads it, now."""
    return bool(knobs.runtime.interpret)


def can_run(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cuda" or interpreter_enabled()


def check_runnable(tensor: torch.Tensor, op: str) -> None:
    """Raise :class:`TritonUnavailableError`, naming ``op`` and the way out, unless the kernels can
    run on ``tensor``."""
    if not can_run(tensor):
        raise TritonUnavailableError(
            f"the Triton {op} needs CUDA tensors, got a tensor on {tensor.device}; to run the kernels on CPU set "
            "TRITON_INTERPRET=1 in the environment before importing fastwsol, or use backend='compiled' / "
            "'reference' / 'auto'"
        )


def upstream_gradients(grads, like: torch.Tensor) -> list[torch.Tensor]:
    """An autograd backward's upstream gradients with None (an output that reached no loss) as an
    fp32 zero on ``like``'s device: the kernels read every upstream gradient."""
    zero = like.new_zeros((), dtype=torch.float32)
    return [zero if g is None else g for g in grads]
