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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from fastwsol import ops
from fastwsol.checkpoint import load_checkpoint
from fastwsol.io import write_text_atomic
from fastwsol.config import config_from_dict
from fastwsol.data import loader_from_config, normalize_on_device
from fastwsol.evaluation import BoxEvaluator, MapDiagnostics, cams_to_scoremaps, resize_boxes, upsample_cams
from fastwsol.evaluation.boxes import SCOREMAP_SIZE, boxes_at_thresholds
from fastwsol.method import MAP_KINDS
from fastwsol.models import model_from_config
from fastwsol.visualize import contact_sheet, label, localization_picture, write_png


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
        summed = [box_evaluator(e), *([box_evaluator(e, multi_contour=False)] if single is not None else []), MapDiagnostics()]
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


@dataclass
class TrainedModel:
    model: torch.nn.Module
    config: object  # ExperimentConfig of the run
    threshold: float | None  # the CAM threshold validated with the checkpoint (GT-known-optimal), if any
    path: Path
    class_names: dict[int, str]  # label -> name ({} when the run's metadata names none)
    workdir: Path | None  # where the run was made: its config's relative data paths start there


def load_trained(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a ``fastwsol train`` checkpoint, in eval mode (no weights are downloaded)."""
    state = load_checkpoint(checkpoint)
    config = config_from_dict(state["config"])
    model = model_from_config(config, state["num_classes"], load_weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint}: weights do not fit {config.model.name}: {exc}") from exc
    threshold = state.get("best", {}).get("threshold")
    workdir = Path(state["workdir"]) if state.get("workdir") else None
    return TrainedModel(model.to(device).eval(), config, threshold, Path(checkpoint), state.get("class_names") or {}, workdir)


def predicted_box(scoremap: np.ndarray, threshold: float) -> np.ndarray:
    """The box of the largest contour at ``threshold`` (224² coordinates), the protocol's way."""
    return boxes_at_thresholds(np.asarray(scoremap, np.float32), np.array([threshold]), multi_contour=False)[0][0]


def evaluate_checkpoint(trained: TrainedModel, *, split: str = "test", map_kind: str | None = None,
                        save_maps: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                        sheet_size: int = 32) -> dict:
    """The protocol's metrics on ``split``, written to ``out_dir/metrics_<split>_<map>.json``.
    ``save_maps``: per image a PNG (image, heat overlay of the map, GT boxes green, predicted
    box red at the GT-known-optimal threshold) and ``contact_sheet.png`` of the first images."""
    config = trained.config
    map_kind = map_kind or config.eval.map
    check_map_kind(map_kind)  # before the split is read
    device = next(trained.model.parameters()).device
    loader = loader_from_config(config, split, batch_size=config.eval.batch_size, device=device, train=False)
    metrics = evaluate_model(trained.model, loader, config, map_kind=map_kind)
    metrics.update(split=split, map=map_kind, checkpoint=str(trained.path))
    out_dir = Path(out_dir) if out_dir is not None else trained.path.parent
    write_text_atomic(out_dir / f"metrics_{split}_{map_kind}.json", json.dumps(metrics, indent=2) + "\n")
    if save_maps is not None:
        save_localization_pictures(trained, loader, map_kind, metrics["best_threshold"], Path(save_maps), sheet_size)
    return metrics


@torch.no_grad()
def save_localization_pictures(trained: TrainedModel, loader, map_kind: str, threshold: float, out_dir: Path,
                               sheet_size: int) -> None:
    model, metadata = trained.model, loader.metadata
    first = []
    for batch in loader:
        out = model(normalize_on_device(batch["images"]))
        scoremaps = scoremaps_for(out["feature"].float(), model.fc.weight.float(), batch["labels"], map_kind).cpu().numpy()
        indices = batch["indices"].cpu().numpy()
        images = [cv2.resize(i, (SCOREMAP_SIZE, SCOREMAP_SIZE), interpolation=cv2.INTER_LINEAR)
                  for i in batch["images"].permute(0, 2, 3, 1).cpu().numpy()]
        for image, scoremap, index, gt in zip(images, scoremaps, indices, gt_boxes_224(metadata, indices)):
            picture = localization_picture(image, scoremap, gt, predicted_box(scoremap, threshold))
            image_id = metadata.image_ids[index]
            write_png(out_dir / (os.path.splitext(image_id)[0] + f"_{map_kind}.png"), picture)
            if len(first) < sheet_size:
                first.append(label(picture, os.path.basename(image_id)))
    if first:
        write_png(out_dir / "contact_sheet.png", contact_sheet(first))
