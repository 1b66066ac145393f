"""The torchvision/PIL fallback: a ``DataLoader`` executing the shared epoch plan. It is the
reference the DALI pipeline is tested against (PIL decode, PIL bilinear resize as
torchvision's ``Resize`` on PIL images does, as in wsolevaluation)."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode

from fastwsol.data.base import SplitLoader
from fastwsol.data.images import read_rgb_pil
from fastwsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _worker_context() -> str:
    """"fork" starts workers fast, but a fork taken once DALI is loaded in this process
    deadlocks the child (measured: the loader hangs); then workers come from a forkserver
    (slower start, needs the usual ``if __name__ == "__main__":`` guard in scripts)."""
    return "forkserver" if any(name.startswith("nvidia.dali") for name in sys.modules) else "fork"


# A forkserver imports this module once and forks every worker from it, instead of each
# worker importing torch/torchvision anew.
multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])


class _PlannedImages(Dataset):
    """Item = (index, crop_x, crop_y, flip) from the plan → (CHW tensor, index)."""

    def __init__(self, image_dir: Path, image_ids, train: bool, image_size: int, resize_size: int, output: str):
        self.image_dir, self.image_ids = image_dir, image_ids
        self.train, self.image_size, self.resize_size, self.output = train, image_size, resize_size, output

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, item):
        index, crop_x, crop_y, flip = item
        path = self.image_dir / self.image_ids[index]
        try:
            image = read_rgb_pil(path)
        except OSError as exc:
            raise OSError(f"cannot read image {path}: {exc}") from exc
        size = self.resize_size if self.train else self.image_size
        image = TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR)
        if self.train:
            image = TF.crop(image, crop_y, crop_x, self.image_size, self.image_size)
            if flip:
                image = TF.hflip(image)
        tensor = TF.pil_to_tensor(image)  # uint8 3×H×W
        if self.output == "float":
            tensor = TF.normalize(tensor.to(torch.float32).div_(255.0), IMAGENET_MEAN, IMAGENET_STD)
        return tensor, index


class _PlanSampler:
    def __init__(self, loader: TorchSplitLoader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader.plan():
            yield [
                (int(i), int(x), int(y), bool(f))
                for i, x, y, f in zip(batch.indices, batch.crop_x, batch.crop_y, batch.flip)
            ]

    def __len__(self) -> int:
        return len(self.loader)


def _collate(items):
    """uint8: pil_to_tensor's 3×H×W views of HWC memory are stacked as HWC (a plain copy) and
    the batch is its B×3×H×W view, the same layout as the DALI loader's; float: contiguous."""
    images, indices = zip(*items)
    if images[0].dtype == torch.uint8:
        batch = torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    else:
        batch = torch.stack(images)
    return batch, torch.tensor(indices, dtype=torch.int64)


class TorchSplitLoader(SplitLoader):
    """``num_threads`` worker processes (0 = in the main process), persistent across epochs.

    A worker silent for ``worker_timeout`` seconds raises instead of hanging.
    """

    worker_timeout = 300.0

    backend = "torch"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dataset = _PlannedImages(
            self.image_dir, self.metadata.image_ids, self.train, self.image_size, self.resize_size, self.output
        )
        self._loader = DataLoader(
            dataset,
            batch_sampler=_PlanSampler(self),
            num_workers=self.num_threads,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            # its own generator: iterating must not draw from torch's global RNG, or a run
            # resumed mid-epoch would draw different dropout masks than the uninterrupted run
            generator=torch.Generator().manual_seed(self.seed),
            prefetch_factor=4 if self.num_threads > 0 else None,
            persistent_workers=self.num_threads > 0,
            multiprocessing_context=_worker_context() if self.num_threads > 0 else None,
            timeout=self.worker_timeout if self.num_threads > 0 else 0,
        )

    def __iter__(self):
        for images, indices in self._loader:
            yield self._batch(images, indices)
