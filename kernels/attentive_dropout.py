"""Attentive dropout (docs/method.md §3) in Triton, with its autograd glue and ``torch.library`` op.

    m_u    = mean_c x_{c,u}                      (fp32 accumulation, rounded to x's dtype as torch does)
    keep_u = 0 iff m_u > γ·max_u m  and  r_u <= p, else 1        out = x·keep,  dx = dout·keep

Three launches: channel mean (one read of x), per-image max + keep mask (reads only the
B×H×W means), apply (one read of x, one write of out). The random draw r_u is Philox
(``tl.rand(seed, b·HW + u)``) with a fresh seed drawn from torch's generator of x's device on
every call, so successive calls differ and a run is reproducible from ``torch.manual_seed``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastwsol.kernels import runtime
from fastwsol.kernels.addressing import in_image, layout_constants, tile_offsets
from fastwsol.kernels.rounding import round_to_dtype

# Tiles: positions × channels.
BLOCK_POSITIONS = 64
BLOCK_CHANNELS = 32
NUM_WARPS = 8  # 2048-element tiles: 8 values per thread keeps registers low
BLOCK_MASK_POSITIONS = 256  # positions per step of the per-image mask program
SEED_HIGH = 2**31 - 1


@triton.jit
def _channel_mean_kernel(
    x_ptr, mean_ptr, D, HW, W,
    stride_xb, stride_xd, stride_xh, stride_xw,
    FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """mean[b, u] = round_to_x_dtype(Σ_c x[b, c, u] / D), fp32 accumulation."""
    b = tl.program_id(0).to(tl.int64)
    positions = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    inside = in_image(positions, HW, ALIGN)
    channels = tl.arange(0, BLOCK_D)
    # Accumulated as a [BLOCK_D, BLOCK_P] tile, reduced over channels once after the loop (the
    # reduction crosses warps: shared memory and a barrier, so not per iteration).
    total = tl.zeros((BLOCK_D, BLOCK_P), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + channels
        offsets = tile_offsets(d, positions, W, stride_xd, stride_xh, stride_xw, FLAT_HW, ALIGN)
        tile = tl.load(x_ptr + b * stride_xb + offsets, mask=(d[:, None] < D) & inside[None, :], other=0.0)
        total += tile.to(tl.float32)
    # div_rn: '/' compiles to the approximate div.full.f32 on a GPU, and m feeds the strict m > γ·max.
    mean = round_to_dtype(tl.div_rn(tl.sum(total, axis=0), D.to(tl.float32)), x_ptr.dtype.element_ty)
    tl.store(mean_ptr + b * HW + positions, mean, mask=inside)


@triton.jit
def _max_keeping_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _keep_mask_kernel(
    mean_ptr, keep_ptr, uniform_ptr, seed_ptr, HW, threshold, drop_prob,
    stride_ub, stride_uu,
    HAS_UNIFORM: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """keep[b, u] = 0 iff mean[b, u] > γ·max_u mean[b] and r[b, u] <= p (one program per image)."""
    b = tl.program_id(0).to(tl.int64)
    row = mean_ptr + b * HW
    offsets = tl.arange(0, BLOCK_P)
    image_max = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    for u0 in range(0, HW, BLOCK_P):
        u = u0 + offsets
        image_max = _max_keeping_nan(image_max, tl.load(row + u, mask=u < HW, other=float("-inf")))
    # γ·max in x's dtype, as the reference's `threshold * image_max` is. A NaN mean makes the
    # max NaN, as torch's max does, so the image keeps every position (every `>` is false).
    limit = round_to_dtype(threshold * tl.reduce(image_max, 0, _max_keeping_nan), keep_ptr.dtype.element_ty)
    if not HAS_UNIFORM:
        seed = tl.load(seed_ptr)
    for u0 in range(0, HW, BLOCK_P):
        u = u0 + offsets
        in_image = u < HW
        mean = tl.load(row + u, mask=in_image, other=0.0)
        if HAS_UNIFORM:
            r = tl.load(uniform_ptr + b * stride_ub + u * stride_uu, mask=in_image, other=1.0).to(tl.float32)
        else:
            r = tl.rand(seed, (b * HW + u).to(tl.int32))
        drop = (mean > limit) & (r <= drop_prob)
        keep = tl.where(drop, 0.0, 1.0)
        tl.store(keep_ptr + b * HW + u, keep.to(keep_ptr.dtype.element_ty), mask=in_image)


@triton.jit
def _apply_keep_kernel(
    x_ptr, keep_ptr, out_ptr, D, HW, W,
    stride_xb, stride_xd, stride_xh, stride_xw,
    stride_ob, stride_od, stride_oh, stride_ow,
    FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[b, c, u] = x[b, c, u] · keep[b, u] (forward: x = input; backward: x = dout)."""
    b = tl.program_id(0).to(tl.int64)
    positions = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    inside = in_image(positions, HW, ALIGN)
    mask = (d[:, None] < D) & inside[None, :]
    keep = tl.load(keep_ptr + b * HW + positions, mask=inside, other=0.0)
    x_offsets = tile_offsets(d, positions, W, stride_xd, stride_xh, stride_xw, FLAT_HW, ALIGN)
    x = tl.load(x_ptr + b * stride_xb + x_offsets, mask=mask)
    out_offsets = tile_offsets(d, positions, W, stride_od, stride_oh, stride_ow, FLAT_HW, ALIGN)
    out = (x.to(tl.float32) * keep.to(tl.float32)[None, :]).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + b * stride_ob + out_offsets, out, mask=mask)


def _sizes(x: torch.Tensor) -> tuple[int, int, int]:
    """(D, HW, W): H×W is passed as one integer so Triton sees its divisibility (the position mask)."""
    _, d, h, w = x.shape
    return d, h * w, w


def _grid_positions_channels(shape) -> tuple[int, int, int]:
    b, d, h, w = shape
    return b, triton.cdiv(h * w, BLOCK_POSITIONS), triton.cdiv(d, BLOCK_CHANNELS)


def _apply_keep(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)  # keeps x's memory format (NCHW or channels_last)
    _apply_keep_kernel[_grid_positions_channels(x.shape)](
        x, keep, out, *_sizes(x), *x.stride(), *out.stride(),
        **layout_constants(x, out), BLOCK_P=BLOCK_POSITIONS, BLOCK_D=BLOCK_CHANNELS, num_warps=NUM_WARPS,
    )
    return out


def _keep_mask(x: torch.Tensor, threshold: float, drop_prob: float, seed, uniform) -> torch.Tensor:
    b, d, h, w = x.shape
    mean = torch.empty((b, h * w), device=x.device, dtype=torch.float32)
    _channel_mean_kernel[(b, triton.cdiv(h * w, BLOCK_POSITIONS))](
        x, mean, *_sizes(x), *x.stride(), **layout_constants(x),
        BLOCK_P=BLOCK_POSITIONS, BLOCK_D=BLOCK_CHANNELS, num_warps=NUM_WARPS,
    )
    keep = torch.empty((b, 1, h, w), device=x.device, dtype=x.dtype)
    if uniform is not None:
        # The reference compares `uniform <= p` in uniform's dtype: round p the same way.
        drop_prob = float(torch.tensor(drop_prob, dtype=uniform.dtype))
        flat_uniform = uniform.reshape(b, h * w)
        strides = flat_uniform.stride()
    else:
        flat_uniform, strides = keep, (0, 0)  # unused pointer
    _keep_mask_kernel[(b,)](
        mean, keep, flat_uniform, seed if seed is not None else keep, h * w, threshold, drop_prob, *strides,
        HAS_UNIFORM=uniform is not None, BLOCK_P=BLOCK_MASK_POSITIONS,
    )
    return keep


@torch.library.custom_op("fastwsol::attentive_dropout", mutates_args=())
def attentive_dropout_op(
    x: torch.Tensor, threshold: float, drop_prob: float, seed: torch.Tensor | None, uniform: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x·keep, keep). ``seed``: int64 tensor of one element for the Philox draw; ``uniform``
    (B×1×H×W) replaces the draw when given."""
    if seed is None and uniform is None:
        raise ValueError("attentive_dropout needs a seed tensor or a uniform tensor")
    runtime.check_runnable(x, "attentive_dropout")
    keep = _keep_mask(x, threshold, drop_prob, seed, uniform)
    return _apply_keep(x, keep), keep


@attentive_dropout_op.register_fake
def _(x, threshold, drop_prob, seed, uniform):
    return torch.empty_like(x), x.new_empty((x.shape[0], 1, x.shape[2], x.shape[3]))


@torch.library.custom_op("fastwsol::attentive_dropout_backward", mutates_args=())
def attentive_dropout_backward_op(grad_out: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """dx = dout · keep (keep broadcast over channels)."""
    runtime.check_runnable(grad_out, "attentive_dropout")
    return _apply_keep(grad_out, keep)


@attentive_dropout_backward_op.register_fake
def _(grad_out, keep):
    return torch.empty_like(grad_out)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_out, grad_keep):
    (keep,) = ctx.saved_tensors
    return attentive_dropout_backward_op(grad_out, keep), None, None, None, None


attentive_dropout_op.register_autograd(_backward, setup_context=_setup_context)


def attentive_dropout(
    x: torch.Tensor, threshold: float, drop_prob: float, *, uniform: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x·keep, keep) of docs/method.md §3; ``uniform`` (B×1×H×W in [0, 1)) replaces the draw,
    otherwise the Philox seed is drawn from torch's generator of x's device."""
    seed = None
    if uniform is None:
        seed = torch.randint(0, SEED_HIGH, (1,), device=x.device, dtype=torch.int64)
    return attentive_dropout_op(x, float(threshold), float(drop_prob), seed, uniform)
