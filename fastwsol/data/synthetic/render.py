"""The synthetic WSOL pictures: what one image of a class looks like.

Each image holds one object on a cluttered background with a few distractor shapes:

* a **large body** (a rotated ellipse with a striped texture in two fixed colours) that is the
  same for every class, so it carries no class information, or (``body_groups``) tinted by the
  class's group, so it tells the group but not the class;
* a **small class-specific part** (a shape × colour pair, e.g. a red triangle) attached at one
  end of the body's major axis, like a bird's head.

A classifier needs only the part to be right, so a vanilla CAM fires on the part and misses the
body; the ground-truth box covers the whole object (body ∪ part). Objects vary in scale, aspect
ratio, rotation, position and which end carries the part; images vary in size.

``task`` says what a class is: ``"parts"``, the WSOL set above (class = the part);
``"bodies"``, its pretraining stand-in (class = the body's pattern and colours, any part on it);
``"objects"``, a pretraining stand-in needing both (class = body class × part).

``render_sample`` draws one image from the RNG it is given; ``storage`` writes sets of them.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

# RGB. The body's two stripe colours are shared by all classes; parts use saturated colours that
# the body and the muted background never use. High-contrast stripes (orange on dark brown): with
# the earlier muted brown ones (196,140,80)/(120,82,46) the pretrained backbone's norm map F̂ did
# not cover the bodies of the classes with yellow or green parts (test GT-known of F̂ at the
# fine-tuning's start 22-80 in those, 92-100 in the others); with these it covers 96-100 in every
# class (docs/experiments.md#which-synthetic-set-shows-the-papers-phenomenon).
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


class PictureParameters(Protocol):
    """The generation parameters ``render_sample`` reads (``storage.SyntheticSpec`` has them)."""

    classes: int
    min_size: int
    max_size: int
    max_distractors: int
    task: str
    body_cue: float
    body_groups: int


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
    rng: np.random.Generator, label: int, spec: PictureParameters
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
