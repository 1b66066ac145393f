"""Pictures: a score map as a heat overlay with GT (green) and predicted (red) boxes, titled
tiles, a legend, and contact sheets of such pictures. All images here are RGB uint8 H×W×3, each
at its own size (pictures keep the original image's aspect ratio)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from fastwsol.io import write_bytes_atomic

GT_COLOUR = (40, 220, 40)
PREDICTED_COLOUR = (235, 40, 40)
_STRIP = (24, 24, 24)
_TEXT = (240, 240, 240)


def heat_overlay(image: np.ndarray, scoremap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the JET-coloured ``scoremap`` (values in [0, 1], any size) over ``image``."""
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(scoremap, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((np.clip(resized, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes, colour, thickness: int | None = None) -> np.ndarray:
    """Inclusive x0,y0,x1,y1 boxes in ``image``'s pixel coordinates (line width grows with the image)."""
    image = np.ascontiguousarray(image).copy()
    thickness = thickness or max(2, round(max(image.shape[:2]) / 200))
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4):
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness)
    return image


def localization_picture(image: np.ndarray, scoremap: np.ndarray, gt_boxes=None, predicted_box=None) -> np.ndarray:
    picture = heat_overlay(image, scoremap)
    if gt_boxes is not None and len(gt_boxes):
        picture = draw_boxes(picture, gt_boxes, GT_COLOUR)
    if predicted_box is not None:
        picture = draw_boxes(picture, [predicted_box], PREDICTED_COLOUR)
    return picture


def enlarge(picture: np.ndarray, min_width: int = 320) -> np.ndarray:
    """A small picture scaled up (whole factors, nearest neighbour) to at least ``min_width``
    wide, so a title and legend fit beside it; larger pictures are returned as they are."""
    factor = -(-min_width // picture.shape[1])
    if factor <= 1:
        return picture
    return cv2.resize(picture, (picture.shape[1] * factor, picture.shape[0] * factor), interpolation=cv2.INTER_NEAREST)


def _font_scale(width: int) -> float:
    return float(np.clip(width / 600, 0.38, 0.9))


def label(image: np.ndarray, text: str) -> np.ndarray:
    """``text`` (lines split at newlines, each cut to the image's width) on a dark strip above the image."""
    width = image.shape[1]
    scale = _font_scale(width)
    line_height = int(round(30 * scale)) + 4
    lines = text.split("\n")
    strip = np.full((line_height * len(lines) + 2, width, 3), _STRIP, np.uint8)
    for i, line in enumerate(lines):
        fitted = line
        while fitted and cv2.getTextSize(fitted + ("..." if fitted != line else ""), cv2.FONT_HERSHEY_SIMPLEX, scale,
                                         1)[0][0] > width - 6:
            fitted = fitted[:-1]
        text_line = fitted + ("..." if fitted != line else "")  # Hershey fonts are ASCII only
        cv2.putText(strip, text_line, (3, line_height * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    _TEXT, 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def legend(width: int, predicted: str = "predicted box", gt: str | None = "ground-truth box") -> np.ndarray:
    """A strip naming the colours: the GT box (green), the predicted box (red), and the heat map's
    scale (blue = low, red = high score); entries wrap onto more lines when ``width`` is small."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    line_height, ramp_width = 20, 50
    entries = ([("box", GT_COLOUR, gt)] if gt else []) + [
        ("box", PREDICTED_COLOUR, predicted),
        ("ramp", None, "map: low"),
    ]
    placed, x, row = [], 6, 0
    for kind, colour, text in entries:
        size = 24 + cv2.getTextSize(text, font, scale, 1)[0][0] + (ramp_width + 40 if kind == "ramp" else 0)
        if x > 6 and x + size > width:
            x, row = 6, row + 1
        placed.append((kind, colour, text, x, row))
        x += size + 14
    strip = np.full(((row + 1) * line_height + 4, width, 3), _STRIP, np.uint8)
    for kind, colour, text, x, row in placed:
        middle = row * line_height + line_height // 2 + 2
        if kind == "box":
            cv2.rectangle(strip, (x, middle - 6), (x + 18, middle + 6), colour, 2)
            cv2.putText(strip, text, (x + 24, middle + 5), font, scale, _TEXT, 1, cv2.LINE_AA)
        else:
            cv2.putText(strip, text, (x, middle + 5), font, scale, _TEXT, 1, cv2.LINE_AA)
            x += cv2.getTextSize(text, font, scale, 1)[0][0] + 6
            ramp = cv2.applyColorMap(
                np.linspace(0, 255, ramp_width).astype(np.uint8)[None].repeat(10, 0), cv2.COLORMAP_JET
            )[..., ::-1]
            strip[middle - 5 : middle + 5, x : x + ramp_width] = ramp[:, : max(0, min(ramp_width, width - x))]
            cv2.putText(strip, "high", (x + ramp_width + 6, middle + 5), font, scale, _TEXT, 1, cv2.LINE_AA)
    return strip


def with_legend(picture: np.ndarray, **names) -> np.ndarray:
    """``picture`` with :func:`legend` below it."""
    return np.vstack([picture, legend(picture.shape[1], **names)])


def contact_sheet(
    pictures: list[np.ndarray],
    columns: int = 8,
    tile: int = 160,
    gap: int = 4,
    titles: list[str] | None = None,
    legend_names: dict | None = None,
) -> np.ndarray:
    """Pictures fitted into ``tile`` × 1.25·``tile`` boxes, each keeping its own aspect ratio, on a
    grid; ``titles`` are written above each at the tile's size (readable whatever the picture's
    size); ``legend_names`` (:func:`legend`'s arguments) put a legend across the top."""
    if not pictures:
        raise ValueError("a contact sheet needs at least one picture")
    tiles = []
    for index, picture in enumerate(pictures):
        height, width = picture.shape[:2]
        scale = min(tile / width, 1.25 * tile / height)
        size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        fitted = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        padded = np.full((fitted.shape[0], tile, 3), 255, np.uint8)
        left = (tile - fitted.shape[1]) // 2
        padded[:, left : left + fitted.shape[1]] = fitted
        tiles.append(label(padded, titles[index]) if titles else padded)
    cols = min(columns, len(tiles))
    width = cols * (tile + gap) + gap
    blocks = [legend(width, **legend_names)] if legend_names is not None else []
    for start in range(0, len(tiles), columns):
        row = tiles[start : start + columns]
        block = np.full((max(t.shape[0] for t in row) + gap, width, 3), 255, np.uint8)
        for c, picture in enumerate(row):
            x = gap + c * (tile + gap)
            block[gap : gap + picture.shape[0], x : x + tile] = picture
        blocks.append(block)
    blocks.append(np.full((gap, width, 3), 255, np.uint8))
    return np.vstack(blocks)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path = Path(path)
    write_bytes_atomic(path, encoded.tobytes())
    return path


# -- a titled grid of pictures that explains itself (reproduce's figure)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_HAT = "\u0302"  # combining circumflex, as in F̂


def text_width(text: str, scale: float, thickness: int = 1) -> int:
    return cv2.getTextSize(text.replace(_HAT, ""), _FONT, scale, thickness)[0][0]


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour=_TEXT, thickness: int = 1):
    """``cv2.putText`` (baseline at ``origin``) that also draws a combining circumflex (F̂) as a
    hat over its letter: Hershey fonts are ASCII only."""
    x, y = origin
    cv2.putText(image, text.replace(_HAT, ""), (x, y), _FONT, scale, colour, thickness, cv2.LINE_AA)
    cap = round(21 * scale) + thickness // 2  # a capital's height in the Hershey simplex font
    before = ""
    for char in text:
        if char != _HAT:
            before += char
            continue
        left, right = x + text_width(before[:-1], scale, thickness), x + text_width(before, scale, thickness)
        base = y - cap - 2
        peak = base - max(3, cap // 3)
        points = [(left + (right - left) // 5, base), ((left + right) // 2, peak), (right - (right - left) // 5, base)]
        cv2.polylines(image, [np.array(points, np.int32)], False, colour, thickness, cv2.LINE_AA)


def text_block(width: int, lines: list[str], scale: float, *, centre: bool = False, colour=_TEXT,
               background=_STRIP) -> np.ndarray:
    """``lines`` on a ``background`` block ``width`` wide, with room above each line for a hat;
    a line too long for the width is an error (a cut title would not explain anything)."""
    line_height = int(round(34 * scale)) + 6
    block = np.full((line_height * len(lines) + 6, width, 3), background, np.uint8)
    for i, line in enumerate(lines):
        size = text_width(line, scale)
        if size > width - 8:
            raise ValueError(f"{line!r} is {size} px wide at scale {scale}: more than the {width - 8} px there")
        x = (width - size) // 2 if centre else 6
        put_text(block, line, (x, line_height * (i + 1)), scale, colour)
    return block


def colour_bar(width: int, scale: float, note: str = "") -> np.ndarray:
    """The heat maps' scale on a strip ``width`` wide: the JET colours from 0 (blue, low) to 1
    (red, high) with ticks, then the ground-truth box's colour and ``note``."""
    bar_left, bar_width, bar_height = 12 + text_width("map value", scale) + 14, 320, 18
    line_height = int(round(34 * scale)) + 6
    strip = np.full(((2 if note else 1) * line_height + bar_height + 10, width, 3), _STRIP, np.uint8)
    top = 8
    put_text(strip, "map value", (12, top + bar_height - 3), scale)
    ramp = cv2.applyColorMap(np.linspace(0, 255, bar_width).astype(np.uint8)[None].repeat(bar_height, 0),
                             cv2.COLORMAP_JET)[..., ::-1]
    strip[top : top + bar_height, bar_left : bar_left + bar_width] = ramp
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = bar_left + round(value * (bar_width - 1))
        cv2.line(strip, (x, top + bar_height), (x, top + bar_height + 5), _TEXT, 1)
        tick = f"{value:g}"
        put_text(strip, tick, (x - text_width(tick, scale) // 2, top + bar_height + line_height - 2), scale)
    after = bar_left + bar_width + 16
    put_text(strip, "blue = low, red = high", (after, top + bar_height - 3), scale)
    box_left = after + text_width("blue = low, red = high", scale) + 30
    cv2.rectangle(strip, (box_left, top + 2), (box_left + 26, top + bar_height - 2), GT_COLOUR, 2)
    put_text(strip, "ground-truth box", (box_left + 34, top + bar_height - 3), scale)
    if note:
        put_text(strip, note, (12, top + bar_height + 2 * line_height - 4), scale)
    return strip


def titled_grid(
    rows: list[list[np.ndarray]],
    *,
    column_titles: list[str],
    row_titles: list[list[str]],
    caption: list[str],
    groups: list[tuple[str, int]] = (),
    footer=None,
    tile: int = 150,
    gap: int = 4,
    scale: float = 0.6,
) -> np.ndarray:
    """A grid of pictures, each fitted to ``tile`` × ``tile`` as :func:`contact_sheet` fits it,
    with a ``caption`` (lines) above, column titles, ``groups`` ((title, columns spanned) above the
    last columns), each row's ``row_titles`` (lines) at its left and ``footer(width)``'s strip below."""
    columns = len(column_titles)
    if any(len(row) != columns for row in rows) or len(row_titles) != len(rows):
        raise ValueError(f"titled_grid: {len(rows)} rows of {[len(r) for r in rows]} pictures for "
                         f"{columns} column titles and {len(row_titles)} row titles")
    left = max(text_width(line, scale) for lines in row_titles for line in lines) + 16
    width = left + columns * (tile + gap) + gap

    def header(cells: list[tuple[str, int]]) -> np.ndarray:
        """Cells (text, columns spanned) right-aligned to the grid, the leftover columns blank."""
        block = np.full((int(round(34 * scale)) + 12, width, 3), 255, np.uint8)
        x = left + gap + (columns - sum(span for _, span in cells)) * (tile + gap)
        for text, span in cells:
            cell_width = span * (tile + gap) - gap
            block[2:, x : x + cell_width] = text_block(cell_width, [text], scale, centre=True)[: block.shape[0] - 2]
            x += cell_width + gap
        return block

    blocks = [text_block(width, caption, scale * 1.15, background=(255, 255, 255), colour=(0, 0, 0))]
    if groups:
        blocks.append(header(list(groups)))
    blocks.append(header([(title, 1) for title in column_titles]))
    for pictures, titles in zip(rows, row_titles):
        block = np.full((tile + gap, width, 3), 255, np.uint8)
        block[gap:, :left] = np.vstack([text_block(left, titles, scale * 0.92),
                                        np.full((tile, left, 3), _STRIP, np.uint8)])[:tile]
        for c, picture in enumerate(pictures):
            height, picture_width = picture.shape[:2]
            fit = min(tile / picture_width, tile / height)
            size = (max(1, int(round(picture_width * fit))), max(1, int(round(height * fit))))
            fitted = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
            x = left + gap + c * (tile + gap) + (tile - size[0]) // 2
            block[gap : gap + size[1], x : x + size[0]] = fitted
        blocks.append(block)
    blocks.append(np.full((gap, width, 3), 255, np.uint8))
    if footer is not None:
        blocks.append(footer(width))
    return np.vstack(blocks)

