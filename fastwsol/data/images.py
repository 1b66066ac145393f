"""Image files of a split: up-front checks, so a bad file gives an error naming it (or is
skipped and counted) before any pipeline runs, rather than a hard-to-attribute failure, a hang
or a silently grey image in the middle of an epoch.

Checked per file (``verify="header"``, cheap: header parse + a look at the last bytes):
exists and is readable; a format PIL recognises; not truncated (JPEG ends with EOI, PNG with
IEND); its size equals ``image_sizes.txt`` (otherwise GT boxes would be rescaled wrongly),
when the split lists sizes (OpenImages' ``image_sizes.txt`` is empty: the headers' are used).
``verify="decode"`` also decodes every image fully. Grayscale, CMYK, palette or RGBA files
are valid: every loader converts them to RGB as PIL's ``convert("RGB")`` does (the protocol's
reference), and the DALI loader is handed such files re-encoded losslessly as RGB PNG.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fastwsol.data.metadata import SplitMetadata

__all__ = ["BadImageError", "CheckedSplit", "check_split_images", "inspect_image", "read_rgb_pil"]

# Files DALI's decoder handles exactly like PIL's convert("RGB"); anything else is re-encoded.
DALI_NATIVE = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")}
_TAIL_BYTES = 1024


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PIL format name, e.g. "JPEG", "PNG"
    mode: str  # PIL mode, e.g. "RGB", "L", "CMYK"
    width: int
    height: int


@dataclass
class CheckedSplit:
    """The usable images of a split.

    ``usable``: int64 indices into ``metadata.image_ids``; ``sizes``: int64 (N, 2) (width,
    height) of every image as its header says (0, 0 for a skipped one); ``problems``:
    (image_id, reason) of skipped files; ``needs_reencode``: indices DALI cannot take verbatim
    (see module doc).
    """

    usable: np.ndarray
    sizes: np.ndarray
    problems: list[tuple[str, str]] = field(default_factory=list)
    needs_reencode: frozenset[int] = frozenset()


_cache: dict[tuple[str, int, int, str], ImageInfo | str] = {}


def _has_end_marker(path: Path, fmt: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        tail = f.read()
    if fmt == "JPEG":
        return b"\xff\xd9" in tail
    if fmt == "PNG":
        return b"IEND" in tail
    return True


def inspect_image(path: str | os.PathLike, verify: str = "header", *, cache: bool = True) -> ImageInfo:
    """Format, mode and size of an image file; raises :class:`BadImageError` naming the file.

    Results are cached per (path, size, mtime, verify) for the process; ``cache=False`` for
    one-off scans of many files (``fastwsol prepare`` on ImageNet's 1.28 M).
    """
    if verify not in ("header", "decode"):
        raise ValueError(f"verify must be 'header' or 'decode', got {verify!r}")
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BadImageError(f"image file not found: {path}") from None
    except OSError as exc:
        raise BadImageError(f"image file not readable: {path}: {exc}") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, verify)
    cached = _cache.get(key) if cache else None
    if cached is None:
        cached = _inspect_uncached(path, verify)
        if cache:
            _cache[key] = cached
    if isinstance(cached, str):
        raise BadImageError(cached)
    return cached


def _inspect_uncached(path: Path, verify: str) -> ImageInfo | str:
    if not path.is_file():
        return f"image path is not a file: {path}"
    try:
        with Image.open(path) as img:
            info = ImageInfo(img.format or "?", img.mode, img.width, img.height)
            if verify == "decode":
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"cannot decode image {path}: {exc}"
    if not _has_end_marker(path, info.format):
        return f"truncated {info.format} file (no end marker): {path}"
    return info


def check_split_images(
    image_dir: str | os.PathLike,
    metadata: SplitMetadata,
    *,
    skip_bad: bool = False,
    verify: str = "header",
    mask_dir: str | os.PathLike | None = None,
) -> CheckedSplit:
    """Check every image of ``metadata`` under ``image_dir`` (``<data_root>/<DATASET>``) and,
    when the split has GT masks and ``mask_dir`` (``<mask_root>/<DATASET>``) is given, that each
    image's mask files exist (an image without them cannot be scored).

    Raises :class:`BadImageError` at the first bad file unless ``skip_bad``, in which case bad
    files are left out and counted in one warning. An empty split, or one with no usable
    image left, is an error.
    """
    image_dir = Path(image_dir)
    if len(metadata) == 0:
        raise ValueError(f"empty split: {metadata.split_dir} lists no images")
    usable: list[int] = []
    problems: list[tuple[str, str]] = []
    reencode: set[int] = set()
    sizes = np.zeros((len(metadata), 2), np.int64)
    for index, image_id in enumerate(metadata.image_ids):
        path = image_dir / image_id
        try:
            info = inspect_image(path, verify)
            width, height = (info.width, info.height) if metadata.sizes is None else metadata.sizes[index].tolist()
            if (info.width, info.height) != (width, height):
                raise BadImageError(
                    f"{path} is {info.width}x{info.height} but {metadata.split_dir / 'image_sizes.txt'} "
                    f"says {width}x{height}"
                )
            if mask_dir is not None and metadata.masks is not None:
                _check_mask_files(Path(mask_dir), metadata.masks[index], image_id)
        except BadImageError as exc:
            if not skip_bad:
                raise
            problems.append((image_id, str(exc)))
            continue
        usable.append(index)
        sizes[index] = info.width, info.height
        if (info.format, info.mode) not in DALI_NATIVE:
            reencode.add(index)
    if problems:
        warnings.warn(
            f"skipped {len(problems)} of {len(metadata)} image(s) of {metadata.split_dir}; "
            f"first: {problems[0][1]}",
            stacklevel=3,
        )
    if not usable:
        raise ValueError(f"no usable image left in {metadata.split_dir} ({len(problems)} bad)")
    return CheckedSplit(np.array(usable, dtype=np.int64), sizes, problems, frozenset(reencode))


def _check_mask_files(mask_dir: Path, masks, image_id: str) -> None:
    for mask_path in masks.files:
        if not (mask_dir / mask_path).is_file():
            raise BadImageError(f"mask file not found: {mask_dir / mask_path} (a GT mask of {image_id})")


def missing_mask_files(annotations, mask_dir: str | os.PathLike) -> tuple[list[Path], int]:
    """The GT mask files of ``annotations`` (:class:`~fastwsol.data.metadata.MaskAnnotation`
    items) that are not under ``mask_dir``, and how many files they name in all."""
    files = [Path(mask_dir) / p for annotation in annotations for p in annotation.files]
    return [f for f in files if not f.is_file()], len(files)


def read_rgb_pil(path: str | os.PathLike) -> Image.Image:
    """The protocol's decode: PIL, ``convert("RGB")``, no EXIF rotation."""
    with Image.open(path) as img:
        return img.convert("RGB")


def rgb_png_bytes(path: str | os.PathLike) -> bytes:
    """A lossless RGB PNG of the file (for formats/modes DALI would convert differently)."""
    buffer = io.BytesIO()
    read_rgb_pil(path).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
