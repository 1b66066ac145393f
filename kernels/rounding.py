"""Rounding fp32 values to a kernel's storage dtype, as torch rounds its results."""

import triton
import triton.language as tl


@triton.jit
def round_to_dtype(x, dtype: tl.constexpr):
    """fp32 → ``dtype`` → fp32 with round-to-nearest-even (what torch does to an fp32 result).

    bf16 is rounded on the bits: Triton's interpreter truncates fp32 → bf16 casts, while the
    GPU rounds to nearest even; this expression gives the GPU's result on both. NaN is passed
    through untouched: the bit trick would carry NVIDIA's canonical NaN (0x7FFFFFFF, what GPU
    arithmetic produces) into the sign bit and return −0.0.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    else:
        return x.to(dtype).to(tl.float32)
