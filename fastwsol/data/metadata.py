"""wsolevaluation metadata: image ids, class labels, image sizes and GT boxes or masks of one split.

Layout (docs/protocol.md)::

    <metadata_root>/<DATASET>/<split>/image_ids.txt     image_id
                                      class_labels.txt  image_id,label
                                      image_sizes.txt   image_id,width,height   (may be empty)
                                      localization.txt  image_id,x0,y0,x1,y1   (one line per box)
                                                     or image_id,mask_path,ignore_path
    <metadata_root>/<DATASET>/class_names.txt           label,name  (optional; fastwsol's addition)

``metadata_root="builtin"`` is the wsolevaluation metadata shipped in the package
(``fastwsol/metadata``: CUB train/val/test, ILSVRC val/test, OpenImages train/val/test; terms in
its NOTICE).

Boxes use inclusive corners in original pixels, so a box inside a W×H image satisfies
0 <= x0 <= x1 <= W-1 and 0 <= y0 <= y1 <= H-1. Masks (OpenImages) follow wsolevaluation's
format: one line per instance mask, paths relative to ``<mask_root>/<DATASET>``; an image's
first line names its ignore mask (or leaves the field empty: no ignore mask), its later lines
must leave it empty. ``image_sizes.txt`` is empty in OpenImages' release (``sizes`` is then
``None``: the sizes come from the images). Every error names the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN",
    "BUILTIN_METADATA_ROOT",
    "MaskAnnotation",
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
class MaskAnnotation:
    """One image's GT masks: its instance mask PNGs and its ignore PNG, relative to
    ``<mask_root>/<DATASET>``."""

    mask_paths: tuple[str, ...]
    ignore_path: str | None  # None when the image's first line leaves the ignore field empty

    @property
    def files(self) -> tuple[str, ...]:
        """Every PNG the image's ground truth reads: the instance masks, then the ignore mask."""
        return (*self.mask_paths, *([self.ignore_path] if self.ignore_path else []))


@dataclass(frozen=True)
class SplitMetadata:
    """One split's metadata, every array aligned with ``image_ids``.

    ``labels``: int64 (N,); ``sizes``: int64 (N, 2) as (width, height), or ``None`` when
    ``image_sizes.txt`` is empty; ``boxes``: per image a (k, 4) int64 array (x0, y0, x1, y1)
    in original pixels; ``masks``: per image a :class:`MaskAnnotation`. At most one of
    ``boxes``/``masks`` is set (``localization`` says which); neither when the localization
    was not required and ``localization.txt`` is absent or empty.
    """

    split_dir: Path
    image_ids: tuple[str, ...]
    labels: np.ndarray
    sizes: np.ndarray | None
    boxes: tuple[np.ndarray, ...] | None
    masks: tuple[MaskAnnotation, ...] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def localization(self) -> str | None:
        """``"boxes"``, ``"masks"`` or ``None`` (no localization read)."""
        if self.boxes is not None:
            return "boxes"
        return "masks" if self.masks is not None else None


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


def _read_boxes(
    path: Path, lines: list[str], index: dict[str, int], sizes: np.ndarray | None, sizes_path: Path
) -> tuple[np.ndarray, ...]:
    if sizes is None:
        raise ValueError(f"{path}: boxes are checked against the image sizes, but {sizes_path} is empty")
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


def _is_mask_line(line: str) -> bool:
    """A mask line's second-to-last field is a mask path; a box line's is the integer y1."""
    parts = line.rsplit(",", 2)
    if len(parts) != 3:
        return False
    try:
        int(parts[1])
    except ValueError:
        return True
    return False


def _read_masks(path: Path, lines: list[str], index: dict[str, int]) -> tuple[MaskAnnotation, ...]:
    """wsolevaluation's mask format: ``image_id,mask_path,ignore_path`` per instance mask, the
    ignore field set (or empty) on an image's first line only."""
    mask_paths: list[list[str]] = [[] for _ in index]
    ignore_paths: list[str | None] = [None] * len(index)
    first_line = np.zeros(len(index), dtype=np.int64)  # 0 = not seen, else the line number
    for lineno, line in enumerate(lines, 1):
        parts = line.rsplit(",", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].strip():
            raise ValueError(
                f"{path}:{lineno}: malformed line {line!r}: expected image_id,mask_path,ignore_path "
                f"(the ignore path may be empty)"
            )
        image_id, mask_path, ignore_path = parts
        i = _index_known(path, lineno, image_id, index)
        if first_line[i]:
            if ignore_path:
                raise ValueError(
                    f"{path}:{lineno}: image {image_id!r} names an ignore mask {ignore_path!r} on a "
                    f"later line (its first line is {first_line[i]}); only an image's first line "
                    f"may name one"
                )
        else:
            first_line[i] = lineno
            ignore_paths[i] = ignore_path or None
        mask_paths[i].append(mask_path)
    _require_all_seen(path, index, first_line, "mask")
    return tuple(MaskAnnotation(tuple(m), g) for m, g in zip(mask_paths, ignore_paths))


def read_split_dir(split_dir: str | Path, *, require_localization: bool = True) -> SplitMetadata:
    """Read the metadata files of one split folder (``<metadata_root>/<DATASET>/<split>``).

    ``require_localization``: every image must have boxes or masks in ``localization.txt``;
    when False (train splits) a missing or empty ``localization.txt`` gives neither."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"metadata split folder not found: {split_dir}")
    image_ids, index = _read_image_ids(split_dir / IMAGE_IDS)
    labels = _read_per_image(split_dir / CLASS_LABELS, index, 1, "class label")[:, 0]
    sizes_path = split_dir / IMAGE_SIZES
    sizes = None
    if _read_lines(sizes_path):
        sizes = _read_per_image(sizes_path, index, 2, "image size")
        bad = np.flatnonzero((sizes <= 0).any(axis=1))
        if bad.size:
            raise ValueError(
                f"{sizes_path}: image {image_ids[bad[0]]!r} has a non-positive size "
                f"{tuple(int(v) for v in sizes[bad[0]])}"
            )
    localization_path = split_dir / LOCALIZATION
    boxes = masks = None
    if require_localization or localization_path.exists():
        lines = _read_lines(localization_path)
        if not lines and require_localization and index:
            raise ValueError(f"{localization_path}: empty, but every image needs boxes or masks")
        if lines and _is_mask_line(lines[0]):
            masks = _read_masks(localization_path, lines, index)
        elif lines:
            boxes = _read_boxes(localization_path, lines, index, sizes, sizes_path)
    return SplitMetadata(split_dir, image_ids, labels, sizes, boxes, masks)


def resolve_metadata_root(metadata_root: str | Path) -> Path:
    """``"builtin"`` -> the package's metadata folder; any other value is a path."""
    return BUILTIN_METADATA_ROOT if str(metadata_root) == BUILTIN else Path(metadata_root)


def read_split_metadata(
    metadata_root: str | Path, dataset: str, split: str, *, require_localization: bool = True
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
    return read_split_dir(split_dir, require_localization=require_localization)


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
