"""Evaluating a model on a split with the protocol (docs/protocol.md): the chosen localisation map
for the ground-truth class → 224² score map → boxes → counts, plus classification accuracy.
Under DDP every rank evaluates its shard and the counts are summed."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from fastwsol import ops
from fastwsol.data import normalize_on_device
from fastwsol.evaluation import BoxEvaluator, cams_to_scoremaps, resize_boxes, upsample_cams
from fastwsol.method.reference import MAP_KINDS


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


def box_evaluator(eval_config) -> BoxEvaluator:
    return BoxEvaluator(
        iou_thresholds=tuple(eval_config.iou_thresholds),
        cam_curve_interval=eval_config.cam_curve_interval,
        multi_contour=eval_config.multi_contour,
    )


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
    evaluator = box_evaluator(e)
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
        evaluator.accumulate(
            scoremaps, gt_boxes_224(loader.metadata, indices), top1_correct=top1_correct, top5_correct=top5_correct
        )
        if on_batch is not None:
            on_batch(batch, scoremaps, out["logits"])
    model.train(was_training)
    if ctx is not None and ctx.enabled:  # every rank's counts summed: all ranks get the same metrics
        local = np.concatenate([evaluator.state_vector(), classification])
        total = torch.from_numpy(local)
        dist.all_reduce(total)
        evaluator = box_evaluator(e)
        evaluator.add_state_vector(total[:-2].numpy())
        classification = total[-2:].numpy()
    metrics = evaluator.compute()
    metrics["top1_cls"], metrics["top5_cls"] = (float(c) * 100.0 / evaluator.num_images for c in classification)
    return metrics
