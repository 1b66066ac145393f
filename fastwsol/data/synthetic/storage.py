"""A synthetic WSOL set on disk (the pictures are ``render``'s), written in the wsolevaluation
layout (docs/protocol.md) so every loader and the evaluator read it like CUB.

Written layout (``out`` is the argument)::

    out/data/SYNTHETIC/<image_id>                    # JPEG, image_id = "c03/train_0012.jpg"
    out/metadata/SYNTHETIC/{train,val,test}/         # image_ids, class_labels, image_sizes,
                                                     # localization (+ part_localization.txt)
    out/synthetic.json                               # the generation parameters

so ``data_root = out/"data"``, ``metadata_root = out/"metadata"``, ``dataset = "SYNTHETIC"``.
Every image is drawn from its own RNG seeded by (seed, split, class, index): the output is
deterministic for a seed and independent of generation order.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from fastwsol.data.metadata import CLASS_NAMES
from fastwsol.data.synthetic.render import GENERATOR_VERSION, MAX_CLASSES_OF_TASK, TASKS, class_name, render_sample
from fastwsol.io import write_bytes_atomic

DATASET_NAME = "SYNTHETIC"
SPLITS = ("train", "val", "test")
JPEG_QUALITY = 90
MANIFEST = "synthetic.json"
METADATA_FILES = ("image_ids", "class_labels", "image_sizes", "localization", "part_localization")


@dataclass(frozen=True)
class SyntheticSpec:
    """Generation parameters (saved to ``synthetic.json``)."""

    classes: int = 10
    train_per_class: int = 80
    val_per_class: int | None = None  # None: test_per_class (as make_synthetic_dataset)
    test_per_class: int = 20
    seed: int = 0
    min_size: int = 160  # image width/height drawn uniformly from [min_size, max_size]
    max_size: int = 256
    max_distractors: int = 4
    task: str = "parts"  # "parts": the WSOL set; "bodies": its pretraining stand-in
    # Probability that a body wears its own class's tint (else another class's): the body's
    # weak, non-discriminative class cue (0 = bodies carry no class information).
    body_cue: float = 0.0
    # Classes share their body's tint by group (group = class mod body_groups): the body tells
    # the group, only the part tells the class, as a bird's plumage is shared by related species
    # while its head tells them apart. 0 = every body in the same colours.
    body_groups: int = 0
    generator: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        if self.val_per_class is None:
            object.__setattr__(self, "val_per_class", self.test_per_class)


@dataclass(frozen=True)
class SyntheticPaths:
    root: Path
    data_root: Path
    metadata_root: Path
    dataset: str = DATASET_NAME
    reused: bool = field(default=False, compare=False)  # an identical set was already there


def _write_atomic(path: Path, data: bytes) -> None:
    # no fsync: one per JPEG would slow generation, and a generation cut short is run again
    write_bytes_atomic(path, data, durable=False)


def _split_seed(seed: int, split: str, label: int, index: int) -> list[int]:
    return [seed, SPLITS.index(split), label, index]


def _image_id(label: int, split: str, index: int) -> str:
    return f"c{label:02d}/{split}_{index:04d}.jpg"


def _per_class(spec: SyntheticSpec) -> dict[str, int]:
    return {"train": spec.train_per_class, "val": spec.val_per_class, "test": spec.test_per_class}


def _set_files(spec: SyntheticSpec) -> list[Path]:
    """Every file a set of ``spec`` consists of, relative to its root (the manifest last)."""
    files = [
        Path("data", DATASET_NAME, _image_id(label, split, index))
        for split, count in _per_class(spec).items()
        for label in range(spec.classes)
        for index in range(count)
    ]
    files += [Path("metadata", DATASET_NAME, split, f"{name}.txt") for split in SPLITS for name in METADATA_FILES]
    return files + [Path("metadata", DATASET_NAME, CLASS_NAMES), Path(MANIFEST)]


def _recorded_spec(root: Path) -> SyntheticSpec | None:
    """The parameters of the set ``root/synthetic.json`` describes (None: not a readable manifest)."""
    try:
        saved = json.loads((root / MANIFEST).read_text())
        saved.pop("dataset")
        saved.setdefault("generator", 1)
        return SyntheticSpec(**saved)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _spec_changes(recorded: SyntheticSpec, spec: SyntheticSpec) -> str:
    """``"key recorded -> spec, ..."`` for the parameters in which two sets differ."""
    return ", ".join(f"{k} {v!r} -> {getattr(spec, k)!r}" for k, v in asdict(recorded).items() if getattr(spec, k) != v)


def recorded_set_changes(root: str | os.PathLike, spec: SyntheticSpec) -> str:
    """How the synthetic set in ``root`` differs from one of ``spec`` (``""``: it is that set,
    or ``root`` holds no synthetic set)."""
    recorded = _recorded_spec(Path(root))
    return "" if recorded is None else _spec_changes(recorded, spec)


def _write_set(root: Path, spec: SyntheticSpec) -> None:
    image_dir = root / "data" / DATASET_NAME
    encode = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for label in range(spec.classes):
        (image_dir / f"c{label:02d}").mkdir(parents=True, exist_ok=True)
    for split, count in _per_class(spec).items():
        rows = {name: [] for name in METADATA_FILES}
        for label in range(spec.classes):
            for index in range(count):
                rng = np.random.default_rng(_split_seed(spec.seed, split, label, index))
                image, box, part_box = render_sample(rng, label, spec)
                image_id = _image_id(label, split, index)
                ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], encode)
                if not ok:
                    raise RuntimeError(f"JPEG encoding failed for {image_id}")
                _write_atomic(image_dir / image_id, jpeg.tobytes())
                rows["image_ids"].append(image_id)
                rows["class_labels"].append(f"{image_id},{label}")
                rows["image_sizes"].append(f"{image_id},{image.shape[1]},{image.shape[0]}")
                rows["localization"].append(f"{image_id}," + ",".join(str(int(v)) for v in box))
                rows["part_localization"].append(f"{image_id}," + ",".join(str(int(v)) for v in part_box))
        split_dir = root / "metadata" / DATASET_NAME / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for name, lines in rows.items():
            _write_atomic(split_dir / f"{name}.txt", ("\n".join(lines) + "\n").encode())
    names = "".join(f"{label},{class_name(label, spec.task)}\n" for label in range(spec.classes))
    _write_atomic(root / "metadata" / DATASET_NAME / CLASS_NAMES, names.encode())
    _write_atomic(root / MANIFEST, (json.dumps({"dataset": DATASET_NAME, **asdict(spec)}, indent=2) + "\n").encode())


def _remove_set(root: Path, spec: SyntheticSpec) -> None:
    """Delete the files of the set ``spec`` under ``root`` (manifest first, so a cut-short
    removal never leaves a manifest vouching for a partial set) and the folders this empties;
    any other file stays."""
    files = _set_files(spec)
    for relative in [files[-1], *files[:-1]]:
        (root / relative).unlink(missing_ok=True)
    for folder in sorted({p for f in files for p in f.parents if p != Path(".")}, key=lambda p: -len(p.parts)):
        try:
            (root / folder).rmdir()
        except OSError:  # not empty (a file of the user's) or already gone
            pass


def _move_set_in(tmp: Path, root: Path, spec: SyntheticSpec) -> None:
    """Move a set written under ``tmp`` into ``root`` file by file, the manifest last."""
    for relative in _set_files(spec):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / relative, root / relative)


def make_synthetic_dataset(
    out: str | os.PathLike,
    classes: int = 10,
    train_per_class: int = 80,
    test_per_class: int = 20,
    seed: int = 0,
    *,
    val_per_class: int | None = None,
    min_size: int = 160,
    max_size: int = 256,
    max_distractors: int = 4,
    task: str = "parts",
    body_cue: float = 0.0,
    body_groups: int = 0,
    overwrite: bool = False,
) -> SyntheticPaths:
    """Write the synthetic dataset under ``out`` (see the module docstring for the layout).

    ``val_per_class`` defaults to ``test_per_class``. ``task``: ``"parts"`` (the WSOL set),
    ``"bodies"`` or ``"objects"`` (pretraining stand-ins; ``render``'s module docstring).

    ``out`` may be missing or empty; a folder that already holds the set of these parameters
    (``synthetic.json``, written last, so its presence means complete) is reused as it is
    (``reused=True``). Any other non-empty folder is refused, unless it holds an earlier
    synthetic set and ``overwrite``: then that set's files (and only those) are replaced. The
    set is generated in a temporary sibling folder first, so a generation cut short leaves
    ``out`` as it was.
    """
    spec = SyntheticSpec(
        classes,
        train_per_class,
        val_per_class,
        test_per_class,
        seed,
        min_size,
        max_size,
        max_distractors,
        task,
        body_cue,
        body_groups,
    )
    if not 0.0 <= body_cue <= 1.0:
        raise ValueError(f"body_cue must lie in [0, 1], got {body_cue}")
    if not 0 <= body_groups <= classes:
        raise ValueError(f"body_groups must lie in [0, classes = {classes}], got {body_groups}")
    if body_cue > 0 and body_groups > 0:
        raise ValueError("give body_cue or body_groups, not both: each tints the body its own way")
    if (body_cue > 0 or body_groups > 0) and task != "parts":
        raise ValueError(f"body_cue and body_groups tint the WSOL set's bodies (task 'parts'), not task {task!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not 1 <= spec.classes <= MAX_CLASSES_OF_TASK[task]:
        raise ValueError(f"classes must be in [1, {MAX_CLASSES_OF_TASK[task]}] for task {task!r}, got {spec.classes}")
    for name in ("train_per_class", "val_per_class", "test_per_class"):
        if getattr(spec, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(spec, name)}")
    if not 64 <= spec.min_size <= spec.max_size:
        raise ValueError(f"need 64 <= min_size <= max_size, got {spec.min_size}, {spec.max_size}")

    root = Path(out)
    paths = SyntheticPaths(root, root / "data", root / "metadata")
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder: give a new or empty folder for the dataset")
    recorded = _recorded_spec(root) if root.is_dir() else None
    if recorded == spec and not overwrite:
        return replace(paths, reused=True)
    if root.is_dir() and any(root.iterdir()):
        if recorded is None:
            entries = sorted(p.name for p in root.iterdir())
            raise ValueError(
                f"{root} is not empty ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}) "
                f"and holds no synthetic set ({MANIFEST}): give a new or empty folder"
            )
        if not overwrite:
            raise ValueError(
                f"{root} holds a synthetic set of other parameters ({_spec_changes(recorded, spec)}); "
                f"pass --overwrite to replace it, or give another folder"
            )

    root = root.resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{os.getpid()}.tmp"  # same file system: renames, no copies
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed generation with this process id
    tmp.mkdir()
    try:
        _write_set(tmp, spec)
        if recorded is not None:
            _remove_set(root, recorded)
        if root.exists():  # an empty folder, or files of the user's beside the old set: they stay
            _move_set_in(tmp, root, spec)
        else:
            os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only what this call wrote
    return paths


# The name reproduce and older code use: make_synthetic_dataset itself reuses an identical set.
ensure_synthetic_dataset = make_synthetic_dataset
