"""Evaluating a model on a split with the protocol (PROTOCOL.md): the chosen localisation map
for the ground-truth class → 224² score map → boxes → counts, plus classification accuracy.
Under DDP every rank evaluates its shard and the counts are summed."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from fastwsol import ops
from fastwsol.data import normalize_on_device
from fastwsol.evaluation import BoxEvaluator, resize_boxes, scoremaps_from_cams

MAP_KINDS = ("cam", "norm", "sim")


def localization_map(feature: torch.Tensor, fc_weight: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The map to localise with (METHOD.md Table 5), B×h×w, before upsampling:
    ``cam`` the CAM; ``norm`` F̂; ``sim`` S with negatives as background (max-normalised later)."""
    if kind not in MAP_KINDS:
        raise ValueError(f"map must be one of {MAP_KINDS}, got {kind!r}")
    maps = ops.localization_maps(feature, fc_weight, target)
    return maps[kind].clamp_min(0) if kind == "sim" else maps[kind]


def gt_boxes_224(metadata, indices: np.ndarray, size: int = 224) -> list[np.ndarray]:
    """GT boxes of these images rescaled to ``size``² with the protocol's truncation."""
    return [resize_boxes(metadata.boxes[i], *metadata.sizes[i], size=size) for i in indices]


@torch.no_grad()
def evaluate_model(model, loader, config, ctx=None, *, map_kind: str | None = None, on_batch=None) -> dict:
    """Metrics of ``model`` on ``loader``'s split: the evaluator's (box accuracies, MaxBoxAccV2,
    GT-known / top-1 / top-5 Loc at the GT-known-optimal threshold) and ``top1_cls``/``top5_cls``.

    ``on_batch(batch, scoremaps, logits)`` is called per batch (e.g. to save pictures).
    """
    e = config.eval
    evaluator = BoxEvaluator(
        iou_thresholds=tuple(e.iou_thresholds), cam_curve_interval=e.cam_curve_interval, multi_contour=e.multi_contour
    )
    was_training = model.training
    model.eval()
    for batch in loader:
        images = batch["images"]
        images = normalize_on_device(images) if images.dtype == torch.uint8 else images
        out = model(images)
        labels = batch["labels"]
        maps = localization_map(out["feature"].float(), model.fc.weight.float(), labels, map_kind or e.map)
        scoremaps = scoremaps_from_cams(maps)
        top5 = out["logits"].topk(min(5, out["logits"].shape[1]), dim=1).indices
        top1_correct = (top5[:, 0] == labels).cpu().numpy()
        top5_correct = (top5 == labels[:, None]).any(dim=1).cpu().numpy()
        indices = batch["indices"].cpu().numpy()
        evaluator.accumulate(
            scoremaps, gt_boxes_224(loader.metadata, indices), top1_correct=top1_correct, top5_correct=top5_correct
        )
        if on_batch is not None:
            on_batch(batch, scoremaps, out["logits"])
    model.train(was_training)
    if ctx is not None and ctx.enabled:
        evaluator = _sum_over_ranks(evaluator)
    metrics = evaluator.compute()
    metrics["top1_cls"] = float(evaluator.top1_cls_correct) / max(evaluator.num_images, 1) * 100
    metrics["top5_cls"] = float(evaluator.top5_cls_correct) / max(evaluator.num_images, 1) * 100
    return metrics


def _sum_over_ranks(evaluator: BoxEvaluator) -> BoxEvaluator:
    """Every rank's counts summed (all-reduce), so every rank computes the same metrics."""
    flat = torch.from_numpy(evaluator.state_vector().astype(np.int64))
    dist.all_reduce(flat)
    return evaluator.from_state_vector(flat.numpy())
