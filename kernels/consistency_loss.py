"""Consistency loss (docs/method.md §5) in Triton, with its autograd glue and ``torch.library`` op.

    L_drop = mean over all N = B·D·H·W elements of |F − F_drop|
    dF = g/N · sign(F − F_drop),   dF_drop = −dF      (sign(0) = 0, as torch's abs gradient)

Forward: one read of both tensors, one fp32 partial sum per tile (summed in a fixed order, so
the result is deterministic). Backward: one read of both, one write of both gradients. Any
strides (NCHW, channels_last, or one of each).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastwsol.kernels import runtime
from fastwsol.kernels.addressing import (
    feature_sizes,
    in_image,
    layout_constants,
    position_channel_grid,
    tile_offsets,
)
from fastwsol.kernels.rounding import round_to_dtype

BLOCK_POSITIONS = 64
BLOCK_CHANNELS = 32
NUM_WARPS = 8  # 2048-element tiles: 8 values per thread keeps registers low


@triton.jit
def _load_tile_pair(
    f_ptr, g_ptr, D, HW, W,
    stride_fb, stride_fd, stride_fh, stride_fw,
    stride_gb, stride_gd, stride_gh, stride_gw,
    FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """This program's [BLOCK_D × BLOCK_P] tile of F and of G (image, positions, channels, mask)."""
    b = tl.program_id(0).to(tl.int64)
    positions = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (d[:, None] < D) & in_image(positions, HW, ALIGN)[None, :]
    f_offsets = tile_offsets(d, positions, W, stride_fd, stride_fh, stride_fw, FLAT_HW, ALIGN)
    g_offsets = tile_offsets(d, positions, W, stride_gd, stride_gh, stride_gw, FLAT_HW, ALIGN)
    f = tl.load(f_ptr + b * stride_fb + f_offsets, mask=mask, other=0.0)
    g = tl.load(g_ptr + b * stride_gb + g_offsets, mask=mask, other=0.0)
    return b, positions, d, mask, f, g


@triton.jit
def _abs_difference_sum_kernel(
    f_ptr, g_ptr, partial_ptr, D, HW, W,
    stride_fb, stride_fd, stride_fh, stride_fw,
    stride_gb, stride_gd, stride_gh, stride_gw,
    UPCAST: tl.constexpr, FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """partial[tile] = Σ_tile |round_dtype(F − G)|, fp32 accumulation (UPCAST: no rounding, as on F.float())."""
    b, positions, d, mask, f, g = _load_tile_pair(
        f_ptr, g_ptr, D, HW, W, stride_fb, stride_fd, stride_fh, stride_fw,
        stride_gb, stride_gd, stride_gh, stride_gw, FLAT_HW, ALIGN, BLOCK_P, BLOCK_D,
    )
    difference = f.to(tl.float32) - g.to(tl.float32)
    if not UPCAST:  # torch subtracts in the input dtype: round the difference the same way
        difference = round_to_dtype(difference, f_ptr.dtype.element_ty)
    tile = (tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)) * tl.num_programs(2) + tl.program_id(2)
    tl.store(partial_ptr + tile, tl.sum(tl.sum(tl.abs(difference), axis=1), axis=0))


@triton.jit
def _abs_difference_backward_kernel(
    f_ptr, g_ptr, scale_ptr, df_ptr, dg_ptr, D, HW, W,
    stride_fb, stride_fd, stride_fh, stride_fw,
    stride_gb, stride_gd, stride_gh, stride_gw,
    stride_dfb, stride_dfd, stride_dfh, stride_dfw,
    stride_dgb, stride_dgd, stride_dgh, stride_dgw,
    FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dF = scale·sign(F − G), dG = −dF, with scale = g/N (each gradient written with its own strides)."""
    b, positions, d, mask, f, g = _load_tile_pair(
        f_ptr, g_ptr, D, HW, W, stride_fb, stride_fd, stride_fh, stride_fw,
        stride_gb, stride_gd, stride_gh, stride_gw, FLAT_HW, ALIGN, BLOCK_P, BLOCK_D,
    )
    difference = f.to(tl.float32) - g.to(tl.float32)
    sign = tl.where(difference > 0, 1.0, tl.where(difference < 0, -1.0, 0.0))
    grad = sign * tl.load(scale_ptr)
    df_offsets = tile_offsets(d, positions, W, stride_dfd, stride_dfh, stride_dfw, FLAT_HW, ALIGN)
    dg_offsets = tile_offsets(d, positions, W, stride_dgd, stride_dgh, stride_dgw, FLAT_HW, ALIGN)
    # Rounded as torch's cast of an fp32 gradient rounds (round_to_dtype: the interpreter truncates bf16).
    df = round_to_dtype(grad, df_ptr.dtype.element_ty)
    dg = round_to_dtype(-grad, dg_ptr.dtype.element_ty)
    tl.store(df_ptr + b * stride_dfb + df_offsets, df.to(df_ptr.dtype.element_ty), mask=mask)
    tl.store(dg_ptr + b * stride_dgb + dg_offsets, dg.to(dg_ptr.dtype.element_ty), mask=mask)


def gradient_scale(grad_loss: torch.Tensor, numel: int) -> torch.Tensor:
    """s = g/N (fp32, one element) of dF = s·sign(F − F_drop): g/N in the loss dtype, as torch's
    mean backward rounds it."""
    return (grad_loss / numel).to(torch.float32).reshape(1)


def _forward(feature: torch.Tensor, feature_dropped: torch.Tensor, upcast: bool) -> torch.Tensor:
    runtime.check_runnable(feature, "consistency_loss")
    grid = position_channel_grid(feature.shape, BLOCK_POSITIONS, BLOCK_CHANNELS)
    partial = torch.empty(grid[0] * grid[1] * grid[2], device=feature.device, dtype=torch.float32)
    _abs_difference_sum_kernel[grid](
        feature, feature_dropped, partial, *feature_sizes(feature), *feature.stride(), *feature_dropped.stride(),
        UPCAST=upcast, **layout_constants(feature, feature_dropped), BLOCK_P=BLOCK_POSITIONS, BLOCK_D=BLOCK_CHANNELS,
        num_warps=NUM_WARPS,
    )
    return (partial.sum() / feature.numel()).to(torch.float32 if upcast else feature.dtype)


@torch.library.custom_op("fastwsol::consistency_loss", mutates_args=())
def consistency_loss_op(feature: torch.Tensor, feature_dropped: torch.Tensor, upcast: bool = False) -> torch.Tensor:
    """mean |F − F_drop| as a 0-dim tensor of F's dtype (``upcast``: of F.float(), fp32)."""
    return _forward(feature, feature_dropped, upcast)


@consistency_loss_op.register_fake
def _(feature, feature_dropped, upcast=False):
    return feature.new_empty((), dtype=torch.float32 if upcast else feature.dtype)


@torch.library.custom_op("fastwsol::consistency_loss_backward", mutates_args=())
def consistency_loss_backward_op(
    grad_loss: torch.Tensor, feature: torch.Tensor, feature_dropped: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dF, dF_drop) = (g/N·sign(F − F_drop), −g/N·sign(F − F_drop))."""
    runtime.check_runnable(feature, "consistency_loss")
    scale = gradient_scale(grad_loss, feature.numel())
    # empty_like keeps a dense input's strides (NCHW or channels_last) and gives a non-dense one
    # (expanded, sliced) dense strides; the kernel writes each gradient with its own strides.
    grad_feature, grad_dropped = torch.empty_like(feature), torch.empty_like(feature_dropped)
    tensors = (feature, feature_dropped, grad_feature, grad_dropped)
    _abs_difference_backward_kernel[position_channel_grid(feature.shape, BLOCK_POSITIONS, BLOCK_CHANNELS)](
        *tensors[:2], scale, *tensors[2:], *feature_sizes(feature), *(s for t in tensors for s in t.stride()),
        **layout_constants(*tensors), BLOCK_P=BLOCK_POSITIONS, BLOCK_D=BLOCK_CHANNELS, num_warps=NUM_WARPS,
    )
    return grad_feature, grad_dropped


@consistency_loss_backward_op.register_fake
def _(grad_loss, feature, feature_dropped):
    return torch.empty_like(feature), torch.empty_like(feature_dropped)


def _setup_context(ctx, inputs, output):
    feature, feature_dropped, _ = inputs
    ctx.save_for_backward(feature, feature_dropped)


def _backward(ctx, grad_loss):
    feature, feature_dropped = ctx.saved_tensors
    # upcast: grad_loss is fp32, so g/N is the fp32 path's; the gradients are written in F's dtype.
    return (*consistency_loss_backward_op(grad_loss, feature, feature_dropped), None)


consistency_loss_op.register_autograd(_backward, setup_context=_setup_context)


def consistency_loss(feature: torch.Tensor, feature_dropped: torch.Tensor, upcast: bool = False) -> torch.Tensor:
    """L_drop = mean |F − F_drop| over all elements (gradient to both). ``upcast``: the result for
    F.float() and F_drop.float() (fp32, gradients in the inputs' dtype) without the fp32 copies."""
    return consistency_loss_op(feature, feature_dropped, upcast)
