"""Using a trained checkpoint: rebuild the model, classify and localise images of any size, and
evaluate a split with pictures (the ``evaluate`` and ``localize`` commands)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from fastwsol.checkpoint import load_checkpoint, write_text_atomic
from fastwsol.config import config_from_dict
from fastwsol.data import build_loader, normalize_on_device
from fastwsol.data.images import read_rgb_pil
from fastwsol.evaluate import evaluate_model, gt_boxes_224, scoremaps_for
from fastwsol.evaluation.boxes import SCOREMAP_SIZE, boxes_at_thresholds
from fastwsol.models import create_model
from fastwsol.visualize import contact_sheet, label, localization_picture, write_png


@dataclass
class TrainedModel:
    model: torch.nn.Module
    config: object  # ExperimentConfig of the run
    threshold: float | None  # the CAM threshold validated with the checkpoint (GT-known-optimal), if any
    path: Path


def load_trained(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a ``fastwsol train`` checkpoint, in eval mode (no weights are downloaded)."""
    state = load_checkpoint(checkpoint)
    config = config_from_dict(state["config"])
    m = config.model
    model = create_model(m.name, state["num_classes"], pretrained=None, large_feature_map=m.large_feature_map,
                         drop_threshold=m.drop_threshold, drop_prob=m.drop_prob)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint}: weights do not fit {m.name}: {exc}") from exc
    threshold = state.get("best", {}).get("threshold")
    return TrainedModel(model.to(device).eval(), config, threshold, Path(checkpoint))


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


def image_to_input(image, size: int) -> torch.Tensor:
    """PIL RGB → 1×3×size×size uint8, the eval transform (resize to size², no crop)."""
    return TF.pil_to_tensor(TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR))[None]


def overlay_paths(paths, out_dir: str | os.PathLike, map_kind: str) -> list[Path]:
    """One distinct ``<name>_<map>.png`` per image under ``out_dir``, mirroring the images'
    folders below their common folder (``A/x.jpg``, ``B/x.jpg`` → ``A/x_cam.png``,
    ``B/x_cam.png``); the same file given twice gets ``_2``, ``_3``, ..."""
    resolved = [Path(p).resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    targets, seen = [], set()
    for path in resolved:
        target = Path(out_dir) / path.parent.relative_to(common) / f"{path.stem}_{map_kind}.png"
        candidate, copy = target, 1
        while candidate in seen:
            copy += 1
            candidate = target.with_name(f"{target.stem}_{copy}.png")
        seen.add(candidate)
        targets.append(candidate)
    return targets


@torch.no_grad()
def localize_images(trained: TrainedModel, paths, *, map_kind: str = "cam", threshold: float | None = None,
                    out_dir: str | os.PathLike | None = None, top_k: int = 5, overwrite: bool = False) -> list[dict]:
    """Per image: top-k classes with softmax scores, the predicted box in the ORIGINAL image's
    pixel coordinates, and (with ``out_dir``) an overlay PNG (:func:`overlay_paths`; an existing
    file there is an error before anything is written, unless ``overwrite``). A file that cannot
    be read gives ``{"path", "error"}`` and the others are still processed."""
    threshold = trained.threshold if threshold is None else threshold
    if threshold is None:
        raise ValueError(f"{trained.path} holds no validated CAM threshold: pass --threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must lie in [0, 1] (score maps are min-max normalised), got {threshold}")
    paths = list(paths)
    pictures = overlay_paths(paths, out_dir, map_kind) if out_dir is not None else [None] * len(paths)
    existing = [str(p) for p in pictures if p is not None and p.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(f"--out {out_dir}: {', '.join(existing[:3])}{more} already exist; pass --overwrite to replace them")
    device = next(trained.model.parameters()).device
    size = trained.config.data.image_size
    results = []
    for path, picture_path in zip(map(Path, paths), pictures):
        try:
            image = read_rgb_pil(path)
        except Exception as exc:  # every unreadable file is reported on its own
            results.append({"path": str(path), "error": f"cannot read image {path}: {exc}"})
            continue
        width, height = image.size
        out = trained.model(normalize_on_device(image_to_input(image, size).to(device)))
        probabilities = out["logits"].softmax(dim=1)[0]
        scores, classes = probabilities.topk(min(top_k, probabilities.numel()))
        target = classes[:1]
        scoremap = scoremaps_for(out["feature"].float(), trained.model.fc.weight.float(), target, map_kind)[0].cpu().numpy()
        original = box_to_original(predicted_box(scoremap, threshold), width, height)
        result = {
            "path": str(path),
            "size": [width, height],
            "top_classes": [{"class": int(c), "score": float(s)} for c, s in zip(classes, scores)],
            "box": [int(v) for v in original],
            "map": map_kind,
            "threshold": float(threshold),
        }
        if picture_path is not None:
            picture = localization_picture(np.asarray(image), scoremap, predicted_box=original)
            result["picture"] = str(write_png(picture_path, picture))
        results.append(result)
    return results


def evaluate_checkpoint(trained: TrainedModel, *, split: str = "test", map_kind: str | None = None,
                        save_maps: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                        sheet_size: int = 32) -> dict:
    """The protocol's metrics on ``split``, written to ``out_dir/metrics_<split>_<map>.json``.
    ``save_maps``: per image a PNG (image, heat overlay of the map, GT boxes green, predicted
    box red at the GT-known-optimal threshold) and ``contact_sheet.png`` of the first images."""
    config = trained.config
    map_kind = map_kind or config.eval.map
    d = config.data
    device = next(trained.model.parameters()).device
    loader = build_loader(d.data_root, d.metadata_root, d.dataset, split, train=False, batch_size=config.eval.batch_size,
                          loader=d.loader, device=device, num_threads=d.num_threads, image_size=d.image_size,
                          output="uint8", skip_bad=d.skip_bad)
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
