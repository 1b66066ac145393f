"""Where the Triton kernels can run: CUDA tensors, or CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1`` in the environment before the kernels are imported: Triton decides
between interpreter and compiler when a ``@triton.jit`` function is defined). One check, used
by ``fastwsol.ops`` (choosing a backend) and by every kernel op (before a launch)."""

from __future__ import annotations

import torch
import triton
from triton import knobs

# Triton before 3.7 interprets ``range(n)`` and ``int(n)`` of a scalar tensor (``tl.cdiv`` of a
# kernel argument, say) as ``int()`` of its 1-element array, an error from numpy 2.4 on (and a
# DeprecationWarning before); Triton 3.7 squeezes the array first. The same fix is applied here to
# the older interpreters the supported range includes, so that the kernels run in them with any
# numpy. The compiled kernels do not use the interpreter.
INTERPRETER_INDEX_FIXED_IN = (3, 7)
TRITON_VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])  # (major, minor)


def with_squeezed_index(patch_lang_tensor):
    """``patch_lang_tensor`` (the interpreter's patching of ``tl.tensor`` for one launch) followed
    by Triton 3.7's ``__index__``: the scalar's array squeezed before ``int()``. The scope restores
    both patches in reverse order after the launch."""

    def patch(tensor, scope) -> None:
        patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    return patch


def _fix_old_interpreter_index() -> None:
    if TRITON_VERSION >= INTERPRETER_INDEX_FIXED_IN:
        return
    from triton.runtime import interpreter

    interpreter._patch_lang_tensor = with_squeezed_index(interpreter._patch_lang_tensor)


_fix_old_interpreter_index()


class TritonUnavailableError(ValueError):
    """The Triton kernels cannot run on these tensors here."""


@torch.compiler.assume_constant_result
def interpreter_enabled() -> bool:
    """``TRITON_INTERPRET`` as Triton reads it, now. A compiled graph takes the value it had when
    traced, instead of breaking at Triton's C++ getenv (a process does not switch between
    interpreter and compiler, which Triton decides when a kernel is defined)."""
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
