"""Evaluating a model with the protocol (docs/protocol.md): the chosen localisation map for the
ground-truth class → 224² score map → boxes → counts, plus classification accuracy. Beside the
protocol's figures, the same maps scored with a single contour and the share of inverted maps
(:mod:`fastwsol.evaluation.diagnostics`): a multi-contour score alone rewards a map that is high
on the background (the hole's contour outlines the object). Under DDP every rank evaluates its
shard and the counts are summed.

Also a trained model's side: ``load_trained`` (a ``fastwsol train`` checkpoint → the model),
``evaluate_checkpoint`` (the ``evaluate`` command: metrics JSON and pictures)."""

from __future__ import annotations

import json
import os
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
    cams_to_scoremaps,
    resize_boxes,
    upsample_cams,
)
from fastwsol.evaluation.boxes import SCOREMAP_SIZE, boxes_at_thresholds
from fastwsol.io import write_text_atomic
from fastwsol.method import MAP_KINDS
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


@torch.no_grad()
def evaluate_model(model, loader, config, ctx=None, *, map_kind: str | None = None, on_batch=None) -> dict:
    """Metrics of ``model`` on ``loader``'s split: the evaluator's (box accuracies, MaxBoxAccV2,
    GT-known / top-1 / top-5 Loc at the GT-known-optimal threshold, with ``eval.multi_contour``)
    and ``top1_cls``/``top5_cls``; the same box metrics with a single contour (keys
    ``*_single``, equal to the others when the config already evaluates one contour); and
    ``inverted_pct`` / ``peak_in_gt_pct`` (:mod:`fastwsol.evaluation.diagnostics`).

    ``on_batch(batch, scoremaps, logits)`` is called per batch (e.g. to save pictures).
    """
    e = config.eval
    evaluator = box_evaluator(e)
    single = box_evaluator(e, multi_contour=False) if e.multi_contour else None
    diagnostics = MapDiagnostics()
    was_training = model.training
    model.eval()
    classification = np.zeros(2, np.int64)  # top-1, top-5 correct
    for batch in loader:
        images = batch["images"]
        images = normalize_on_device(images) if images.dtype == torch.uint8 else images
        out = model(images)
        labels = batch["labels"]
        scoremaps = scoremaps_for(out["feature"].float(), model.fc.weight.float(), labels, map_kind or e.map)
        top5 = out["logits"].topk(min(5, out["logits"].shape[1]), dim=1).indices
        top1_correct = (top5[:, 0] == labels).cpu().numpy()
        top5_correct = (top5 == labels[:, None]).any(dim=1).cpu().numpy()
        classification += (int(top1_correct.sum()), int(top5_correct.sum()))
        indices = batch["indices"].cpu().numpy()
        gt_boxes = gt_boxes_224(loader.metadata, indices)
        for box_eval in (evaluator, single) if single is not None else (evaluator,):
            box_eval.accumulate(scoremaps, gt_boxes, top1_correct=top1_correct, top5_correct=top5_correct)
        diagnostics.accumulate(scoremaps, gt_boxes)
        if on_batch is not None:
            on_batch(batch, scoremaps, out["logits"])
    model.train(was_training)
    if ctx is not None and ctx.enabled:  # every rank's counts summed: all ranks get the same metrics
        local = [evaluator, *([single] if single is not None else []), diagnostics]
        total = torch.from_numpy(np.concatenate([*(part.state_vector() for part in local), classification]))
        dist.all_reduce(total)
        summed = [
            box_evaluator(e),
            *([box_evaluator(e, multi_contour=False)] if single is not None else []),
            MapDiagnostics(),
        ]
        start = 0
        for fresh, part in zip(summed, local):
            size = len(part.state_vector())
            fresh.add_state_vector(total[start : start + size].numpy())
            start += size
        evaluator, diagnostics = summed[0], summed[-1]
        single = summed[1] if single is not None else None
        classification = total[-2:].numpy()
    metrics = evaluator.compute()
    single_metrics = single.compute() if single is not None else metrics
    metrics.update({f"{k}_single": single_metrics[k] for k in SINGLE_CONTOUR_KEYS})
    metrics.update(diagnostics.compute())
    metrics["top1_cls"], metrics["top5_cls"] = (float(c) * 100.0 / evaluator.num_images for c in classification)
    return metrics


def predicted_box(scoremap: np.ndarray, threshold: float) -> np.ndarray:
    """The box of the largest contour at ``threshold`` (224² coordinates), the protocol's way."""
    return boxes_at_thresholds(np.asarray(scoremap, np.float32), np.array([threshold]), multi_contour=False)[0][0]


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


def evaluate_checkpoint(
    trained: TrainedModel,
    *,
    split: str = "test",
    map_kind: str | None = None,
    save_maps: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    sheet_size: int = 32,
    config=None,
) -> dict:
    """The protocol's metrics on ``split``, written to ``out_dir/metrics_<split>_<map>.json``
    (``metrics["json"]``). ``config``: the run's, with data paths from :func:`locate_data`
    (the default). ``save_maps``: :func:`save_localization_pictures` there."""
    config = config or locate_data(trained)[0]
    map_kind = map_kind or config.eval.map
    check_map_kind(map_kind)  # before the split is read
    device = next(trained.model.parameters()).device
    loader = loader_from_config(config, split, batch_size=config.eval.batch_size, device=device, train=False)
    metrics = evaluate_model(trained.model, loader, config, map_kind=map_kind)
    metrics.update(split=split, map=map_kind, checkpoint=str(trained.path))
    out_dir = Path(out_dir) if out_dir is not None else trained.path.parent
    write_text_atomic(out_dir / f"metrics_{split}_{map_kind}.json", json.dumps(metrics, indent=2) + "\n")
    metrics["json"] = str(out_dir / f"metrics_{split}_{map_kind}.json")
    if save_maps is not None:
        metrics["pictures"] = save_localization_pictures(
            trained, loader, map_kind, metrics["best_threshold"], Path(save_maps), sheet_size, config.data.data_root
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
) -> int:
    """Per image ``<image_id>_<map>.png``: the original image (its own size and aspect ratio)
    under the heat map, GT boxes green, the predicted box red (at ``threshold``), titled with
    the class and the box's IoU, with a legend. ``contact_sheet.png``: half of ``sheet_size``
    images spread over the classes (:func:`sheet_picks`), half the lowest-IoU ones among the
    others (the worst cases). Returns how many pictures were written."""
    import heapq

    from fastwsol.evaluation.boxes import multiple_iou

    model, metadata = trained.model, loader.metadata
    folder = Path(data_root) / trained.config.data.dataset
    spread = sheet_picks(metadata.labels, sheet_size - sheet_size // 2)
    keep = set(spread)
    kept, worst = {}, []  # index -> (scoremap, iou); heap of (-iou, index, scoremap) of the lowest IoUs
    written = 0

    def picture(index: int, scoremap: np.ndarray) -> tuple[np.ndarray, float]:
        image = np.asarray(read_rgb_pil(folder / metadata.image_ids[index]))
        height, width = image.shape[:2]
        box224 = predicted_box(scoremap, threshold)
        iou = float(multiple_iou(box224[None], gt_boxes_224(metadata, [index])[0]).max())
        drawn = localization_picture(image, scoremap, metadata.boxes[index], box_to_original(box224, width, height))
        return drawn, iou

    def title(index: int, iou: float) -> str:
        target = class_label(int(metadata.labels[index]), trained.class_names)
        return f"{target}\nIoU {iou:.2f}  {os.path.basename(metadata.image_ids[index])}"

    names = {"predicted": f"predicted box ({map_kind} > {threshold:.3f}, the GT-known-optimal threshold)"}
    for batch in loader:
        out = model(normalize_on_device(batch["images"]))
        scoremaps = (
            scoremaps_for(out["feature"].float(), model.fc.weight.float(), batch["labels"], map_kind).cpu().numpy()
        )
        for index, scoremap in zip(batch["indices"].cpu().numpy().tolist(), scoremaps):
            drawn, iou = picture(index, scoremap)
            image_id = metadata.image_ids[index]
            write_png(
                out_dir / (os.path.splitext(image_id)[0] + f"_{map_kind}.png"),
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
    worst_indices = [-i for _, i, _ in sorted(worst, key=lambda e: (-e[0], -e[1]))]
    worst_maps = {-i: m for _, i, m in worst}
    tiles, titles = [], []
    for group, indices, maps in (("", [i for i in spread if i in kept], kept), ("worst: ", worst_indices, worst_maps)):
        for index in indices:
            drawn, iou = picture(index, maps[index])
            tiles.append(drawn)
            titles.append(group + title(index, iou))
    if tiles:
        write_png(out_dir / "contact_sheet.png", contact_sheet(tiles, titles=titles, legend_names=names))
    return written
