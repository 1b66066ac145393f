"""Sharding that makes DDP equal to one process, and loaders that leave the global RNG alone."""

import numpy as np
import pytest
import torch

from fastwsol.data import build_loader
from fastwsol.data.transforms import plan_epoch


@pytest.mark.parametrize("num_shards", [2, 3])
def test_shards_of_batch_b_make_the_single_process_batches_of_n_times_b(num_shards):
    candidates = np.arange(50) * 2
    single = plan_epoch(candidates, train=True, batch_size=4 * num_shards, epoch=3, seed=7, max_offset=32)
    shards = [plan_epoch(candidates, train=True, batch_size=4, epoch=3, seed=7, shard_id=k, num_shards=num_shards,
                         max_offset=32) for k in range(num_shards)]
    assert all(len(s) == len(single) for s in shards)
    for i, batch in enumerate(single):
        for field in ("indices", "crop_x", "crop_y", "flip"):
            joined = np.concatenate([getattr(s[i], field) for s in shards])
            assert np.array_equal(joined, getattr(batch, field)), field


def test_iterating_the_fallback_loader_leaves_the_global_rng_alone(tiny_dataset):
    loader = build_loader(tiny_dataset.data_root, tiny_dataset.metadata_root, tiny_dataset.dataset, "train",
                          train=True, batch_size=4, loader="torch", num_threads=0, image_size=64, resize_size=72,
                          output="uint8")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for _ in loader:
        pass
    assert torch.equal(before, torch.get_rng_state())
