"""The dtypes and memory layouts the Triton kernels are checked in, and the tolerances they are
held to against the reference (``fastwsol.method.reference``): one table for the kernel tests
(``tests/kernels/``) and ``fastwsol check-gpu``. The shapes are ``fastwsol.kernel_shapes``'s.

Attentive dropout is held to equality (mask, output and gradient, given the same uniform draw),
as are the consistency loss's gradients (g/N rounded as torch's mean backward, times a sign):
they have no tolerance.
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# (dtype, layout) names: every op is checked in each
DTYPE_LAYOUT_CASES = tuple((dtype, layout) for dtype in DTYPES for layout in LAYOUTS)

# Upstream gradients of (L_sim, L_norm) in the alignment loss's checks: distinct, so that an
# exchange of the two backward paths shows
UPSTREAM = (0.7, 1.3)

# The alignment loss (L_sim, L_norm and both gradients) against the float64 reference on the same
# input values. "loss": absolute; "grad": relative to the reference gradient's largest magnitude.
ALIGNMENT_TOLERANCES = {
    # fp32 arithmetic throughout (the class max's sign, its only use, as an fp32 dot's: one bf16
    # pass, rechecked in tf32x3 where within its error bound): summation order and fp32 rounding
    "fp32": {"loss": 1e-5, "grad": 1e-4},
    # still fp32 inside, but losses and gradients come back in bf16 (7 mantissa bits); a 16-bit
    # input is held to these bounds too
    "bf16": {"loss": 1e-3, "grad": 2e-2},
}

# The consistency loss's value, relative to the reference's.
CONSISTENCY_LOSS_RTOL = {
    "fp32": 1e-5,  # only the summation order differs
    "bf16": 8e-3,  # the fp32 sum is rounded once to bf16, like torch's, but summed in another order: one bf16 step
}
