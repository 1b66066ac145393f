"""Triton's interpreter before 3.7 turns a scalar tensor into a Python int with ``int()`` of its
1-element array, which numpy 2.4 and later refuse; ``kernels/runtime.py`` gives those versions
Triton 3.7's squeezed conversion. Checked here on a stand-in for the interpreter's patching (the
installed Triton may be a fixed one), then through a real kernel whose loop count is a scalar
tensor (``range(tl.cdiv(n, BLOCK))``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import _LangPatchScope

from fastwsol.kernels import runtime


def _old_patch_lang_tensor(tensor, scope) -> None:
    """What Triton 3.6's interpreter sets before each launch."""
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))


class ScalarTensor:
    def __init__(self, value: int):
        self.handle = SimpleNamespace(data=np.array([value], dtype=np.int32))


def test_squeezed_index_converts_a_one_element_array_and_is_restored_after_the_launch():
    scope = _LangPatchScope()
    runtime.with_squeezed_index(_old_patch_lang_tensor)(ScalarTensor, scope)

    assert list(range(ScalarTensor(3))) == [0, 1, 2]
    assert int(np.int64(7)) + ScalarTensor(4).__index__() == 11
    scope.restore()
    assert not hasattr(ScalarTensor, "__index__")


def test_the_old_interpreters_are_patched_and_only_they():
    from triton.runtime import interpreter

    patched = interpreter._patch_lang_tensor.__qualname__.startswith("with_squeezed_index")
    assert patched == (runtime.TRITON_VERSION < runtime.INTERPRETER_INDEX_FIXED_IN)


@triton.jit
def _count_blocks_kernel(out_ptr, n, BLOCK: tl.constexpr):
    total = 0
    for _ in range(tl.cdiv(n, BLOCK)):
        total += 1
    tl.store(out_ptr, total)


def test_a_loop_over_a_scalar_tensor_runs():
    out = torch.zeros(1, dtype=torch.int32, device="cpu" if runtime.interpreter_enabled() else "cuda")
    _count_blocks_kernel[(1,)](out, 70, BLOCK=32)
    assert int(out) == 3
