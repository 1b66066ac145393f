"""A synthetic WSOL dataset that carries the paper's phenomenon, written in the wsolevaluation
layout (docs/protocol.md) so every loader and the evaluator read it like CUB.

Each image holds one object on a cluttered background with a few distractor shapes:

* a **large body** (a rotated ellipse with a striped texture in two fixed colours) that is the
  same for every class, so it carries no class information, or (``body_groups``) tinted by the
  class's group, so it tells the group but not the class;
* a **small class-specific part** (a shape × colour pair, e.g. a red triangle) attached at one
  end of the body's major axis, like a bird's head.

A classifier needs only the part to be right, so a vanilla CAM fires on the part and misses the
body; the ground-truth box covers the whole object (body ∪ part). Objects vary in scale, aspect
ratio, rotation, position and which end carries the part; images vary in size.

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
from fastwsol.io import write_bytes_atomic

DATASET_NAME = "SYNTHETIC"
SPLITS = ("train", "val", "test")

# RGB. The body's two stripe colours are shared by all classes; parts use saturated colours that
# the body and the muted background never use. High-contrast stripes (orange on dark brown): with
# the earlier muted brown ones (196,140,80)/(120,82,46) the pretrained backbone's norm map F̂ did
# not cover the bodies of the classes with yellow or green parts (test GT-known of F̂ at the
# fine-tuning's start 22-80 in those, 92-100 in the others); with these it covers 96-100 in every
# class (docs/experiments.md §1).
BODY_COLOURS = ((235, 150, 40), (60, 35, 20))
# What the drawing code draws, recorded in a set's manifest so that a set drawn by older code is
# told apart from a new one of the same parameters: 2 = the stripes above; a manifest without
# the field is 1 (the muted brown stripes).
GENERATOR_VERSION = 2
PART_COLOURS = ((225, 30, 30), (30, 70, 230), (20, 185, 60), (215, 40, 215), (240, 225, 20))
PART_COLOUR_NAMES = ("red", "blue", "green", "magenta", "yellow")
PART_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
# len(PART_SHAPES) and len(PART_COLOURS) are coprime, so class c ↦ (c mod 8, c mod 5) is a
# bijection onto all 40 pairs (Chinese remainder theorem) and neighbouring classes differ in both.
MAX_CLASSES = len(PART_SHAPES) * len(PART_COLOURS)
# The pretraining task's body classes: pattern × colour pair (3 and 7 are coprime: 21 classes).
BODY_PATTERNS = ("stripes", "checks", "spots")
BODY_PALETTE = (
    ((150, 170, 200), (70, 90, 130)), ((200, 190, 120), (110, 100, 50)), ((170, 200, 160), (70, 110, 70)),
    ((210, 160, 170), (120, 60, 80)), ((180, 180, 180), (80, 80, 80)), ((160, 200, 210), (50, 110, 120)),
    ((200, 170, 130), (90, 70, 110)),
)
# The "objects" pretraining task: class = (body class, part); its parts are the part vocabulary's
# classes 10..19, disjoint from the WSOL set's default 10 classes (same shapes and colours, other
# pairs), so neither the body nor the part alone gives the class.
OBJECT_PART_OFFSET, OBJECT_PARTS = 10, 10
TASKS = ("parts", "bodies", "objects")
MAX_CLASSES_OF_TASK = {"parts": MAX_CLASSES, "bodies": len(BODY_PATTERNS) * len(BODY_PALETTE),
                       "objects": len(BODY_PATTERNS) * len(BODY_PALETTE) * OBJECT_PARTS}
JPEG_QUALITY = 90


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


def part_of_class(label: int) -> tuple[str, tuple[int, int, int]]:
    """The (shape, RGB colour) of class ``label``'s discriminative part."""
    return PART_SHAPES[label % len(PART_SHAPES)], PART_COLOURS[label % len(PART_COLOURS)]


def body_of_class(label: int) -> tuple[str, tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The (pattern, two RGB colours) of body class ``label`` in the ``"bodies"`` task."""
    return BODY_PATTERNS[label % len(BODY_PATTERNS)], BODY_PALETTE[label % len(BODY_PALETTE)]


def class_name(label: int, task: str = "parts") -> str:
    """What class ``label`` of ``task`` looks like, e.g. "red triangle" (written to the
    metadata's class_names.txt, shown in pictures and by ``localize``)."""
    if task == "bodies":
        pattern, _ = body_of_class(label)
        return f"{pattern} body {label % len(BODY_PALETTE)}"
    if task == "objects":
        body, part = divmod(label, OBJECT_PARTS)
        return f"{class_name(body, 'bodies')} + {class_name(OBJECT_PART_OFFSET + part)}"
    return f"{PART_COLOUR_NAMES[label % len(PART_COLOURS)]} {PART_SHAPES[label % len(PART_SHAPES)]}"


def body_tint(label: int) -> np.ndarray:
    """A small RGB offset of the body's colours for class ``label`` (about 22 grey levels, in
    a direction on the colour wheel of its own): the body's weak class cue."""
    angle = 2 * np.pi * ((label * 0.381966) % 1.0)  # golden-ratio spacing: neighbours far apart
    axes = np.array([[1.0, -0.5, -0.5], [0.0, 0.866, -0.866]], np.float32)  # an RGB plane ⟂ grey
    return (22.0 * (np.cos(angle) * axes[0] + np.sin(angle) * axes[1])).astype(np.float32)


def _polygon(shape: str, centre: np.ndarray, radius: float, angle: float) -> list[np.ndarray]:
    """Vertices (int32, k×2) of a part shape; 'cross' is two bars."""
    def ring_points(k: int, r: np.ndarray | float, offset: float = 0.0) -> np.ndarray:
        t = angle + offset + 2 * np.pi * np.arange(k) / k
        r = np.broadcast_to(np.asarray(r, dtype=np.float64), t.shape)
        return np.round(centre + np.stack([r * np.cos(t), r * np.sin(t)], axis=1)).astype(np.int32)

    if shape == "square":
        return [ring_points(4, radius * 0.95, np.pi / 4)]
    if shape == "triangle":
        return [ring_points(3, radius * 1.1, -np.pi / 2)]
    if shape == "diamond":
        return [ring_points(4, np.array([radius * 1.1, radius * 0.7, radius * 1.1, radius * 0.7]))]
    if shape == "star":
        return [ring_points(10, np.tile([radius * 1.15, radius * 0.5], 5), -np.pi / 2)]
    if shape == "hexagon":
        return [ring_points(6, radius)]
    if shape == "cross":
        c, s = np.cos(angle), np.sin(angle)
        bars = []
        for (hx, hy) in ((radius, radius * 0.35), (radius * 0.35, radius)):
            corners = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
            rotated = corners @ np.array([[c, s], [-s, c]])
            bars.append(np.round(centre + rotated).astype(np.int32))
        return bars
    raise ValueError(f"not a polygon shape: {shape!r}")


def _draw_part(canvas: np.ndarray, mask: np.ndarray, shape: str, colour, centre, radius, angle) -> None:
    centre_i = tuple(int(round(v)) for v in centre)
    if shape == "circle":
        cv2.circle(canvas, centre_i, int(round(radius)), colour, -1, cv2.LINE_AA)
        cv2.circle(mask, centre_i, int(round(radius)), 255, -1)
    elif shape == "ring":
        thickness = max(2, int(round(radius * 0.45)))
        r = int(round(radius - thickness / 2))
        cv2.circle(canvas, centre_i, r, colour, thickness, cv2.LINE_AA)
        cv2.circle(mask, centre_i, r, 255, thickness)
    else:
        polys = _polygon(shape, np.asarray(centre, dtype=np.float64), radius, angle)
        cv2.fillPoly(canvas, polys, colour, cv2.LINE_AA)
        cv2.fillPoly(mask, polys, 255)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Muted low-frequency colour field + noise + clutter strokes (RGB uint8)."""
    grey = rng.uniform(80, 170, size=(3, 4, 1))
    coarse = np.clip(grey + rng.uniform(-30, 30, size=(3, 4, 3)), 0, 255).astype(np.float32)
    canvas = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas += rng.normal(0, 8, size=canvas.shape).astype(np.float32)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(8, 20))):
        colour = tuple(int(v) for v in np.clip(rng.uniform(60, 190) + rng.uniform(-25, 25, 3), 0, 255))
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        kind = rng.integers(0, 3)
        if kind == 0:
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(canvas, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            radius = int(rng.integers(3, max(4, width // 8)))
            cv2.circle(canvas, p0, radius, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            p1 = (
                p0[0] + int(rng.integers(-width // 6, width // 6)),
                p0[1] + int(rng.integers(-height // 6, height // 6)),
            )
            cv2.rectangle(canvas, p0, p1, colour, int(rng.integers(1, 3)))
    return canvas


def _draw_distractors(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Filled shapes in muted colours, sized like parts or bigger, away from nothing in particular."""
    height, width = canvas.shape[:2]
    for _ in range(count):
        colour = tuple(int(v) for v in np.clip(rng.uniform(50, 200) + rng.uniform(-40, 40, 3), 0, 255))
        centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        radius = rng.uniform(0.05, 0.12) * min(width, height)
        shape = ("circle", "square", "hexagon", "triangle")[int(rng.integers(0, 4))]
        _draw_part(canvas, np.zeros(canvas.shape[:2], np.uint8), shape, colour, centre, radius, rng.uniform(0, np.pi))


def _body_texture(
    rng: np.random.Generator, width: int, height: int, pattern: str = "stripes", colours=BODY_COLOURS
) -> np.ndarray:
    """A two-colour pattern at a random angle/period (RGB float32); the WSOL set's bodies are
    all stripes in ``BODY_COLOURS``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(7, 12)
    phase = rng.uniform(0, 2 * np.pi)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period) + phase
    if pattern == "stripes":
        mix = 0.5 + 0.5 * np.sin(u)
    else:
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) * (2 * np.pi / period)
        if pattern == "checks":
            mix = 0.5 + 0.5 * np.tanh(3 * np.sin(u) * np.sin(v))
        else:  # spots
            mix = np.clip(2.5 * (np.cos(u) * np.cos(v)) - 1.0, 0, 1)
    light, dark = (np.asarray(c, np.float32) for c in colours)
    texture = dark + mix[..., None] * (light - dark)
    return texture * rng.uniform(0.9, 1.1)  # per-image brightness jitter


def render_sample(
    rng: np.random.Generator, label: int, spec: SyntheticSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image of class ``label``.

    Returns (RGB uint8 H×W×3, object box, part box); boxes are inclusive (x0, y0, x1, y1) in
    pixels, tight around the drawn object (body ∪ part) and part masks.
    """
    width, height = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, size=2))
    canvas = _background(rng, width, height)
    _draw_distractors(rng, canvas, int(rng.integers(0, spec.max_distractors + 1)))

    short = min(width, height)
    aspect = float(np.exp(rng.uniform(np.log(1.4), np.log(2.6))))  # major/minor axis ratio
    semi_major = rng.uniform(0.24, 0.38) * short * np.sqrt(aspect) / 1.4
    semi_minor = semi_major / aspect
    part_radius = rng.uniform(0.16, 0.22) * semi_major
    reach = semi_major * 0.9 + part_radius * 1.2  # centre → far edge of the part
    scale = min(1.0, 0.48 * short / reach)  # keep the whole object inside the image
    semi_major, semi_minor, part_radius, reach = (v * scale for v in (semi_major, semi_minor, part_radius, reach))
    angle = rng.uniform(-np.pi / 4, np.pi / 4) + (np.pi if rng.random() < 0.5 else 0.0)  # part end left/right
    centre = np.array([rng.uniform(reach + 1, width - reach - 1), rng.uniform(reach + 1, height - reach - 1)])

    body_mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(
        body_mask,
        (int(round(centre[0])), int(round(centre[1]))),
        (int(round(semi_major)), max(2, int(round(semi_minor)))),
        float(np.degrees(angle)),
        0,
        360,
        255,
        -1,
    )
    if spec.task == "bodies":
        pattern, colours = body_of_class(label)
        texture = _body_texture(rng, width, height, pattern, colours)
        shape, colour = part_of_class(int(rng.integers(0, MAX_CLASSES)))  # a part of no class
    elif spec.task == "objects":
        body, part = divmod(label, OBJECT_PARTS)
        pattern, colours = body_of_class(body)
        texture = _body_texture(rng, width, height, pattern, colours)
        shape, colour = part_of_class(OBJECT_PART_OFFSET + part)
    else:
        texture = _body_texture(rng, width, height)
        if spec.body_cue > 0:
            tint_class = label if rng.random() < spec.body_cue else int(rng.integers(0, spec.classes))
            texture = texture + body_tint(tint_class)
        if spec.body_groups > 0:
            texture = texture + body_tint(label % spec.body_groups)
        shape, colour = part_of_class(label)
    inside = body_mask > 0
    canvas[inside] = np.clip(texture[inside], 0, 255).astype(np.uint8)

    direction = np.array([np.cos(angle), np.sin(angle)])
    part_centre = centre + direction * semi_major * 0.9
    part_mask = np.zeros_like(body_mask)
    _draw_part(canvas, part_mask, shape, colour, part_centre, part_radius, rng.uniform(0, np.pi))

    return canvas, _mask_box(body_mask | part_mask), _mask_box(part_mask)


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.int64)


def _write_atomic(path: Path, data: bytes) -> None:
    # no fsync: one per JPEG would slow generation, and a generation cut short is run again
    write_bytes_atomic(path, data, durable=False)


def _split_seed(seed: int, split: str, label: int, index: int) -> list[int]:
    return [seed, SPLITS.index(split), label, index]


MANIFEST = "synthetic.json"
METADATA_FILES = ("image_ids", "class_labels", "image_sizes", "localization", "part_localization")


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
    ``"bodies"`` or ``"objects"`` (pretraining stand-ins; module docstring).

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
