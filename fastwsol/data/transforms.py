"""The transforms of docs/method.md §6 as data: normalisation constants and the per-epoch sampling
plan (which images, crop offsets, flips). Both loaders execute the same plan, so a DALI batch
and a fallback batch of the same epoch and seed hold the same images, crops and flips.

Train: resize to ``resize_size``² → crop ``image_size``² at a uniform integer offset → flip
with probability 1/2 → normalise. Eval: resize to ``image_size``² → normalise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "BatchPlan", "normalize_on_device", "plan_epoch", "shard_range"]

# ImageNet RGB statistics on the [0, 1] scale: the single source of truth for both loaders
# and for on-device normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_on_device(images: torch.Tensor) -> torch.Tensor:
    """uint8 B×3×H×W (0..255) → float32 ``(x/255 − mean)/std`` on the images' device, in the
    standard contiguous layout whatever the input's (the loaders' uint8 batches are views of
    HWC memory: the transpose happens here, in the same pass).

    Written as one fused-friendly expression so it folds into a compiled step (FFCV-style:
    ship uint8 from the loader, normalise where the model runs).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.to(torch.float32, memory_format=torch.contiguous_format) / 255.0 - mean) / std


@dataclass(frozen=True)
class BatchPlan:
    """One batch: ``indices`` into the split's image ids; crop offsets in pixels of the resized
    image and flips (train only; zeros for eval)."""

    indices: np.ndarray  # int64 (B,)
    crop_x: np.ndarray  # int64 (B,)
    crop_y: np.ndarray  # int64 (B,)
    flip: np.ndarray  # bool (B,)

    def __len__(self) -> int:
        return len(self.indices)


def shard_range(num_samples: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """Contiguous [start, stop) of shard ``shard_id``; sizes differ by at most one and the
    shards tile [0, num_samples) exactly once."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"need 0 <= shard_id < num_shards, got shard_id={shard_id}, num_shards={num_shards}")
    return num_samples * shard_id // num_shards, num_samples * (shard_id + 1) // num_shards


def train_batches_per_epoch(num_samples: int, batch_size: int, num_shards: int) -> int:
    """Every shard yields the same number of full batches (distributed steps stay in lockstep)."""
    return (num_samples // num_shards) // batch_size


def plan_epoch(
    candidates: np.ndarray,
    *,
    train: bool,
    batch_size: int,
    epoch: int,
    seed: int,
    shard_id: int = 0,
    num_shards: int = 1,
    max_offset: int = 0,
) -> list[BatchPlan]:
    """The batches of one epoch for one shard.

    ``candidates``: the usable image indices (bad images already removed). Train: one
    permutation of all candidates per (seed, epoch) and one crop offset (uniform in
    [0, max_offset]) and flip (a fair coin) per position of it, all shared by the shards;
    global batch i is positions [i·G, (i+1)·G) with G = batch_size·num_shards, and shard k
    takes its k-th slice of batch_size. So N shards of batch b see exactly the batches, crops
    and flips of one process with batch N·b (a DDP run equals the single-process run); the
    ``len % G`` leftovers sit out this epoch. Eval: the shard's contiguous slice in order, the
    last batch possibly smaller, so the shards cover every candidate exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    candidates = np.asarray(candidates, dtype=np.int64)
    if not train:
        start, stop = shard_range(len(candidates), shard_id, num_shards)
        chosen = candidates[start:stop]
        zeros = np.zeros(len(chosen), np.int64)
        return [
            BatchPlan(chosen[i : i + batch_size], zeros[i : i + batch_size], zeros[i : i + batch_size],
                      zeros[i : i + batch_size].astype(bool))
            for i in range(0, len(chosen), batch_size)
        ]
    shard_range(0, shard_id, num_shards)  # validates the shard arguments
    global_batch = batch_size * num_shards
    count = len(candidates) // global_batch * global_batch
    order = np.random.default_rng([seed, epoch]).permutation(candidates)[:count]
    rng = np.random.default_rng([seed, epoch, 1])
    crop_x = rng.integers(0, max_offset + 1, size=count)
    crop_y = rng.integers(0, max_offset + 1, size=count)
    flip = rng.random(count) < 0.5
    starts = range(shard_id * batch_size, count, global_batch)
    return [
        BatchPlan(
            order[i : i + batch_size], crop_x[i : i + batch_size], crop_y[i : i + batch_size], flip[i : i + batch_size]
        )
        for i in starts
    ]
