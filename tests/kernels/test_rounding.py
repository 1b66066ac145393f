"""``round_to_dtype`` (kernels/rounding.py) against torch's own fp32 → bf16 → fp32
rounding, on the bit patterns that matter: ties, the largest finite value, infinities and NaNs
(NVIDIA's canonical NaN 0x7FFFFFFF is what GPU arithmetic produces, e.g. inf − inf)."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from fastwsol.kernels.rounding import round_to_dtype

BITS = [
    0x3F800000,  # 1.0
    0x3F808000,  # a tie, even below: rounds down
    0x3F818000,  # a tie, odd below: rounds up
    0x3F80FFFF,  # just below a tie + 1 ulp
    0x7F7FFFFF,  # largest finite fp32: rounds to inf
    0x7F800000,  # +inf
    0xFF800000,  # −inf
    0x00000001,  # smallest subnormal
    0x80000000,  # −0.0
    0x7FFFFFFF,  # NVIDIA's canonical NaN
    0x7FC00000,  # x86/numpy's default NaN
    0xFFFFFFFF,  # negative NaN, all payload bits set
    0x7F800001,  # signalling NaN
]


@triton.jit
def _round_kernel(x_ptr, out_ptr, N, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    mask = offsets < N
    tl.store(out_ptr + offsets, round_to_dtype(tl.load(x_ptr + offsets, mask=mask), DTYPE), mask=mask)


@pytest.mark.parametrize("dtype,tl_dtype", [(torch.bfloat16, tl.bfloat16), (torch.float16, tl.float16)], ids=str)
def test_rounds_as_torch_and_keeps_nan(dtype, tl_dtype):
    x = torch.tensor(BITS, dtype=torch.int64).to(torch.int32).view(torch.float32)
    out = torch.empty_like(x)
    _round_kernel[(1,)](x, out, x.numel(), DTYPE=tl_dtype, BLOCK=triton.next_power_of_2(x.numel()))
    want = x.to(dtype).float()
    assert torch.equal(out.isnan(), want.isnan()), f"NaN lost: {out.tolist()}"
    finite = ~want.isnan()
    assert torch.equal(out[finite], want[finite])
    assert torch.equal(out[finite].signbit(), want[finite].signbit())
