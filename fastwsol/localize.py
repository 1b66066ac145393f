"""Localising new images with a trained model (the ``localize`` command): top-k classes, the box
in the image's own pixels, an overlay picture. Evaluating on a labelled split: fastwsol.evaluate.

Images of any size: a large one is decoded reduced (JPEG's DCT scaling, then a box filter) to what
the model and the overlay need, so a 90-megapixel photo costs megabytes, not gigabytes; its box is
still given in the original's pixels, and its overlay is drawn at most ``OVERLAY_MAX_SIDE`` px."""

from __future__ import annotations

import glob
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from fastwsol.data import normalize_on_device
from fastwsol.evaluate import (
    TrainedModel,
    box_to_original,
    check_map_kind,
    predicted_box,
    scoremaps_for,
)
from fastwsol.progress import Progress
from fastwsol.report import class_label
from fastwsol.visualize import label, localization_picture, with_legend, write_png

OVERLAY_MAX_SIDE = 1024  # an overlay's longest side (title and legend strips aside)
OVERLAY_MIN_WIDTH = 320  # a small image is enlarged by a whole factor to about this, so its title fits
UPSCALE_NOTE_FACTOR = 4.0  # an image the model sees this many times enlarged gets a note
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white, as a viewer shows them
BACKGROUND_NAME = "white"
PROGRESS_MIN_IMAGES = 5  # fewer images finish before a progress line would help


def image_suffixes() -> frozenset[str]:
    """The file suffixes PIL can open (``.jpg``, ``.png``, ...): what a folder or a pattern
    contributes; a file named on its own is tried whatever its suffix."""
    return frozenset(suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN)


def expand_inputs(inputs) -> list[tuple[Path, str | None]]:
    """``(path, error)`` per image to localise, in the order given: a file as it is; a folder's
    image files (not its subfolders'), sorted; a glob pattern's matching image files, sorted
    (``**`` reaches into subfolders). A folder or pattern with no image file is one entry with an
    error; a missing file's error comes when it is read."""
    suffixes = image_suffixes()
    expanded: list[tuple[Path, str | None]] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            expanded += [(p, None) for p in found] or [(path, f"folder {path} holds no image file")]
        elif not path.exists() and any(char in item for char in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True))
            images = [p for p in found if p.is_file() and p.suffix.lower() in suffixes]
            expanded += [(p, None) for p in images] or [(path, f"no image file matches {item}")]
        else:
            expanded.append((path, None))
    return expanded


@dataclass
class LoadedImage:
    """An image as ``localize`` uses it: ``rgb`` (PIL RGB, possibly decoded reduced), the original's
    ``width`` × ``height`` (boxes are given in its pixels), and notes worth telling the user."""

    rgb: Image.Image
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _decode_target(width: int, height: int, model_size: int) -> tuple[int, int] | None:
    """The smallest size worth decoding: at least the model's input on each side and the largest
    overlay on the longest side; None when that is no less than half the image's size."""
    factor = max(OVERLAY_MAX_SIDE / max(width, height), model_size / min(width, height))
    if factor > 0.5:
        return None
    return math.ceil(width * factor), math.ceil(height * factor)


def _composited_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """``image`` as RGB, its transparent pixels (if any) composited on :data:`BACKGROUND`; and
    whether there were any."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
            return Image.alpha_composite(background, rgba).convert("RGB"), True
        return rgba.convert("RGB"), False
    return image.convert("RGB"), False


def read_image(path: str | os.PathLike, model_size: int) -> LoadedImage:
    """Decode ``path`` for a model of ``model_size``² input (PIL, no EXIF rotation, as the
    protocol reads images). Raises ``ValueError("cannot read image PATH: why")`` on one line.
    PIL's warnings (a decompression-bomb size, a broken EXIF block) become notes."""
    path = Path(path)

    def unreadable(why) -> ValueError:
        return ValueError(f"cannot read image {path}: {_one_line(why)}")

    if not path.exists():
        raise unreadable("no such file")
    if not path.is_file():
        raise unreadable("not a file")
    notes = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as image:
                width, height = image.size
                target = _decode_target(width, height, model_size)
                if target is not None:
                    image.draft(None, target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
                image.load()
                rgb, composited = _composited_rgb(image)
    except UnidentifiedImageError:
        raise unreadable("not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise unreadable(exc) from None
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            notes.append(
                f"{width * height / 1e6:.1f} megapixels, above PIL's decompression-bomb warning limit "
                f"({Image.MAX_IMAGE_PIXELS / 1e6:.1f}); read reduced, as the model needs only {model_size}x{model_size}"
            )
        else:
            notes.append(f"PIL: {_one_line(warning.message)}")
    if target is not None:
        reduction = min(rgb.width // target[0], rgb.height // target[1])
        if reduction >= 2:
            rgb = rgb.reduce(reduction)
    if composited:
        notes.append(f"transparent pixels composited on {BACKGROUND_NAME}")
    upscale = max(model_size / width, model_size / height)
    if upscale >= UPSCALE_NOTE_FACTOR:
        notes.append(f"enlarged {upscale:.1f}x to the model's {model_size}x{model_size} input: the box is coarse")
    return LoadedImage(rgb, width, height, notes)


def image_to_input(image, size: int) -> torch.Tensor:
    """PIL RGB → 1×3×size×size uint8, the eval transform (resize to size², no crop)."""
    return TF.pil_to_tensor(TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR))[None]


def overlay_size(width: int, height: int) -> tuple[int, int]:
    """An overlay's size for a ``width`` × ``height`` image: a large image shrunk so its longest
    side is :data:`OVERLAY_MAX_SIDE`; a small one enlarged by a whole factor towards
    :data:`OVERLAY_MIN_WIDTH` wide (room for its title) without passing that longest side."""
    longest = max(width, height)
    if longest > OVERLAY_MAX_SIDE:
        scale = OVERLAY_MAX_SIDE / longest
        return max(1, round(width * scale)), max(1, round(height * scale))
    factor = max(1, min(-(-OVERLAY_MIN_WIDTH // width), OVERLAY_MAX_SIDE // longest))
    return width * factor, height * factor


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


def localization_threshold(trained: TrainedModel, threshold: float | None = None) -> float:
    """``threshold``, else the one the checkpoint records; an error when neither is there."""
    threshold = trained.threshold if threshold is None else threshold
    if threshold is None:
        raise ValueError(f"{trained.path} holds no validated CAM threshold: pass --threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must lie in [0, 1] (score maps are min-max normalised), got {threshold}")
    return float(threshold)


@torch.no_grad()
def localize_images(trained: TrainedModel, inputs, *, map_kind: str = "cam", threshold: float | None = None,
                    out_dir: str | os.PathLike | None = None, top_k: int = 5, overwrite: bool = False,
                    progress: bool = True) -> list[dict]:
    """Per image of ``inputs`` (files, folders, glob patterns: :func:`expand_inputs`): top-k
    classes with softmax scores, the predicted box in the ORIGINAL image's pixel coordinates, and
    (with ``out_dir``) an overlay PNG (:func:`overlay_paths`, :func:`overlay_size`; an existing
    file there is an error before anything is written, unless ``overwrite``). An input that
    cannot be read gives ``{"path", "error"}`` and the others are still processed; ``notes``
    lists what the user should know about an image (:func:`read_image`)."""
    check_map_kind(map_kind)
    threshold = localization_threshold(trained, threshold)
    entries = expand_inputs(inputs)
    readable = [path for path, error in entries if error is None]
    targets = overlay_paths(readable, out_dir, map_kind) if out_dir is not None else [None] * len(readable)
    existing = [str(p) for p in targets if p is not None and p.exists()]
    pictures = iter(targets)
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(
            f"--out {out_dir}: {', '.join(existing[:3])}{more} already exist; pass --overwrite to replace them"
        )
    results = []
    with Progress(len(entries), "localize", enabled=progress and len(entries) > PROGRESS_MIN_IMAGES) as bar:
        for path, error in entries:
            picture_path = next(pictures) if error is None else None
            try:
                if error is not None:
                    raise ValueError(error)
                loaded = read_image(path, trained.config.data.image_size)
            except ValueError as exc:  # every bad input is reported on its own
                results.append({"path": str(path), "error": str(exc)})
                bar.update()
                continue
            results.append(_localize_one(trained, path, loaded, map_kind, threshold, top_k, picture_path))
            bar.update(images=1)
    return results


def _localize_one(trained: TrainedModel, path: Path, loaded: LoadedImage, map_kind: str, threshold: float,
                  top_k: int, picture_path: Path | None) -> dict:
    device = next(trained.model.parameters()).device
    out = trained.model(normalize_on_device(image_to_input(loaded.rgb, trained.config.data.image_size).to(device)))
    probabilities = out["logits"].softmax(dim=1)[0]
    scores, classes = probabilities.topk(min(top_k, probabilities.numel()))
    scoremap = (
        scoremaps_for(out["feature"].float(), trained.model.fc.weight.float(), classes[:1], map_kind)[0].cpu().numpy()
    )
    box = predicted_box(scoremap, threshold)
    result = {
        "path": str(path),
        "size": [loaded.width, loaded.height],
        "top_classes": [
            {
                "class": int(c),
                "score": float(s),
                **({"name": trained.class_names[int(c)]} if int(c) in trained.class_names else {}),
            }
            for c, s in zip(classes, scores)
        ],
        "box": [int(v) for v in box_to_original(box, loaded.width, loaded.height)],
        "map": map_kind,
        "threshold": threshold,
    }
    if loaded.notes:
        result["notes"] = loaded.notes
    if picture_path is not None:
        result["picture"] = str(write_png(picture_path, overlay_picture(loaded, result, scoremap, box, trained)))
    return result


def overlay_picture(loaded: LoadedImage, result: dict, scoremap: np.ndarray, box224, trained: TrainedModel):
    """The image at :func:`overlay_size` under its heat map, the predicted box in red, titled with
    the top class, its score and the box (in the original's pixels), a legend below."""
    width, height = overlay_size(loaded.width, loaded.height)
    image = np.asarray(loaded.rgb)
    if (width, height) != (loaded.rgb.width, loaded.rgb.height):
        shrinking = width < loaded.rgb.width
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_NEAREST)
    top = result["top_classes"][0]
    box = ",".join(map(str, result["box"]))
    title = f"{class_label(top['class'], trained.class_names)} {top['score']:.2f}\nbox {box}"
    if (width, height) != (loaded.width, loaded.height):
        title += f"\nof the {loaded.width}x{loaded.height} image, drawn at {width}x{height}"
    picture = localization_picture(image, scoremap, predicted_box=box_to_original(box224, width, height))
    legend = f"predicted box ({result['map']} > {result['threshold']:.2f})"
    return with_legend(label(picture, title), gt=None, predicted=legend)
