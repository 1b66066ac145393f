"""Pictures: a score map as a heat overlay with GT (green) and predicted (red) boxes, and
contact sheets of such pictures. All images here are RGB uint8 H×W×3."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from fastwsol.io import write_bytes_atomic

GT_COLOUR = (40, 220, 40)
PREDICTED_COLOUR = (235, 40, 40)


def heat_overlay(image: np.ndarray, scoremap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the JET-coloured ``scoremap`` (values in [0, 1], any size) over ``image``."""
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(scoremap, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((np.clip(resized, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes, colour, thickness: int = 2) -> np.ndarray:
    """Inclusive x0,y0,x1,y1 boxes in ``image``'s pixel coordinates."""
    image = np.ascontiguousarray(image).copy()
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


def label(image: np.ndarray, text: str) -> np.ndarray:
    """``text`` on a dark strip above the image."""
    strip = np.full((18, image.shape[1], 3), 24, np.uint8)
    cv2.putText(strip, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (240, 240, 240), 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def contact_sheet(pictures: list[np.ndarray], columns: int = 8, tile: int = 160, gap: int = 4) -> np.ndarray:
    """Pictures resized to ``tile`` wide (height kept proportional to the first) on a grid."""
    if not pictures:
        raise ValueError("a contact sheet needs at least one picture")
    tile_h = int(round(pictures[0].shape[0] * tile / pictures[0].shape[1]))
    rows = -(-len(pictures) // columns)
    cols = min(columns, len(pictures))
    sheet = np.full((rows * (tile_h + gap) + gap, cols * (tile + gap) + gap, 3), 255, np.uint8)
    for i, picture in enumerate(pictures):
        r, c = divmod(i, columns)
        y, x = gap + r * (tile_h + gap), gap + c * (tile + gap)
        sheet[y : y + tile_h, x : x + tile] = cv2.resize(picture, (tile, tile_h), interpolation=cv2.INTER_AREA)
    return sheet


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path = Path(path)
    write_bytes_atomic(path, encoded.tobytes())
    return path
