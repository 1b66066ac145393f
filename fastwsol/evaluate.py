"""Evaluating a model on a split with the protocol (docs/protocol.md): the chosen localisation map
for the ground-truth class → 224² score map → boxes → counts, plus classification accuracy.
Beside the protocol's figures, the same maps scored with a single contour and the share of
inverted maps (:mod:`fastwsol.evaluation.diagnostics`): a multi-contour score alone rewards a
map that is high on the background (the hole's contour outlines the object).
Under DDP every rank evaluates its shard and the counts are summed."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from fastwsol import ops
from fastwsol.data import normalize_on_device
from fastwsol.evaluation import BoxEvaluator, MapDiagnostics, cams_to_scoremaps, resize_boxes, upsample_cams

MAP_KINDS = ("cam", "norm", "sim")


def scoremaps_for(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """224² score maps in [0, 1] from the chosen map of the target class (docs/method.md Table 5):
    ``cam`` and ``norm`` (F̂) the protocol's way (bicubic, min-max); ``sim``: S with negatives
    as background, max-normalised (an all-background map → zeros)."""
    if kind not in MAP_KINDS:
        raise ValueError(f"map must be one of {MAP_KINDS}, got {kind!r}")
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
