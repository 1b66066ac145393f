"""What every loader shares: metadata, image checks, the epoch plan, ``len()``/``set_epoch``."""

from __future__ import annotations

from pathlib import Path

import torch

from fastwsol.data.images import check_split_images
from fastwsol.data.metadata import read_split_metadata
from fastwsol.data.transforms import BatchPlan, plan_epoch, shard_range, train_batches_per_epoch

OUTPUTS = ("float", "uint8")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → the current CUDA device when CUDA is present, else CPU."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class SplitLoader:
    """Batches ``{"images", "labels", "indices"}`` of one split (one shard of it).

    ``indices`` index ``metadata.image_ids`` (so GT boxes and ids can be looked up; GT masks
    are files under ``mask_dir``).
    Iterating runs one epoch; call :meth:`set_epoch` before each epoch to reshuffle (train).
    """

    backend = "?"

    def __init__(
        self,
        data_root,
        metadata_root,
        dataset: str,
        split: str,
        *,
        train: bool,
        batch_size: int,
        device: str | torch.device = "auto",
        num_threads: int = 2,
        seed: int = 0,
        shard_id: int = 0,
        num_shards: int = 1,
        skip_bad: bool = False,
        image_size: int = 224,
        resize_size: int = 256,
        output: str = "float",
        verify: str = "header",
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if batch_size < 1 or num_threads < 0:
            raise ValueError(f"need batch_size >= 1 and num_threads >= 0, got {batch_size}, {num_threads}")
        if train and resize_size < image_size:
            raise ValueError(f"train crops image_size={image_size} from resize_size={resize_size}: need resize >= crop")
        shard_range(0, shard_id, num_shards)  # validates the shard arguments early
        self.metadata = read_split_metadata(metadata_root, dataset, split, require_localization=not train)
        self.image_dir = Path(data_root) / dataset
        self.mask_dir = self.image_dir  # wsolevaluation unpacks the GT masks beside the images
        self.checked = check_split_images(
            self.image_dir, self.metadata, skip_bad=skip_bad, verify=verify, mask_dir=self.mask_dir
        )
        self.train, self.batch_size, self.seed = train, batch_size, seed
        self.shard_id, self.num_shards, self.num_threads = shard_id, num_shards, num_threads
        self.image_size, self.resize_size, self.output = image_size, resize_size, output
        self.device = resolve_device(device)
        self.epoch = 0
        usable = len(self.checked.usable)
        if train:
            self._num_batches = train_batches_per_epoch(usable, batch_size, num_shards)
            if self._num_batches == 0:
                raise ValueError(
                    f"{self.metadata.split_dir}: {usable} usable image(s) over {num_shards} shard(s) "
                    f"make no full batch of {batch_size} (train drops the last partial batch)"
                )
            self.num_samples = self._num_batches * batch_size
        else:
            start, stop = shard_range(usable, shard_id, num_shards)
            self.num_samples = stop - start
            self._num_batches = -(-self.num_samples // batch_size)
        self._labels = torch.from_numpy(self.metadata.labels.astype("int64"))

    @property
    def problems(self) -> list[tuple[str, str]]:
        """(image_id, reason) of the images skipped with ``skip_bad=True``."""
        return self.checked.problems

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self) -> list[BatchPlan]:
        """This shard's batches for the current epoch (same for every backend)."""
        return plan_epoch(
            self.checked.usable,
            train=self.train,
            batch_size=self.batch_size,
            epoch=self.epoch,
            seed=self.seed,
            shard_id=self.shard_id,
            num_shards=self.num_shards,
            max_offset=self.resize_size - self.image_size,
        )

    def _batch(self, images: torch.Tensor, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        return {
            "images": images.to(self.device, non_blocking=non_blocking),
            "labels": self._labels[indices].to(self.device, non_blocking=non_blocking),
            "indices": indices.to(self.device, non_blocking=non_blocking),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.metadata.split_dir}, train={self.train}, batch_size={self.batch_size}, "
            f"shard={self.shard_id}/{self.num_shards}, samples={self.num_samples}, device={self.device}, "
            f"output={self.output})"
        )
