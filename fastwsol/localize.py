"""Localising new images with a trained model (the ``localize`` command): top-k classes, the box
in the image's own pixels, an overlay picture. Evaluating on a labelled split: fastwsol.evaluate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from fastwsol.data import normalize_on_device
from fastwsol.data.images import read_rgb_pil
from fastwsol.evaluate import (
    TrainedModel,
    box_to_original,
    check_map_kind,
    predicted_box,
    scoremaps_for,
)
from fastwsol.report import class_label
from fastwsol.visualize import (
    enlarge,
    label,
    localization_picture,
    with_legend,
    write_png,
)


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
    check_map_kind(map_kind)
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
        raise ValueError(
            f"--out {out_dir}: {', '.join(existing[:3])}{more} already exist; pass --overwrite to replace them"
        )
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
        scoremap = (
            scoremaps_for(out["feature"].float(), trained.model.fc.weight.float(), target, map_kind)[0].cpu().numpy()
        )
        original = box_to_original(predicted_box(scoremap, threshold), width, height)
        result = {
            "path": str(path),
            "size": [width, height],
            "top_classes": [
                {
                    "class": int(c),
                    "score": float(s),
                    **({"name": trained.class_names[int(c)]} if int(c) in trained.class_names else {}),
                }
                for c, s in zip(classes, scores)
            ],
            "box": [int(v) for v in original],
            "map": map_kind,
            "threshold": float(threshold),
        }
        if picture_path is not None:
            top = result["top_classes"][0]
            box = ",".join(map(str, result["box"]))
            title = f"{class_label(top['class'], trained.class_names)} {top['score']:.2f}\nbox {box}"
            picture = with_legend(
                label(enlarge(localization_picture(np.asarray(image), scoremap, predicted_box=original)), title),
                gt=None,
                predicted=f"predicted box ({map_kind} > {threshold:.2f})",
            )
            result["picture"] = str(write_png(picture_path, picture))
        results.append(result)
    return results
