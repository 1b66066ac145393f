"""wsolevaluation metadata: image ids, class labels, image sizes and GT boxes of one split.

Layout (docs/protocol.md)::

    <metadata_root>/<DATASET>/<split>/image_ids.txt     image_id
                                      class_labels.txt  image_id,label
                                      image_sizes.txt   image_id,width,height
                                      localization.txt  image_id,x0,y0,x1,y1   (one line per box)
    <metadata_root>/<DATASET>/class_names.txt           label,name  (optional; fastwsol's addition)

``metadata_root="builtin"`` is the wsolevaluation metadata shipped in the package
(``fastwsol/metadata``: CUB train/val/test, ILSVRC val/test; terms in its NOTICE).

Boxes use inclusive corners in original pixels, so a box inside a W×H image satisfies
0 <= x0 <= x1 <= W-1 and 0 <= y0 <= y1 <= H-1. Every error names the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN",
    "BUILTIN_METADATA_ROOT",
    "SplitMetadata",
    "class_names",
    "read_split_metadata",
    "read_split_dir",
    "resolve_metadata_root",
]

BUILTIN = "builtin"
BUILTIN_METADATA_ROOT = Path(__file__).resolve().parent.parent / "metadata"

IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"
CLASS_NAMES = "class_names.txt"


@dataclass(frozen=True)
class SplitMetadata:
    """One split's metadata, every array aligned with ``image_ids``.

    ``labels``: int64 (N,); ``sizes``: int64 (N, 2) as (width, height); ``boxes``: per image a
    (k, 4) int64 array (x0, y0, x1, y1) in original pixels, or ``None`` when boxes were not
    required and ``localization.txt`` is absent.
    """

    split_dir: Path
    image_ids: tuple[str, ...]
    labels: np.ndarray
    sizes: np.ndarray
    boxes: tuple[np.ndarray, ...] | None

    def __len__(self) -> int:
        return len(self.image_ids)


def _read_lines(path: Path) -> list[str]:
    """Lines of a text file; a missing final newline and CRLF endings are accepted."""
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _fields(path: Path, lineno: int, line: str, count: int) -> list[str]:
    """Split ``image_id,f1,...`` from the right (an image id may itself hold a comma)."""
    parts = line.rsplit(",", count)
    if len(parts) != count + 1 or not parts[0] or any(not p.strip() for p in parts[1:]):
        raise ValueError(
            f"{path}:{lineno}: malformed line {line!r}: expected image_id followed by "
            f"{count} comma-separated integer field(s)"
        )
    return parts


def _integers(path: Path, lineno: int, line: str, fields: list[str], what: str) -> list[int]:
    try:
        return [int(f) for f in fields]
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} must be integers, got {line!r}") from None


def _index_known(path: Path, lineno: int, image_id: str, index: dict[str, int]) -> int:
    try:
        return index[image_id]
    except KeyError:
        raise ValueError(
            f"{path}:{lineno}: image id {image_id!r} is not listed in {IMAGE_IDS}"
        ) from None


def _read_image_ids(path: Path) -> tuple[tuple[str, ...], dict[str, int]]:
    lines = _read_lines(path)
    index: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line or line != line.strip():
            raise ValueError(f"{path}:{lineno}: malformed image id {line!r} (empty or padded)")
        if line in index:
            raise ValueError(
                f"{path}:{lineno}: duplicated image id {line!r} (first on line {index[line] + 1})"
            )
        index[line] = lineno - 1
    return tuple(lines), index


def _read_per_image(
    path: Path, index: dict[str, int], count: int, what: str
) -> np.ndarray:
    """A file with exactly one ``image_id,<count integers>`` line per listed image."""
    values = [None] * len(index)
    seen_on = [0] * len(index)  # 0 = not seen, else the line number
    for lineno, line in enumerate(_read_lines(path), 1):
        image_id, *fields = _fields(path, lineno, line, count)
        row = _integers(path, lineno, line, fields, what)
        i = _index_known(path, lineno, image_id, index)
        if seen_on[i]:
            raise ValueError(
                f"{path}:{lineno}: duplicated image id {image_id!r} (first on line {seen_on[i]})"
            )
        seen_on[i] = lineno
        values[i] = row
    _require_all_seen(path, index, np.array(seen_on, dtype=np.int64), what)
    return np.array(values, dtype=np.int64).reshape(len(index), count)


def _require_all_seen(path: Path, index: dict[str, int], seen: np.ndarray, what: str) -> None:
    missing = np.flatnonzero(seen == 0)
    if missing.size:
        ids = list(index)
        first = int(missing[0])
        raise ValueError(
            f"{path}: {missing.size} image(s) have no {what}; the first is {ids[first]!r} "
            f"(line {first + 1} of {IMAGE_IDS})"
        )


def _read_boxes(path: Path, index: dict[str, int], sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    lines = _read_lines(path)
    rows: list[int] = []
    flat: list[int] = []
    for lineno, line in enumerate(lines, 1):
        image_id, *fields = _fields(path, lineno, line, 4)
        flat.extend(_integers(path, lineno, line, fields, "box coordinates"))
        rows.append(_index_known(path, lineno, image_id, index))
    image_rows = np.array(rows, dtype=np.int64)
    coords = np.array(flat, dtype=np.int64).reshape(-1, 4)
    x0, y0, x1, y1 = coords.T
    width, height = sizes[image_rows].T
    inside = (0 <= x0) & (x0 <= x1) & (x1 < width) & (0 <= y0) & (y0 <= y1) & (y1 < height)
    outside = np.flatnonzero(~inside)
    if outside.size:
        n = int(outside[0])
        raise ValueError(
            f"{path}:{n + 1}: box {tuple(int(v) for v in coords[n])} of {lines[n].rsplit(',', 4)[0]!r} "
            f"is not inside its {width[n]}x{height[n]} image "
            f"(inclusive corners need 0<=x0<=x1<=W-1, 0<=y0<=y1<=H-1)"
        )
    counts = np.bincount(image_rows, minlength=len(index))
    _require_all_seen(path, index, counts, "box")
    # Stable sort keeps each image's boxes in file order.
    order = np.argsort(image_rows, kind="stable")
    return tuple(np.split(coords[order], np.cumsum(counts)[:-1]))


def read_split_dir(split_dir: str | Path, *, require_boxes: bool = True) -> SplitMetadata:
    """Read the metadata files of one split folder (``<metadata_root>/<DATASET>/<split>``)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"metadata split folder not found: {split_dir}")
    image_ids, index = _read_image_ids(split_dir / IMAGE_IDS)
    labels = _read_per_image(split_dir / CLASS_LABELS, index, 1, "class label")[:, 0]
    sizes_path = split_dir / IMAGE_SIZES
    sizes = _read_per_image(sizes_path, index, 2, "image size")
    bad = np.flatnonzero((sizes <= 0).any(axis=1))
    if bad.size:
        raise ValueError(
            f"{sizes_path}: image {image_ids[bad[0]]!r} has a non-positive size "
            f"{tuple(int(v) for v in sizes[bad[0]])}"
        )
    boxes_path = split_dir / LOCALIZATION
    if require_boxes or boxes_path.exists():
        boxes = _read_boxes(boxes_path, index, sizes)
    else:
        boxes = None
    return SplitMetadata(split_dir, image_ids, labels, sizes, boxes)


def resolve_metadata_root(metadata_root: str | Path) -> Path:
    """``"builtin"`` -> the package's metadata folder; any other value is a path."""
    return BUILTIN_METADATA_ROOT if str(metadata_root) == BUILTIN else Path(metadata_root)


def read_split_metadata(
    metadata_root: str | Path, dataset: str, split: str, *, require_boxes: bool = True
) -> SplitMetadata:
    """Read ``<metadata_root>/<dataset>/<split>`` (e.g. ``dataset="CUB"``, ``split="test"``);
    ``metadata_root="builtin"`` reads the shipped metadata."""
    split_dir = resolve_metadata_root(metadata_root) / dataset / split
    if str(metadata_root) == BUILTIN and not split_dir.is_dir():
        shipped = sorted(f"{d.parent.name}/{d.name}" for d in BUILTIN_METADATA_ROOT.glob("*/*") if d.is_dir())
        hint = (" (the ImageNet train list is made from your own copy: `fastwsol prepare imagenet "
                "... --out DATA_ROOT` writes a complete metadata root, DATA_ROOT/metadata)"
                if (dataset, split) == ("ILSVRC", "train") else "")
        raise FileNotFoundError(
            f"metadata_root=builtin has no {dataset}/{split}; it ships {', '.join(shipped)}{hint}"
        )
    return read_split_dir(split_dir, require_boxes=require_boxes)


def class_names(metadata_root: str | Path, dataset: str, split: SplitMetadata | None = None) -> dict[int, str]:
    """Class label → name, from ``<metadata_root>/<dataset>/class_names.txt`` when there is one
    (the synthetic set writes it), else from the image ids' class folders when they are named
    like CUB's ``001.Black_footed_Albatross`` (→ "Black footed Albatross"), one per class;
    ``{}`` when neither names the classes (then labels are shown as numbers)."""
    path = resolve_metadata_root(metadata_root) / dataset / CLASS_NAMES
    if path.is_file():
        names = {}
        for lineno, line in enumerate(_read_lines(path), 1):
            label, _, name = line.partition(",")
            if not label.strip().isdigit() or not name.strip():
                raise ValueError(f"{path}:{lineno}: malformed line {line!r}: expected label,name")
            names[int(label)] = name.strip()
        return names
    if split is None:
        return {}
    folders: dict[int, set[str]] = {}
    for image_id, label in zip(split.image_ids, split.labels.tolist()):
        folders.setdefault(label, set()).add(image_id.split("/")[0] if "/" in image_id else "")
    names = {}
    for label, found in folders.items():
        match = re.fullmatch(r"\d+\.(.+)", next(iter(found))) if len(found) == 1 else None
        if match is None:
            return {}
        names[label] = match.group(1).replace("_", " ")
    return names
