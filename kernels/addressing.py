"""Addressing a [channels × positions] tile of one image of a B×D×H×W tensor (u = h·W + w).

When every tensor a kernel touches has evenly strided positions (stride_h = W·stride_w:
NCHW-contiguous, channels_last, and batch- or channel-sliced views of them), a position's offset
is ``u·stride_w``; the general ``(u // W)·stride_h + (u % W)·stride_w`` compiles to one scalar
load per element. With unit stride_w (NCHW) the launch also states ``ALIGN``, the largest power
of two (≤ 16) dividing H·W and the channel and batch strides: runs of ALIGN positions are then
contiguous, start aligned, and are all in or all out of the image, which Triton cannot infer for
H·W = 196 (not a multiple of 16) — so the loads become vector loads (fastwsol/kernel_build.py counts them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ALIGN = 16


def flat_positions(*tensors: torch.Tensor) -> bool:
    """Whether every B×D×H×W tensor's positions are evenly strided."""
    return all(t.shape[2] == 1 or t.stride(2) == t.shape[3] * t.stride(3) for t in tensors)


def position_alignment(*tensors: torch.Tensor) -> int:
    """``ALIGN`` for tensors with flat positions: 1 unless stride_w = 1 everywhere, else the largest
    power of two ≤ 16 dividing H·W and every batch and channel stride."""
    if not flat_positions(*tensors) or any(t.stride(3) != 1 for t in tensors):
        return 1
    _, _, height, width = tensors[0].shape
    values = [height * width, *(s for t in tensors for s in t.stride()[:2])]
    align = MAX_ALIGN
    while align > 1 and any(v % align for v in values):
        align //= 2
    return align


def layout_constants(*tensors: torch.Tensor) -> dict:
    """The constexprs a kernel's addressing needs: ``FLAT_HW`` and ``ALIGN``."""
    return {"FLAT_HW": flat_positions(*tensors), "ALIGN": position_alignment(*tensors)}


@triton.jit
def in_image(positions, HW, ALIGN: tl.constexpr):
    """positions < H·W, stated constant over aligned runs of ALIGN positions."""
    inside = positions < HW
    if ALIGN > 1:
        inside = tl.max_constancy(inside, ALIGN)
    return inside


@triton.jit
def tile_offsets(d, positions, W, stride_d, stride_h, stride_w, FLAT_HW: tl.constexpr, ALIGN: tl.constexpr):
    """int32 offsets of the [len(d) × len(positions)] tile inside one image (the image's int64
    offset goes into the base pointer)."""
    if FLAT_HW:
        offsets = d[:, None] * stride_d + (positions * stride_w)[None, :]
        if ALIGN > 1:  # stride_w = 1: runs of ALIGN positions are contiguous and start aligned
            offsets = tl.max_contiguous(tl.multiple_of(offsets, [1, ALIGN]), [1, ALIGN])
    else:
        offsets = d[:, None] * stride_d + ((positions // W) * stride_h + (positions % W) * stride_w)[None, :]
    return offsets


def feature_sizes(x: torch.Tensor) -> tuple[int, int, int]:
    """(D, HW, W) of a B×D×H×W tensor: H×W is passed as one integer so Triton sees its
    divisibility (the position mask)."""
    _, d, h, w = x.shape
    return d, h * w, w


def position_channel_grid(shape, block_positions: int, block_channels: int) -> tuple[int, int, int]:
    """One program per image, block of positions and block of channels."""
    b, d, h, w = shape
    return b, triton.cdiv(h * w, block_positions), triton.cdiv(d, block_channels)
