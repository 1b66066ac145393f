"""Attentive dropout (docs/method.md §3) in Triton, with its autograd glue and ``torch.library`` op.

    m_u    = mean_c x_{c,u}                      (fp32 accumulation, rounded to x's dtype as torch does)
    keep_u = 0 iff m_u > γ·max_u m  and  r_u <= p, else 1        out = x·keep,  dx = dout·keep

Forward: the keep mask of an image needs the max over all its positions of the channel means, so
x is read twice — once for the means, once to apply the mask. The images go in groups of
``GROUP_BYTES`` of x, and one kernel is launched once per group and once more: launch k takes the
channel means of group k (and each tile's max of them) while its other programs apply the mask to
group k − 1, whose x the previous launch read and L2 still holds. So x comes from HBM once; out
is written once. Backward: one launch (dx = dout·keep). The random draw r_u is Philox
(``tl.rand(seed, b·HW + u)``) with a fresh seed drawn from torch's generator of x's device on
every call, so successive calls differ and a run is reproducible from ``torch.manual_seed``.
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

# Tiles: positions × channels (the mask applied: one tile a program; the means: a channel loop).
BLOCK_POSITIONS = 64
BLOCK_CHANNELS = 32  # the backward's
APPLY_TILE_BYTES = 4096  # the forward's mask tile: 32 channels of bf16, 16 of fp32 (more programs a launch)
MEAN_BLOCK_POSITIONS = 32
MEAN_BLOCK_CHANNELS = 64
NUM_WARPS = 8  # 2048-element tiles: 8 values per thread keeps registers low
# x bytes of one group: while a launch re-reads group k − 1 (and writes its output) it reads group
# k, so about three groups are in flight: 36 MB, in an H100's 50 MB L2 (an A100's 40 MB).
GROUP_BYTES = 12 * 2**20
SEED_HIGH = 2**31 - 1


@triton.jit
def _max_keeping_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _channel_mean_tile(x_ptr, mean_ptr, tile_max_ptr, b, tile, D, HW, W, stride_xb, stride_xd, stride_xh, stride_xw,
                       FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
                       MEAN_TILES: tl.constexpr):
    """mean[b, u] = round_to_x_dtype(Σ_c x[b, c, u] / D) (fp32 accumulation) for one tile of
    positions, and the tile's max of them (a NaN mean makes it NaN, as torch's max) in row b of
    the B × MEAN_TILES maxima (rows aligned: the mask's programs read a row as a vector)."""
    positions = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    inside = in_image(positions, HW, ALIGN)
    channels = tl.arange(0, BLOCK_D)
    # Accumulated as a [BLOCK_D, BLOCK_P] tile, reduced over channels once after the loop (the
    # reduction crosses warps: shared memory and a barrier, so not per iteration).
    total = tl.zeros((BLOCK_D, BLOCK_P), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + channels
        offsets = tile_offsets(d, positions, W, stride_xd, stride_xh, stride_xw, FLAT_HW, ALIGN)
        total += tl.load(x_ptr + b * stride_xb + offsets, mask=(d[:, None] < D) & inside[None, :], other=0.0).to(
            tl.float32)
    # div_rn: '/' compiles to the approximate div.full.f32 on a GPU, and m feeds the strict m > γ·max.
    mean = round_to_dtype(tl.div_rn(tl.sum(total, axis=0), D.to(tl.float32)), x_ptr.dtype.element_ty)
    tl.store(mean_ptr + b * HW + positions, mean, mask=inside)
    tile_max = tl.reduce(tl.where(inside, mean, float("-inf")), 0, _max_keeping_nan)
    tl.store(tile_max_ptr + b * MEAN_TILES + tile, tile_max)


# The image ranges change from launch to launch: one binary for all (no specialisation on their values).
@triton.jit(do_not_specialize=["mean_first", "mean_images", "apply_first"])
def _dropout_forward_kernel(
    x_ptr, mean_ptr, tile_max_ptr, keep_ptr, out_ptr, uniform_ptr, seed_ptr,
    mean_first, mean_images, apply_first,
    D, HW, W, threshold, drop_prob,
    stride_xb, stride_xd, stride_xh, stride_xw,
    stride_ob, stride_od, stride_oh, stride_ow,
    stride_ub, stride_uu,
    HAS_UNIFORM: tl.constexpr, FLAT_HW: tl.constexpr, ALIGN: tl.constexpr,
    MEAN_BLOCK_P: tl.constexpr, MEAN_BLOCK_D: tl.constexpr, MEAN_TILES: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One launch of the pipelined forward (module docstring): the first ``mean_images × tiles``
    programs take the channel means of images mean_first…; the rest apply the keep mask to
    images apply_first… (whose means the previous launch took): per [BLOCK_D × BLOCK_P] tile,
    keep[b, u] = 0 iff mean[b, u] > γ·max_u mean[b] and r[b, u] <= p, out = x·keep."""
    program = tl.program_id(0)
    mean_tiles = tl.cdiv(HW, MEAN_BLOCK_P)
    mean_programs = mean_images * mean_tiles
    if program < mean_programs:
        b = (mean_first + program // mean_tiles).to(tl.int64)
        _channel_mean_tile(x_ptr, mean_ptr, tile_max_ptr, b, program % mean_tiles, D, HW, W,
                           stride_xb, stride_xd, stride_xh, stride_xw, FLAT_HW, ALIGN, MEAN_BLOCK_P, MEAN_BLOCK_D,
                           MEAN_TILES)
    else:
        apply = program - mean_programs
        channel_tiles = tl.maximum(tl.cdiv(D, BLOCK_D), 1)  # D = 0: one tile still writes keep
        image_tiles = tl.cdiv(HW, BLOCK_P) * channel_tiles
        b = (apply_first + apply // image_tiles).to(tl.int64)
        position_tile = (apply % image_tiles) // channel_tiles
        channel_tile = apply % channel_tiles
        # γ·max in x's dtype, as the reference's `threshold * image_max` is. A NaN mean makes the
        # max NaN, as torch's max does, so the image keeps every position (every `>` is false).
        tiles = tl.arange(0, MEAN_TILES)
        tile_max = tl.load(tile_max_ptr + b * MEAN_TILES + tiles, mask=tiles < mean_tiles, other=float("-inf"))
        limit = round_to_dtype(threshold * tl.reduce(tile_max, 0, _max_keeping_nan), x_ptr.dtype.element_ty)
        positions = position_tile * BLOCK_P + tl.arange(0, BLOCK_P)
        inside = in_image(positions, HW, ALIGN)
        mean = tl.load(mean_ptr + b * HW + positions, mask=inside, other=0.0)
        if HAS_UNIFORM:
            r = tl.load(uniform_ptr + b * stride_ub + positions * stride_uu, mask=inside, other=1.0).to(tl.float32)
        else:
            r = tl.rand(tl.load(seed_ptr), (b * HW + positions).to(tl.int32))
        keep = tl.where((mean > limit) & (r <= drop_prob), 0.0, 1.0)
        if channel_tile == 0:
            tl.store(keep_ptr + b * HW + positions, keep.to(keep_ptr.dtype.element_ty), mask=inside)
        d = channel_tile * BLOCK_D + tl.arange(0, BLOCK_D)
        mask = (d[:, None] < D) & inside[None, :]
        x_offsets = tile_offsets(d, positions, W, stride_xd, stride_xh, stride_xw, FLAT_HW, ALIGN)
        x = tl.load(x_ptr + b * stride_xb + x_offsets, mask=mask)
        out_offsets = tile_offsets(d, positions, W, stride_od, stride_oh, stride_ow, FLAT_HW, ALIGN)
        out = (x.to(tl.float32) * keep[None, :]).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + b * stride_ob + out_offsets, out, mask=mask)


@triton.jit
def _apply_keep_kernel(
    x_ptr, keep_ptr, out_ptr, D, HW, W,
    stride_xb, stride_xd, stride_xh, stride_xw,
    stride_ob, stride_od, stride_oh, stride_ow,
    FLAT_HW: tl.constexpr, ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[b, c, u] = x[b, c, u] · keep[b, u]: the backward, dx = dout·keep (x = dout)."""
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


def _apply_keep(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)  # keeps x's memory format (NCHW or channels_last)
    _apply_keep_kernel[position_channel_grid(x.shape, BLOCK_POSITIONS, BLOCK_CHANNELS)](
        x, keep, out, *feature_sizes(x), *x.stride(), *out.stride(),
        **layout_constants(x, out), BLOCK_P=BLOCK_POSITIONS, BLOCK_D=BLOCK_CHANNELS, num_warps=NUM_WARPS,
    )
    return out


def apply_block_channels(element_size: int) -> int:
    """Channels of the forward's mask tile (``APPLY_TILE_BYTES`` of x)."""
    return max(1, APPLY_TILE_BYTES // (BLOCK_POSITIONS * element_size))


def images_per_group(x: torch.Tensor) -> int:
    """Images whose channel means one launch takes (and the next re-reads to apply the mask): as
    many as fit in ``GROUP_BYTES``, at least one."""
    _, d, h, w = x.shape
    return max(1, GROUP_BYTES // max(1, d * h * w * x.element_size()))


def _forward(x: torch.Tensor, threshold: float, drop_prob: float, seed, uniform) -> tuple[torch.Tensor, torch.Tensor]:
    b, d, h, w = x.shape
    positions = h * w
    mean_tiles = triton.cdiv(positions, MEAN_BLOCK_POSITIONS)
    mean = torch.empty((b, positions), device=x.device, dtype=torch.float32)
    tile_max = torch.empty((b, triton.next_power_of_2(mean_tiles)), device=x.device, dtype=torch.float32)
    keep = torch.empty((b, 1, h, w), device=x.device, dtype=x.dtype)
    out = torch.empty_like(x)  # keeps x's memory format (NCHW or channels_last)
    if uniform is not None:
        # The reference compares `uniform <= p` in uniform's dtype: round p the same way.
        drop_prob = float(torch.tensor(drop_prob, dtype=uniform.dtype))
        flat_uniform = uniform.reshape(b, positions)
        strides = flat_uniform.stride()
    else:
        flat_uniform, strides = keep, (0, 0)  # unused pointer
    block_channels = apply_block_channels(x.element_size())
    apply_tiles = triton.cdiv(positions, BLOCK_POSITIONS) * max(1, triton.cdiv(d, block_channels))
    group = images_per_group(x)
    firsts = list(range(0, b, group)) if positions else []
    # Launch k takes the means of group k and applies the mask to group k − 1.
    for means_of, applied in zip([*firsts, b], [None, *firsts]):
        mean_images = min(group, b - means_of)
        apply_images = 0 if applied is None else min(group, b - applied)
        programs = mean_images * mean_tiles + apply_images * apply_tiles
        if not programs:
            continue
        _dropout_forward_kernel[(programs,)](
            x, mean, tile_max, keep, out, flat_uniform, seed if seed is not None else keep,
            means_of, mean_images, applied or 0, d, positions, w, threshold, drop_prob,
            *x.stride(), *out.stride(), *strides,
            HAS_UNIFORM=uniform is not None, **layout_constants(x, out),
            MEAN_BLOCK_P=MEAN_BLOCK_POSITIONS, MEAN_BLOCK_D=MEAN_BLOCK_CHANNELS,
            MEAN_TILES=triton.next_power_of_2(mean_tiles), BLOCK_P=BLOCK_POSITIONS, BLOCK_D=block_channels,
            num_warps=NUM_WARPS,
        )
    return out, keep


@torch.library.custom_op("fastwsol::attentive_dropout", mutates_args=())
def attentive_dropout_op(
    x: torch.Tensor, threshold: float, drop_prob: float, seed: torch.Tensor | None, uniform: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x·keep, keep). ``seed``: int64 tensor of one element for the Philox draw; ``uniform``
    (B×1×H×W) replaces the draw when given."""
    if seed is None and uniform is None:
        raise ValueError("attentive_dropout needs a seed tensor or a uniform tensor")
    runtime.check_runnable(x, "attentive_dropout")
    return _forward(x, threshold, drop_prob, seed, uniform)


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
