"""Lesion contours drawn on the image: what lightseg-predict, lightseg-eval and the firmware example show.

numpy + OpenCV only (no torch), Python 3.8 compatible, so it can run on the device next to the runtime layer.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidInputError
from .transforms import check_image

PRED_COLOR: Tuple[int, int, int] = (255, 40, 40)  # RGB: prediction in red
GT_COLOR: Tuple[int, int, int] = (40, 255, 40)  # RGB: ground truth in green
LEGEND_TEXT: Tuple[int, int, int] = (255, 255, 255)
LEGEND_DIM = 0.35  # the image under the legend keeps this much of its brightness: white text reads on any skin


def contour_thickness(shape: Tuple[int, ...]) -> int:
    """Line width that stays visible from thumbnails to full-resolution dermoscopy (1 px per ~300 px of short side)."""
    return max(1, round(min(shape[0], shape[1]) / 300))


def _check_mask(mask: np.ndarray, image: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != image.shape[:2]:
        raise InvalidInputError(f"{what}: shape {m.shape} does not match the image's {image.shape[:2]}; expected an HxW mask at the image resolution")
    if not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
        raise InvalidInputError(f"{what}: dtype {m.dtype} is not numeric; expected an HxW mask of 0/1, 0/255 or booleans")
    return (m > 0).astype(np.uint8)


def _check_thickness(thickness: object) -> int:
    if isinstance(thickness, bool) or not isinstance(thickness, (int, np.integer)) or thickness < 1:
        raise InvalidInputError(f"thickness must be >= 1, a whole number of pixels; got {thickness!r}")
    return int(thickness)


def _check_color(color: object, what: str) -> Tuple[int, int, int]:
    values = tuple(color) if isinstance(color, (tuple, list, np.ndarray)) else ()
    if len(values) != 3 or not all(isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in values):
        raise InvalidInputError(f"{what}: expected an RGB triple of integers 0-255 such as (255, 40, 40), got {color!r}")
    return tuple(int(c) for c in values)  # type: ignore[return-value]


def draw_contours(image: np.ndarray, pred_mask: np.ndarray, gt_mask: Optional[np.ndarray] = None,
                  thickness: Optional[int] = None, pred_color: Tuple[int, int, int] = PRED_COLOR,
                  gt_color: Tuple[int, int, int] = GT_COLOR) -> np.ndarray:
    """A copy of the HxWx3 uint8 RGB ``image`` with the outline of ``pred_mask`` (and of ``gt_mask``, when given).

    Masks are HxW at the image's resolution; any value > 0 counts as lesion (0/1 and 0/255 both work). Only pixels
    within ``thickness`` of a mask boundary change. The ground truth is drawn first, so where the outlines coincide
    the prediction is the one visible.
    """
    import cv2

    check_image(image)
    t = contour_thickness(image.shape) if thickness is None else _check_thickness(thickness)
    layers = [(gt_mask, gt_color, "gt")] if gt_mask is not None else []
    layers.append((pred_mask, pred_color, "pred"))
    checked = [(_check_mask(mask, image, f"{what}_mask"), _check_color(color, f"{what}_color")) for mask, color, what in layers]
    out = np.ascontiguousarray(image).copy()
    for m, color in checked:
        contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color, t)
    return out


def legend_font_scale(shape: Tuple[int, ...]) -> float:
    """OpenCV font scale for a legend that reads the same on a 192 px thumbnail and a 6000 px dermoscopy image."""
    return max(0.35, min(shape[0], shape[1]) / 700)


def draw_legend(image: np.ndarray, entries: Sequence[Tuple[Optional[Tuple[int, int, int]], str]]) -> np.ndarray:
    """A copy of the HxWx3 uint8 RGB ``image`` with a legend in its top-left corner: one row per (colour, label) entry,
    a filled swatch of the colour (none for ``None``, e.g. a score) and the label in white on a dimmed background.

    Labels are ASCII (OpenCV's Hershey fonts). A legend larger than the image is cut at its edges."""
    import cv2

    check_image(image)
    rows = [(None if color is None else _check_color(color, "legend colour"), str(text)) for color, text in entries]
    scale = legend_font_scale(image.shape)
    weight = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(text, font, scale, weight) for _, text in rows]
    line = max(h + base for (_, h), base in sizes)
    pad = max(2, line // 3)
    width = 3 * pad + line + max(w for (w, _), _ in sizes)
    height = pad + len(rows) * (line + pad)
    out = np.ascontiguousarray(image).copy()
    under = out[pad:pad + height, pad:pad + width]
    under[:] = (under * LEGEND_DIM).astype(np.uint8)
    for i, ((color, text), ((_, text_h), _)) in enumerate(zip(rows, sizes)):
        x, y = 2 * pad, 2 * pad + i * (line + pad)
        if color is not None:
            cv2.rectangle(out, (x, y), (x + line - 1, y + line - 1), color, -1)
        cv2.putText(out, text, (x + line + pad, y + text_h), font, scale, LEGEND_TEXT, weight, cv2.LINE_AA)
    return out
