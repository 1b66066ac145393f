"""Evaluating a model with the protocol (docs/protocol.md): the chosen localisation map for the
ground-truth class → 224² score map → boxes → counts, plus classification accuracy. Beside the
protocol's figures, the same maps scored with a single contour and the share of inverted maps
(:mod:`fastwsol.evaluation.diagnostics`): a multi-contour score alone rewards a map that is high
on the background (the hole's contour outlines the object). Under DDP every rank evaluates its
shard and the counts are summed.

Also a trained model's side: ``evaluate_checkpoint`` (the ``evaluate`` command: metrics JSON,
per-image results, pictures and the score maps in the benchmark's layout)."""

from __future__ import annotations

import collections
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from fastwsol import ops
from fastwsol.checkpoint import TrainedModel, config_from_dict
from fastwsol.data import loader_from_config, normalize_on_device
from fastwsol.data.images import read_rgb_pil
from fastwsol.evaluation import (
    BoxEvaluator,
    MapDiagnostics,
    MaskEvaluator,
    cams_to_scoremaps,
    load_gt_masks,
    resize_boxes,
    upsample_cams,
)
from fastwsol.evaluation.boxes import SCOREMAP_SIZE, boxes_at_thresholds, contour_boxes_at_thresholds, multiple_iou
from fastwsol.evaluation.component_tree import quantize_scoremaps
from fastwsol.evaluation.evaluator import GT_KNOWN_IOU
from fastwsol.evaluation.scoremap import scoremap_path
from fastwsol.io import check_writable_folder, write_bytes_atomic, write_text_atomic
from fastwsol.method import MAP_KINDS
from fastwsol.progress import Progress
from fastwsol.report import class_label
from fastwsol.visualize import (
    contact_sheet,
    enlarge,
    label,
    localization_picture,
    with_legend,
    write_png,
)


def check_map_kind(kind: str) -> None:
    if kind not in MAP_KINDS:
        raise ValueError(f"map must be one of {MAP_KINDS}, got {kind!r}")


def scoremaps_for(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """224² score maps in [0, 1] from the chosen map of the target class (docs/method.md Table 5):
    ``cam`` and ``norm`` (F̂) the protocol's way (bicubic, min-max); ``sim``: S with negatives
    as background, max-normalised (an all-background map → zeros)."""
    check_map_kind(kind)
    maps = ops.localization_maps(feature, fc_weight, target)[kind]
    if kind != "sim":
        return cams_to_scoremaps(maps)
    positive = upsample_cams(maps.clamp_min(0)).clamp_min(0)  # bicubic may undershoot below 0
    peak = positive.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, positive / peak.clamp_min(torch.finfo(peak.dtype).tiny), torch.zeros_like(positive))


def box_evaluator(eval_config, multi_contour: bool | None = None) -> BoxEvaluator:
    """The config's evaluator; ``multi_contour`` overrides ``eval.multi_contour``."""
    return BoxEvaluator(
        iou_thresholds=tuple(eval_config.iou_thresholds),
        cam_curve_interval=eval_config.cam_curve_interval,
        multi_contour=eval_config.multi_contour if multi_contour is None else multi_contour,
    )


SINGLE_CONTOUR_KEYS = ("box_acc", "max_box_acc_v2", "gt_known_loc", "top1_loc", "top5_loc")


def gt_boxes_224(metadata, indices: np.ndarray, size: int = 224) -> list[np.ndarray]:
    """GT boxes of these images rescaled to ``size``² with the protocol's truncation."""
    return [resize_boxes(metadata.boxes[i], *metadata.sizes[i], size=size) for i in indices]


def top5_classes(logits: torch.Tensor) -> torch.Tensor:
    """(N, min(5, C)) class indices by descending logit; column 0 is the predicted class."""
    return logits.topk(min(5, logits.shape[1]), dim=1).indices


def scorers(config, localization: str | None) -> dict:
    """Fresh accumulators of ``evaluate_model``, by what they score: a split with GT masks gets
    the pixel metrics' ``MaskEvaluator``; one with boxes the config's box evaluator, its
    single-contour twin (when the config counts every contour) and the map diagnostics."""
    e = config.eval
    if localization == "masks":
        return {"masks": MaskEvaluator(cam_curve_interval=e.cam_curve_interval)}
    if localization != "boxes":
        raise ValueError(f"evaluation needs GT boxes or masks; the split's metadata has {localization}")
    found = {"boxes": box_evaluator(e)}
    if e.multi_contour:
        found["single"] = box_evaluator(e, multi_contour=False)
    found["diagnostics"] = MapDiagnostics()
    return found


class GtMasks:
    """The 224² GT masks (uint8: 0 background, 1 object, 255 ignored) of an eval loader's
    batches, read on the host by a few threads, ``ahead`` batches ahead of the batch asked for:
    the eval plan fixes the order of the batches, so the reads of the next ones overlap the
    model's work on this one. A batch other than the planned one is read when asked for."""

    def __init__(self, loader, threads: int = min(8, os.cpu_count() or 1), ahead: int = 2):
        self.annotations, self.mask_dir = loader.metadata.masks, loader.mask_dir
        self.plans, self.ahead = iter(loader.plan()), ahead
        self.pending = collections.deque()  # (planned indices, one future per image)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="gt-masks")

    def _read(self, index: int) -> np.ndarray:
        return load_gt_masks(self.mask_dir, [self.annotations[index]], size=SCOREMAP_SIZE)[0]

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        while len(self.pending) <= self.ahead and (plan := next(self.plans, None)) is not None:
            self.pending.append((plan.indices, [self.pool.submit(self._read, int(i)) for i in plan.indices]))
        if self.pending and np.array_equal(self.pending[0][0], indices):
            futures = self.pending.popleft()[1]
        else:
            futures = [self.pool.submit(self._read, int(i)) for i in indices]
        return np.stack([future.result() for future in futures])

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


@torch.no_grad()
def evaluate_model(
    model, loader, config, ctx=None, *, map_kind: str | None = None, on_batch=None, progress: str | None = None
) -> dict:
    """Metrics of ``model`` on ``loader``'s split, and ``top1_cls``/``top5_cls``.

    A split with GT boxes: the evaluator's (box accuracies, MaxBoxAccV2, GT-known / top-1 /
    top-5 Loc at the GT-known-optimal threshold, with ``eval.multi_contour``); the same box
    metrics with a single contour (keys ``*_single``, equal to the others when the config
    already evaluates one contour); and ``inverted_pct`` / ``peak_in_gt_pct``
    (:mod:`fastwsol.evaluation.diagnostics`). A split with GT masks (OpenImages): ``pxap``,
    ``piou`` and its ``best_threshold`` (:class:`~fastwsol.evaluation.MaskEvaluator`).

    ``on_batch(batch, scoremaps, logits)`` is called per batch (e.g. to save pictures).
    ``progress``: a description (e.g. ``"evaluate test"``) shows :class:`~fastwsol.progress.Progress`
    over the loader's batches; ``None`` shows nothing (e.g. a DDP rank other than 0).
    """
    e = config.eval
    localization = loader.metadata.localization
    parts = scorers(config, localization)
    masks = GtMasks(loader) if localization == "masks" else None
    was_training = model.training
    model.eval()
    classification = np.zeros(3, np.int64)  # top-1 correct, top-5 correct, images
    bar = Progress(len(loader) if progress else 0, progress or "", enabled=progress is not None)
    try:
        for batch in loader:
            images = batch["images"]
            images = normalize_on_device(images) if images.dtype == torch.uint8 else images
            out = model(images)
            labels = batch["labels"]
            scoremaps = scoremaps_for(out["feature"].float(), model.fc.weight.float(), labels, map_kind or e.map)
            top5 = top5_classes(out["logits"])
            top1_correct = (top5[:, 0] == labels).cpu().numpy()
            top5_correct = (top5 == labels[:, None]).any(dim=1).cpu().numpy()
            classification += (int(top1_correct.sum()), int(top5_correct.sum()), len(labels))
            indices = batch["indices"].cpu().numpy()
            if masks is not None:
                parts["masks"].accumulate(scoremaps, masks(indices))
            else:
                gt_boxes = gt_boxes_224(loader.metadata, indices)
                for key in ("boxes", "single"):
                    if key in parts:
                        parts[key].accumulate(scoremaps, gt_boxes, top1_correct=top1_correct, top5_correct=top5_correct)
                parts["diagnostics"].accumulate(scoremaps, gt_boxes)
            if on_batch is not None:
                on_batch(batch, scoremaps, out["logits"])
            bar.update(images=len(labels))
    finally:
        if masks is not None:
            masks.close()
    bar.close()
    model.train(was_training)
    if ctx is not None and ctx.enabled:  # every rank's counts summed: all ranks get the same metrics
        total = torch.from_numpy(np.concatenate([*(part.state_vector() for part in parts.values()), classification]))
        dist.all_reduce(total)
        summed, start = scorers(config, localization), 0
        for fresh, part in zip(summed.values(), parts.values()):
            size = len(part.state_vector())
            fresh.add_state_vector(total[start : start + size].numpy())
            start += size
        parts, classification = summed, total[start:].numpy()
    if masks is not None:
        metrics = parts["masks"].compute()
    else:
        metrics = parts["boxes"].compute()
        single_metrics = parts["single"].compute() if "single" in parts else metrics
        metrics.update({f"{k}_single": single_metrics[k] for k in SINGLE_CONTOUR_KEYS})
        metrics.update(parts["diagnostics"].compute())
    top1, top5, count = classification.tolist()
    metrics["top1_cls"], metrics["top5_cls"] = (float(c) * 100.0 / count for c in (top1, top5))
    return metrics


def predicted_box(scoremap: np.ndarray, threshold: float) -> np.ndarray:
    """The box of the largest contour at ``threshold`` (224² coordinates), the protocol's way."""
    return boxes_at_thresholds(np.asarray(scoremap, np.float32), np.array([threshold]), multi_contour=False)[0][0]


def boxes_against_gt(scoremap: np.ndarray, gt_boxes: np.ndarray, threshold: float) -> tuple[np.ndarray, float, float]:
    """At ``threshold``: the largest contour's box (224², as :func:`predicted_box`), its IoU with
    the nearest GT box, and the best IoU of any contour's box (what a multi-contour evaluation
    credits). ``scoremap``: floats in [0, 1] or their uint8 quantisation."""
    every, largest = contour_boxes_at_thresholds(scoremap, np.array([threshold]))[0]
    return largest[0], float(multiple_iou(largest, gt_boxes).max()), float(multiple_iou(every, gt_boxes).max())


def box_to_original(box, width: int, height: int) -> np.ndarray:
    """An inclusive box on the 224² score-map grid → the original image's pixels: score-map
    pixel x covers original [x·W/224, (x+1)·W/224), so the box covers whole original pixels."""
    x0, y0, x1, y1 = (int(v) for v in box)
    sx, sy = width / SCOREMAP_SIZE, height / SCOREMAP_SIZE
    left, top = int(np.floor(x0 * sx)), int(np.floor(y0 * sy))
    right = min(max(int(np.ceil((x1 + 1) * sx)) - 1, left), width - 1)
    bottom = min(max(int(np.ceil((y1 + 1) * sy)) - 1, top), height - 1)
    return np.array([left, top, right, bottom])


def locate_data(
    trained: TrainedModel, *, data_root: str | None = None, metadata_root: str | None = None, overrides=()
) -> tuple[object, list[str]]:
    """The run's config (with ``overrides``, ``--set`` style) whose data paths work from here, and
    one line per path saying where it came from. ``data_root``/``metadata_root`` are used as
    given; otherwise a relative path of the run's is taken from the folder the run was trained
    in (its checkpoint records it), else (older checkpoints) from the current folder or the
    first folder above the checkpoint that holds the dataset."""
    from fastwsol.config import apply_values, parse_override, validate
    from fastwsol.data.metadata import BUILTIN

    config = config_from_dict(trained.config.to_dict())
    for text in overrides:
        apply_values(config, parse_override(text), f"--set {text}")
    validate(config)
    d = config.data
    bases = [b for b in (trained.workdir, Path.cwd(), *trained.path.resolve().parents) if b is not None]
    used = []
    for key, given in (("data_root", data_root), ("metadata_root", metadata_root)):
        value = getattr(d, key)
        if given is not None:
            setattr(d, key, str(given))
            used.append(f"data.{key} {given} (given)")
        elif value == BUILTIN or Path(value).is_absolute():
            used.append(f"data.{key} {value} (the run's)")
        else:
            base = next((b for b in bases if (b / value / d.dataset).is_dir()), None)
            if base is None:
                raise FileNotFoundError(
                    f"the run's data.{key} {value!r} has no {d.dataset} folder under {', '.join(map(str, bases[:2]))} "
                    f"or above the checkpoint: pass --{key.replace('_', '-')} DIR"
                )
            setattr(d, key, str(base / value))
            used.append(f"data.{key} {base / value} (the run's {value!r}, from {base})")
    return config, used


PER_IMAGE_FORMATS = (".csv", ".json")
# boxes: x0_224 .. y1_224 on the 224² score map, x0 .. y1 in the original image's pixels
PER_IMAGE_FIELDS = (
    *("image_id", "gt_class", "predicted_class", "top1_correct", "threshold"),
    *("x0_224", "y0_224", "x1_224", "y1_224", "x0", "y0", "x1", "y1"),
    *("iou", "gt_known_correct", "any_contour_correct"),
)
CONTACT_SHEET = "contact_sheet.png"


def metrics_file(out_dir: str | os.PathLike, checkpoint: str | os.PathLike, split: str, map_kind: str) -> Path:
    """``metrics_<checkpoint stem>_<split>_<map>.json``: best.pt's and last.pt's side by side."""
    return Path(out_dir) / f"metrics_{Path(checkpoint).stem}_{split}_{map_kind}.json"


def picture_file(out_dir: Path, image_id: str, map_kind: str) -> Path:
    return out_dir / (os.path.splitext(image_id)[0] + f"_{map_kind}.png")


class PerImageResults:
    """Each image's result at the threshold a whole pass chooses: an ``on_batch`` of
    :func:`evaluate_model` keeps the predicted class and the uint8 score map (50 kB an image);
    :meth:`rows` then reads, at that threshold, the largest contour's box (as the pictures and
    ``localize`` show it) in 224² and original pixels (inclusive corners), its ``iou`` with the
    nearest GT box and ``gt_known_correct`` (IoU ≥ 0.5), and ``any_contour_correct``: some
    contour's box has IoU ≥ 0.5, what ``eval.multi_contour: true`` credits. So the mean of
    ``any_contour_correct`` (multi-contour) or of ``gt_known_correct`` (single) at the
    GT-known-optimal threshold is the split's GT-known Loc."""

    def __init__(self, metadata):
        self.metadata = metadata
        self.batches = []  # (indices, predicted classes, uint8 score maps)

    def __call__(self, batch, scoremaps, logits) -> None:
        predicted = top5_classes(logits)[:, 0]
        self.batches.append(
            (batch["indices"].cpu().numpy(), predicted.cpu().numpy(), quantize_scoremaps(scoremaps.cpu().numpy()))
        )

    def rows(self, threshold: float) -> list[dict]:
        """One row per image (:data:`PER_IMAGE_FIELDS`), in the metadata's order."""
        meta, rows = self.metadata, {}
        for indices, predicted, maps in self.batches:
            for index, predicted_class, scoremap in zip(indices.tolist(), predicted.tolist(), maps):
                width, height = (int(v) for v in meta.sizes[index])
                box, iou, any_iou = boxes_against_gt(scoremap, gt_boxes_224(meta, [index])[0], threshold)
                gt_class = int(meta.labels[index])
                rows[index] = dict(
                    zip(
                        PER_IMAGE_FIELDS,
                        (
                            *(meta.image_ids[index], gt_class, predicted_class, predicted_class == gt_class),
                            threshold,
                            *box.tolist(),
                            *box_to_original(box, width, height).tolist(),
                            *(iou, iou >= GT_KNOWN_IOU / 100, any_iou >= GT_KNOWN_IOU / 100),
                        ),
                    )
                )
        return [rows[index] for index in sorted(rows)]


# float32: the maps' own precision, written exactly; float64: what wsolevaluation's MaskEvaluator
# (OpenImages) accepts, the same values widened exactly.
SCOREMAP_DTYPES = ("float32", "float64")


class ScoreMapWriter:
    """An ``on_batch`` of :func:`evaluate_model` that writes each image's score map, exactly as
    scored, where the benchmark's ``evaluation.py`` and ``fastwsol evaluate-maps`` read it:
    ``<folder>/<image_id>.npy`` (:func:`~fastwsol.evaluation.scoremap.scoremap_path`), 224×224 in
    ``dtype``. Each file is written atomically; not fsynced one by one (a split has up to 50,000
    maps, and a lost one is written again by evaluating again)."""

    def __init__(self, folder: Path, image_ids, dtype: str = "float32"):
        if dtype not in SCOREMAP_DTYPES:
            raise ValueError(f"score map dtype must be one of {SCOREMAP_DTYPES}, got {dtype!r}")
        self.folder, self.image_ids, self.dtype = folder, image_ids, np.dtype(dtype)
        self.written = 0

    def paths(self) -> list[Path]:
        return [scoremap_path(self.folder, image_id) for image_id in self.image_ids]

    def __call__(self, batch, scoremaps, logits) -> None:
        maps = scoremaps.cpu().numpy().astype(self.dtype)
        for index, scoremap in zip(batch["indices"].cpu().numpy().tolist(), maps):
            buffer = io.BytesIO()
            np.save(buffer, scoremap)
            write_bytes_atomic(scoremap_path(self.folder, self.image_ids[index]), buffer.getvalue(), durable=False)
            self.written += 1


def each_of(*hooks):
    """One ``on_batch`` calling every hook given (``None`` skipped) in order; ``None`` if none is."""
    hooks = [hook for hook in hooks if hook is not None]
    if not hooks:
        return None

    def on_batch(batch, scoremaps, logits) -> None:
        for hook in hooks:
            hook(batch, scoremaps, logits)

    return on_batch


def write_per_image(path: Path, rows: list[dict], about: dict) -> None:
    """``.csv``: the rows; ``.json``: ``about`` (checkpoint, split, map, threshold) and ``images``."""
    from fastwsol.tables import csv_text

    if path.suffix.lower() == ".csv":
        write_text_atomic(path, csv_text(rows, PER_IMAGE_FIELDS))
    else:
        write_text_atomic(path, json.dumps({**about, "images": rows}, indent=2) + "\n")


def refuse_to_replace(outputs: list[tuple[str, Path, list[Path]]], overwrite: bool) -> None:
    """An error naming the files a command would replace, unless ``overwrite``. ``outputs``:
    (the option that sends them there, its folder, the files) per option."""
    found = []
    for option, folder, paths in outputs:
        present = [p for p in paths if p.exists()]
        if len(present) == 1:
            found.append(f"{present[0]} ({option})")
        elif present:
            found.append(f"{len(present)} files in {folder} ({option}) such as {present[0].relative_to(folder)}")
    if found and not overwrite:
        raise ValueError(f"would replace {' and '.join(found)}: pass --overwrite to replace, or write elsewhere")


def evaluate_checkpoint(
    trained: TrainedModel,
    *,
    split: str = "test",
    map_kind: str | None = None,
    save_maps: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    per_image: str | os.PathLike | None = None,
    save_scoremaps: str | os.PathLike | None = None,
    scoremap_dtype: str = "float32",
    sheet_size: int = 32,
    config=None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """The protocol's metrics on ``split``, written to :func:`metrics_file` in ``out_dir`` (the
    checkpoint's folder by default; ``metrics["json"]``). ``config``: the run's, with data paths
    from :func:`locate_data` (the default). ``per_image``: a ``.csv`` or ``.json`` file of
    :class:`PerImageResults`' rows. ``save_maps``: :func:`save_localization_pictures` there.
    ``save_scoremaps``: every image's score map there (:class:`ScoreMapWriter`, ``scoremap_dtype``;
    boxes and masks alike; ``metrics["scoremaps"]``: how many). Before anything is evaluated: a
    file already there is an error unless ``overwrite``, and so is a folder that cannot be
    written. ``progress``: :class:`~fastwsol.progress.Progress`."""
    config = config or locate_data(trained)[0]
    map_kind = map_kind or config.eval.map
    check_map_kind(map_kind)  # before the split is read
    per_image = Path(per_image) if per_image is not None else None
    if per_image is not None and (per_image.suffix.lower() not in PER_IMAGE_FORMATS or per_image.is_dir()):
        raise ValueError(f"--per-image {per_image}: give a file ending in {' or '.join(PER_IMAGE_FORMATS)}")
    out_dir = Path(out_dir) if out_dir is not None else trained.path.parent
    json_path = metrics_file(out_dir, trained.path, split, map_kind)
    save_maps = Path(save_maps) if save_maps is not None else None
    device = next(trained.model.parameters()).device
    loader = loader_from_config(config, split, batch_size=config.eval.batch_size, device=device, train=False)
    if loader.metadata.localization == "masks" and (per_image is not None or save_maps is not None):
        option = "--per-image" if per_image is not None else "--save-maps"
        raise ValueError(
            f"{option}: per-image results and pictures compare boxes, and {config.data.dataset}/{split} has GT "
            f"masks (scored by PxAP/PIoU): leave {option} out for its metrics"
        )
    outputs = [("--out", out_dir, [json_path])]
    if per_image is not None:
        outputs.append(("--per-image", per_image.parent, [per_image]))
    if save_maps is not None:
        pictures = [picture_file(save_maps, image_id, map_kind) for image_id in loader.metadata.image_ids]
        outputs.append(("--save-maps", save_maps, [*pictures, save_maps / CONTACT_SHEET]))
    writer = None
    if save_scoremaps is not None:
        writer = ScoreMapWriter(Path(save_scoremaps), loader.metadata.image_ids, scoremap_dtype)
        outputs.append(("--save-scoremaps", writer.folder, writer.paths()))
    refuse_to_replace(outputs, overwrite)
    for option, folder, _ in outputs:
        check_writable_folder(folder, option)
    collected = PerImageResults(loader.metadata) if per_image is not None else None
    description = f"evaluate {split}" if progress else None
    metrics = evaluate_model(
        trained.model, loader, config, map_kind=map_kind, on_batch=each_of(collected, writer), progress=description
    )
    metrics.update(split=split, map=map_kind, checkpoint=str(trained.path))
    write_text_atomic(json_path, json.dumps(metrics, indent=2) + "\n")
    metrics["json"] = str(json_path)
    if collected is not None:
        threshold = metrics["best_threshold"]
        about = {"checkpoint": str(trained.path), "split": split, "map": map_kind, "threshold": threshold}
        write_per_image(per_image, collected.rows(threshold), about)
        metrics["per_image"] = str(per_image)
    if writer is not None:
        metrics["scoremaps"] = writer.written
    if save_maps is not None:
        metrics["pictures"] = save_localization_pictures(
            trained, loader, map_kind, metrics["best_threshold"], save_maps, sheet_size, config.data.data_root, progress
        )
    return metrics


@torch.no_grad()
def sheet_picks(labels: np.ndarray, count: int) -> list[int]:
    """``count`` image indices spread over the classes: evenly spaced classes (all of them when
    there are fewer classes than ``count``), taking each class's images in metadata order, round
    robin, so every class shows before any shows twice."""
    by_class = {c: np.flatnonzero(labels == c).tolist() for c in np.unique(labels).tolist()}
    classes = list(by_class)
    if len(classes) > count:
        classes = [classes[i] for i in np.linspace(0, len(classes) - 1, count).round().astype(int)]
    picks, rank = [], 0
    while len(picks) < count and any(rank < len(by_class[c]) for c in classes):
        picks += [by_class[c][rank] for c in classes if rank < len(by_class[c])][: count - len(picks)]
        rank += 1
    return picks


@torch.no_grad()
def save_localization_pictures(
    trained: TrainedModel,
    loader,
    map_kind: str,
    threshold: float,
    out_dir: Path,
    sheet_size: int,
    data_root: str | os.PathLike,
    progress: bool = True,
) -> int:
    """Per image ``<image_id>_<map>.png``: the original image (its own size and aspect ratio)
    under the heat map, GT boxes green, the predicted box red (at ``threshold``), titled with
    the class and the box's IoU, with a legend. ``contact_sheet.png``: half of ``sheet_size``
    images spread over the classes (:func:`sheet_picks`), half the lowest-IoU ones among the
    others (the worst cases). Returns how many pictures were written."""
    import heapq

    model, metadata = trained.model, loader.metadata
    folder = Path(data_root) / trained.config.data.dataset
    spread = sheet_picks(metadata.labels, sheet_size - sheet_size // 2)
    keep = set(spread)
    kept, worst = {}, []  # index -> (scoremap, iou); heap of (-iou, index, scoremap) of the lowest IoUs
    written = 0

    def picture(index: int, scoremap: np.ndarray) -> tuple[np.ndarray, float]:
        image = np.asarray(read_rgb_pil(folder / metadata.image_ids[index]))
        height, width = image.shape[:2]
        box224, iou, _ = boxes_against_gt(scoremap, gt_boxes_224(metadata, [index])[0], threshold)
        drawn = localization_picture(image, scoremap, metadata.boxes[index], box_to_original(box224, width, height))
        return drawn, iou

    def title(index: int, iou: float) -> str:
        target = class_label(int(metadata.labels[index]), trained.class_names)
        return f"{target}\nIoU {iou:.2f}  {os.path.basename(metadata.image_ids[index])}"

    names = {"predicted": f"predicted box ({map_kind} > {threshold:.3f}, the GT-known-optimal threshold)"}
    bar = Progress(len(loader), "pictures", enabled=progress)
    for batch in loader:
        out = model(normalize_on_device(batch["images"]))
        scoremaps = (
            scoremaps_for(out["feature"].float(), model.fc.weight.float(), batch["labels"], map_kind).cpu().numpy()
        )
        for index, scoremap in zip(batch["indices"].cpu().numpy().tolist(), scoremaps):
            drawn, iou = picture(index, scoremap)
            write_png(
                picture_file(out_dir, metadata.image_ids[index], map_kind),
                with_legend(label(enlarge(drawn), title(index, iou)), **names),
            )
            written += 1
            if index in keep:
                kept[index] = scoremap
                continue
            entry = (-iou, -index, scoremap)
            if len(worst) < sheet_size // 2:
                heapq.heappush(worst, entry)
            elif entry > worst[0]:
                heapq.heapreplace(worst, entry)
        bar.update(images=len(scoremaps))
    bar.close()
    worst_indices = [-i for _, i, _ in sorted(worst, key=lambda e: (-e[0], -e[1]))]
    worst_maps = {-i: m for _, i, m in worst}
    tiles, titles = [], []
    for group, indices, maps in (("", [i for i in spread if i in kept], kept), ("worst: ", worst_indices, worst_maps)):
        for index in indices:
            drawn, iou = picture(index, maps[index])
            tiles.append(drawn)
            titles.append(group + title(index, iou))
    if tiles:
        write_png(out_dir / CONTACT_SHEET, contact_sheet(tiles, titles=titles, legend_names=names))
    return written
