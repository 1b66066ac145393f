"""The DALI pipeline: encoded files → decode → resize (train: only the region that becomes the
crop, flipped by reversing it) → normalised float CHW, or uint8 HWC handed out as B×3×H×W.

The files, crop offsets and flips come from the shared epoch plan through an external source
(rather than DALI's ``readers.file`` and random operators), so that sharding is exact (eval: every
image once, the last batch simply smaller, no padding), a seed fixes a run, and each DALI batch
can be compared pixel for pixel with the fallback's. (Reading the files in Python would cost
far less than decoding them; on the CPU, DALI reads them from the paths handed over, see below.)

Device: with CUDA, the "mixed" decoder (nvJPEG) and GPU resize; otherwise CPU operators with
``device_id=None``.

On the CPU the resize dominates a sample's cost, so the pipeline resamples each pixel once:
train resizes the crop's region of interest straight to ``image_size``² (the same pixels as
resizing to ``resize_size``² and cropping, up to float rounding, with less resampling and no
crop/flip pass), and uint8 output skips the HWC→CHW pass (the batch is a B×3×H×W view of HWC
memory; :func:`normalize_on_device` transposes it while normalising, inside the compiled step).
A sample that is only enlarged (source side <= target side on both axes) is resampled by
``warp_perspective``: when enlarging, PIL's bilinear is plain bilinear interpolation with edge
clamping, which the warp computes with replicated borders. Shrinking needs the antialiasing
filter, so those samples keep the resize (a per-sample DALI conditional), except with uint8
output: there DALI only decodes a shrinking sample and the loader resizes it with torch's
antialiased bilinear (:func:`resize_like_pil`; train: to ``resize_size``², then the planned crop
and flip, as the fallback does) in the main thread while DALI's threads work on the next
batches, which is faster and closer to PIL. Float output keeps DALI's resize, so a shrinking
sample's float and uint8 pixels can differ by a few levels.

Also on the CPU, the pipeline's batch is several planned batches at once (at least
``cpu_pipeline_batch`` images; the loader hands them out one planned batch at a time, as slices
of the pipeline's output), and DALI reads the files itself (``fn.io.file.read`` in its threads,
from the paths the source hands it) unless some file needs re-encoding: DALI runs a batch
operator by operator, each spread over the threads and waited for, so small batches of uneven
cost left its threads idle. Each planned batch is copied out on its own (one allocation per
planned batch).

The measurements behind these choices: docs/experiments.md#why-does-the-dali-pipeline-resize-as-it-does-on-the-cpu.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

from fastwsol.data.base import SplitLoader
from fastwsol.data.images import rgb_png_bytes
from fastwsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchPlan


def dali_available() -> bool:
    """Whether DALI is installed (without importing it: see torch_loader._worker_context)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no "nvidia" namespace package at all
        return False


# device -> why DALI cannot start there (None: it can), probed once per process.
_start_failures: dict[str, str | None] = {}


def dali_start_failure(device: torch.device) -> str | None:
    """Why DALI cannot run this loader's decoder on ``device``, or ``None`` when it can.

    Being installed is not enough: a DALI build for another CUDA major version, or a driver too
    old for it, fails only when a pipeline starts. So a one-image pipeline is run here with the
    decoder this loader uses (nvJPEG "mixed" on CUDA, "cpu" otherwise), once per device and
    process. The reason is one line naming the exception.
    """
    key = str(device)
    if key not in _start_failures:
        if not dali_available():
            _start_failures[key] = ("DALI is not installed (pip install nvidia-dali-cuda130, or "
                                    "nvidia-dali-cuda120 for a CUDA 12 driver)")
        else:
            try:
                _run_probe_pipeline(device)
                _start_failures[key] = None
            except Exception as exc:  # noqa: BLE001 - any failure to start is reported, not raised
                message = next((line for line in str(exc).splitlines() if line.strip()), "")
                _start_failures[key] = f"DALI cannot start on {device}: {type(exc).__name__}: {message.strip()}"
    return _start_failures[key]


def _run_probe_pipeline(device: torch.device) -> None:
    import io

    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buffer, format="JPEG")
    encoded = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    gpu = device.type == "cuda"

    @pipeline_def(batch_size=1, num_threads=1, device_id=device.index if gpu else None, prefetch_queue_depth=1)
    def probe():
        images = fn.decoders.image(fn.external_source(source=lambda: [encoded], batch=True),
                                   device="mixed" if gpu else "cpu", output_type=types.RGB)
        return fn.resize(images, size=[4, 4])

    pipe = probe()
    pipe.build()
    pipe.run()


def crop_rois(plan, resize_size: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative (y, x) ROI start/end (float32 B×2) of each planned crop in the source image.

    Resizing to ``resize_size``² then cropping ``image_size``² at (x, y) reads source
    coordinates [x/R, (x+S)/R] × [y/R, (y+S)/R] (relative, R = resize_size, S = image_size), at
    the same scale R/source as the full resize, so resizing that ROI to S² gives the crop
    itself; DALI flips a dimension whose ROI start exceeds its end.
    """
    x0, y0 = plan.crop_x / resize_size, plan.crop_y / resize_size
    x1, y1 = (plan.crop_x + image_size) / resize_size, (plan.crop_y + image_size) / resize_size
    start = np.stack([y0, np.where(plan.flip, x1, x0)], axis=1).astype(np.float32)
    end = np.stack([y1, np.where(plan.flip, x0, x1)], axis=1).astype(np.float32)
    return start, end


def warp_matrices(start: np.ndarray, end: np.ndarray, sizes: np.ndarray, image_size: int) -> np.ndarray:
    """Destination → source affine maps (float32 B×3×3, pixel corners at integer coordinates)
    that take the ``image_size``² output onto each ROI (relative (y, x) ``start``/``end`` as
    from :func:`crop_rois`; a reversed ROI flips) of a source of ``sizes`` (w, h) pixels:
    x_src = x0 + u·(x1 − x0)/S, y_src = y0 + v·(y1 − y0)/S."""
    wh = sizes.astype(np.float64)[:, ::-1]  # (h, w), matching the (y, x) ROI
    origin = start * wh
    scale = (end - start) * wh / image_size
    matrices = np.zeros((len(sizes), 3, 3), np.float32)
    matrices[:, 0, 0], matrices[:, 0, 2] = scale[:, 1], origin[:, 1]
    matrices[:, 1, 1], matrices[:, 1, 2] = scale[:, 0], origin[:, 0]
    matrices[:, 2, 2] = 1.0
    return matrices


def resize_like_pil(image: np.ndarray, out: np.ndarray) -> None:
    """Resizes uint8 HWC ``image`` into uint8 HWC ``out`` with PIL's bilinear filter (a triangle
    widened by the scale when shrinking): torch's antialiased bilinear, whose uint8 CPU kernel
    follows PIL's (max |Δ| 1 level against PIL on random and smooth images)."""
    source, target = (torch.from_numpy(a).permute(2, 0, 1)[None] for a in (image, out))
    # out= writes the HWC memory as is; interpolate() would return a CHW tensor (a copy: ~2x the time)
    torch.ops.aten._upsample_bilinear2d_aa.out(source, list(out.shape[:2]), False, None, None, out=target)


def concat_plans(plans: list[BatchPlan]) -> BatchPlan:
    """One pipeline batch made of several planned batches, in order."""
    fields = ("indices", "crop_x", "crop_y", "flip")
    return BatchPlan(*(np.concatenate([getattr(p, name) for p in plans]) for name in fields))


class _PlanSource:
    """Iterable external source: one epoch of pipeline batches (``loader.group`` planned batches
    each) of :meth:`DaliSplitLoader.fields`. DALI calls ``iter()`` on build and after each
    ``reset()``."""

    def __init__(self, loader: DaliSplitLoader):
        self.loader = loader
        self.current: list[list[BatchPlan]] = []  # plan groups handed to DALI, not yet returned as outputs

    def __iter__(self):
        loader = self.loader
        fields = loader.fields()
        plans = loader.plan()
        for first in range(0, len(plans), loader.group):
            group = plans[first : first + loader.group]
            batch = concat_plans(group)
            if "path" in fields:
                files = {"path": [loader.path_bytes(int(i)) for i in batch.indices]}
            else:
                files = {"encoded": [loader.encoded(int(i)) for i in batch.indices]}
            self.current.append(group)
            values = {**files, "indices": batch.indices.astype(np.int64)}
            if loader.train:
                start, end = crop_rois(batch, loader.resize_size, loader.image_size)
                values["roi_start"], values["roi_end"] = start, end
            if "enlarge" in fields:
                sizes = loader.checked.sizes[batch.indices]  # (w, h) from the files' headers
                values["enlarge"] = loader.enlarge_only(batch.indices)
                if not loader.train:
                    start, end = np.zeros((len(batch), 2), np.float32), np.ones((len(batch), 2), np.float32)
                values["matrix"] = warp_matrices(start, end, sizes, loader.image_size)
            yield tuple(values[name] for name in fields)


class DaliSplitLoader(SplitLoader):
    backend = "dali"
    cpu_pipeline_batch = 128  # on the CPU, the pipeline takes at least this many images at a time

    def __init__(self, *args, prefetch: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefetch = prefetch
        self._reencoded: dict[int, np.ndarray] = {}
        self._pipe = None
        self._epoch_complete = False
        cpu = self.device.type != "cuda"
        # planned batches per pipeline batch (see the module doc)
        self.group = max(1, -(-self.cpu_pipeline_batch // self.batch_size)) if cpu else 1
        self.read_in_pipeline = cpu and not self.checked.needs_reencode
        # shrinking samples: DALI only decodes them, the iterator resizes them (see the module doc)
        self.shrink_in_torch = cpu and self.output == "uint8"
        self._resized = np.empty((self.resize_size, self.resize_size, 3), np.uint8)  # train's scratch

    def enlarge_only(self, indices: np.ndarray) -> np.ndarray:
        """Whether each image's sides are all <= the resize target (it is only enlarged)."""
        target = self.resize_size if self.train else self.image_size
        return (self.checked.sizes[indices] <= target).all(axis=1)

    def path_bytes(self, index: int) -> np.ndarray:
        """The path of image ``index`` as bytes, for ``fn.io.file.read``."""
        return np.frombuffer(os.fsencode(self.image_dir / self.metadata.image_ids[index]), dtype=np.uint8)

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

    def fields(self) -> tuple[str, ...]:
        """What the external source hands DALI per batch: the files' bytes or paths, the ROI
        (train, if DALI resizes) and, on the CPU, the enlarge-only flag and warp matrix of each
        sample."""
        fields = ("path" if self.read_in_pipeline else "encoded", "indices")
        fields += ("roi_start", "roi_end") if self.train and not self.shrink_in_torch else ()
        return fields if self.device.type == "cuda" else fields + ("enlarge", "matrix")

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device.type == "cuda"
        self._source = _PlanSource(self)
        size, output, fields = self.image_size, self.output, self.fields()
        dtypes = {"encoded": types.UINT8, "path": types.UINT8, "indices": types.INT64, "roi_start": types.FLOAT,
                  "roi_end": types.FLOAT, "enlarge": types.BOOL, "matrix": types.FLOAT}

        def resize(images, inputs):
            # PIL's bilinear: linear when enlarging, a triangle filter widened by the scale
            # when shrinking (antialias).
            roi = {}
            if "roi_start" in inputs:
                roi = dict(roi_start=inputs["roi_start"], roi_end=inputs["roi_end"], roi_relative=True)
            return fn.resize(images, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=True, **roi)

        @pipeline_def(
            batch_size=self.batch_size * self.group,
            num_threads=max(1, self.num_threads),
            device_id=self.device.index if gpu else None,
            prefetch_queue_depth=self.prefetch,
            seed=self.seed,
            enable_conditionals=not gpu,
        )
        def pipeline():
            inputs = dict(zip(fields, fn.external_source(source=self._source, num_outputs=len(fields), batch=True,
                                                         cycle="raise", dtype=[dtypes[f] for f in fields])))
            encoded = fn.io.file.read(inputs["path"]) if "path" in inputs else inputs["encoded"]
            images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                       adjust_orientation=False)  # PIL (the protocol) ignores EXIF rotation
            if gpu:
                images = resize(images, inputs)
            elif inputs["enlarge"]:  # per sample (see the module doc)
                images = fn.experimental.warp_perspective(
                    images, inputs["matrix"], size=[size, size], interp_type=types.INTERP_LINEAR,
                    border_mode="replicate", pixel_origin="corner",
                )
            elif not self.shrink_in_torch:  # else handed out as decoded
                images = resize(images, inputs)
            if output == "float":
                images = fn.crop_mirror_normalize(
                    images, mean=[255.0 * m for m in IMAGENET_MEAN], std=[255.0 * s for s in IMAGENET_STD],
                    dtype=types.FLOAT, output_layout="CHW",
                )
            return images, inputs["indices"]

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
                ids = [self.metadata.image_ids[int(i)] for group in self._source.current
                       for plan in group for i in plan.indices]
                raise RuntimeError(f"DALI failed on one of these images under {self.image_dir}: {ids}: {exc}") from exc
            group = self._source.current.pop(0)
            if not self.shrink_in_torch:  # else the samples' sizes differ
                images = images.as_tensor()
            indices = torch.from_numpy(np.array(indices.as_tensor()).reshape(-1))
            start = 0
            for plan in group:  # DALI keeps the outputs until the next run()
                stop = start + len(plan)
                yield self._batch(self._to_torch(images, start, plan), indices[start:stop])
                start = stop

    def _to_torch(self, images, start: int, plan: BatchPlan) -> torch.Tensor:
        """The samples of ``plan``, from ``start`` in the pipeline's output ``images``, as a
        torch tensor (a copy of its own, one allocation per planned batch: DALI reuses its
        buffers); uint8 B×H×W×3 is returned as its B×3×H×W view."""
        if self.device.type == "cuda":  # one planned batch per pipeline batch
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dtype = torch.float32 if self.output == "float" else torch.uint8
            out = torch.empty(images.shape(), dtype=dtype, device=self.device)
            feed_ndarray(images, out, cuda_stream=torch.cuda.current_stream(self.device))
        elif self.shrink_in_torch:
            out = torch.from_numpy(self._finish_resize(images, start, plan))
        else:
            out = torch.from_numpy(np.array(np.asarray(images)[start : start + len(plan)]))
        return out if self.output == "float" else out.permute(0, 3, 1, 2)

    def _finish_resize(self, images, start: int, plan: BatchPlan) -> np.ndarray:
        """uint8 B×S×S×3: the warped (enlarge-only) samples copied, the others, handed out as
        decoded, resized as the fallback does (train: to ``resize_size``², then crop and flip).
        Copies in numpy: a torch copy of an image runs on torch's OpenMP threads, which then
        fight DALI's threads for the cores (measured: a train epoch 10x slower)."""
        size = self.image_size
        out = np.empty((len(plan), size, size, 3), np.uint8)
        enlarge = self.enlarge_only(plan.indices)
        for k, (x, y, flip) in enumerate(zip(plan.crop_x, plan.crop_y, plan.flip)):
            image = np.asarray(images[start + k])
            if enlarge[k]:
                out[k] = image
            elif not self.train:
                resize_like_pil(image, out[k])
            else:
                resize_like_pil(image, self._resized)
                crop = self._resized[y : y + size, x : x + size]
                out[k] = crop[:, ::-1] if flip else crop
        return out
