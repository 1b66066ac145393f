"""The DALI pipeline: encoded files → decode → resize → (train: crop + flip) → CHW, normalised
float or uint8.

The files, crop offsets and flips come from the shared epoch plan through an external source
(rather than DALI's file reader and random operators), so that sharding is exact (eval: every
image once, the last batch simply smaller, no padding), a seed fixes a run, and each DALI batch
can be compared pixel for pixel with the fallback's. Reading a few hundred small files per
second in Python costs far less than decoding them.

Device: with CUDA, the "mixed" decoder (nvJPEG) and GPU resize/crop; otherwise CPU operators
with ``device_id=None``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from fastwsol.data.base import SplitLoader
from fastwsol.data.images import rgb_png_bytes
from fastwsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def dali_available() -> bool:
    """Whether DALI is installed (without importing it: see torch_loader._worker_context)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no "nvidia" namespace package at all
        return False


class _PlanSource:
    """Iterable external source: one epoch of (encoded bytes, index, crop_x, crop_y, flip)
    batches. DALI calls ``iter()`` on build and after each ``reset()``."""

    def __init__(self, loader: "DaliSplitLoader"):
        self.loader = loader
        self.current: list = []  # plans handed to DALI and not yet returned as outputs

    def __iter__(self):
        loader = self.loader
        max_offset = float(max(1, loader.resize_size - loader.image_size))
        for batch in loader.plan():
            encoded = [loader.encoded(int(i)) for i in batch.indices]
            self.current.append(batch)
            if not loader.train:
                yield encoded, batch.indices.astype(np.int64)
                continue
            yield (
                encoded,
                batch.indices.astype(np.int64),
                (batch.crop_x / max_offset).astype(np.float32),
                (batch.crop_y / max_offset).astype(np.float32),
                batch.flip.astype(np.int32),
            )


class DaliSplitLoader(SplitLoader):
    backend = "dali"

    def __init__(self, *args, prefetch: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefetch = prefetch
        self._reencoded: dict[int, np.ndarray] = {}
        self._pipe = None
        self._epoch_complete = False

    def encoded(self, index: int) -> np.ndarray:
        """The bytes DALI decodes for image ``index`` (re-encoded PNG for CMYK/palette/…)."""
        path = self.image_dir / self.metadata.image_ids[index]
        if index in self.checked.needs_reencode:
            if index not in self._reencoded:
                self._reencoded[index] = np.frombuffer(rgb_png_bytes(path), dtype=np.uint8)
            return self._reencoded[index]
        try:
            return np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise OSError(f"cannot read image {path}: {exc}") from exc

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device.type == "cuda"
        self._source = _PlanSource(self)
        train, size, resize, output = self.train, self.image_size, self.resize_size, self.output

        @pipeline_def(
            batch_size=self.batch_size,
            num_threads=max(1, self.num_threads),
            device_id=self.device.index if gpu else None,
            prefetch_queue_depth=self.prefetch,
            seed=self.seed,
        )
        def pipeline():
            if train:
                encoded, indices, crop_x, crop_y, flip = fn.external_source(
                    source=self._source, num_outputs=5, batch=True, cycle="raise",
                    dtype=[types.UINT8, types.INT64, types.FLOAT, types.FLOAT, types.INT32],
                )
            else:
                encoded, indices = fn.external_source(
                    source=self._source, num_outputs=2, batch=True, cycle="raise", dtype=[types.UINT8, types.INT64]
                )
            images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                       adjust_orientation=False)  # PIL (the protocol) ignores EXIF rotation
            side = resize if train else size
            images = fn.resize(images, size=[side, side], interp_type=types.INTERP_LINEAR, antialias=True)
            if output == "float":
                norm = dict(mean=[255.0 * m for m in IMAGENET_MEAN], std=[255.0 * s for s in IMAGENET_STD],
                            dtype=types.FLOAT)
            else:
                norm = dict(dtype=types.UINT8)
            if train:
                images = fn.crop_mirror_normalize(images, crop=(size, size), crop_pos_x=crop_x, crop_pos_y=crop_y,
                                                  mirror=flip, output_layout="CHW", **norm)
            else:
                images = fn.crop_mirror_normalize(images, output_layout="CHW", **norm)
            return images, indices

        pipe = pipeline()
        pipe.build()
        return pipe

    def __iter__(self):
        if self._pipe is None or not self._epoch_complete:
            # A fresh pipeline (first epoch, or the previous one was abandoned mid-way: its
            # prefetched batches belong to the old plan).
            self._pipe = self._build()
        else:
            self._pipe.reset()  # re-iterates the source: picks up set_epoch()
        self._epoch_complete = False
        while True:
            try:
                images, indices = self._pipe.run()
            except StopIteration:
                self._epoch_complete = True
                self._source.current.clear()
                return
            except RuntimeError as exc:
                # The failing sample is in one of the batches DALI was working on (the oldest
                # first); the pipeline is unusable afterwards, so the next epoch rebuilds it.
                self._pipe = None
                ids = [self.metadata.image_ids[int(i)] for plan in self._source.current for i in plan.indices]
                raise RuntimeError(f"DALI failed on one of these images under {self.image_dir}: {ids}: {exc}") from exc
            self._source.current.pop(0)
            yield self._batch(self._to_torch(images), torch.from_numpy(np.array(indices.as_tensor()).reshape(-1)))

    def _to_torch(self, images) -> torch.Tensor:
        if self.device.type == "cuda":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dense = images.as_tensor()
            dtype = torch.float32 if self.output == "float" else torch.uint8
            out = torch.empty(dense.shape(), dtype=dtype, device=self.device)
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))
            return out
        return torch.from_numpy(np.array(images.as_tensor()))
