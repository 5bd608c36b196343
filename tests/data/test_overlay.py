"""draw_contours: only pixels near the mask outline change, prediction drawn over ground truth, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lightseg_edge.data.overlay import GT_COLOR, PRED_COLOR, contour_thickness, draw_contours, draw_legend
from lightseg_edge.errors import InvalidInputError


def _disc(h=120, w=160, cy=60, cx=70, r=30):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def near_boundary(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of the mask's outline (morphological gradient, dilated)."""
    k = np.ones((3, 3), np.uint8)
    # Outside the image counts as background: findContours traces a region touching the border along the border.
    edge = cv2.dilate(mask, k) - cv2.erode(mask, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.dilate(edge, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0


def test_only_the_outline_changes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    mask = _disc()
    out = draw_contours(img, mask, thickness=2)
    changed = (out != img).any(axis=2)
    assert changed.sum() > 2 * np.pi * 30 * 0.8  # the whole circumference is drawn
    assert not (changed & ~near_boundary(mask, 2)).any()
    assert (out[changed] == PRED_COLOR).all()
    assert img is not out and not np.shares_memory(img, out)


def test_mask_encodings_and_gt():
    img = np.zeros((120, 160, 3), np.uint8)
    a = draw_contours(img, _disc())
    b = draw_contours(img, _disc() * 255)
    np.testing.assert_array_equal(a, b)
    gt = _disc(cx=100)
    both = draw_contours(img, _disc(), gt_mask=gt, thickness=1)
    colours = {tuple(c) for c in both.reshape(-1, 3)}
    assert {PRED_COLOR, GT_COLOR} <= colours
    # where the outlines cross, the prediction is on top
    overlap = near_boundary(_disc(), 0) & near_boundary(gt, 0)
    assert (both[overlap] == PRED_COLOR).all(axis=1).any()


def test_empty_mask_changes_nothing():
    img = np.full((50, 60, 3), 7, np.uint8)
    np.testing.assert_array_equal(draw_contours(img, np.zeros((50, 60), np.uint8)), img)


def test_thickness_scales_with_resolution():
    assert contour_thickness((192, 192)) == 1 and contour_thickness((3000, 4000)) == 10


def test_errors():
    img = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(InvalidInputError, match=r"pred_mask: shape \(50, 50\) does not match the image's \(50, 60\)"):
        draw_contours(img, np.zeros((50, 50), np.uint8))
    with pytest.raises(InvalidInputError, match="expected HxWx3 uint8 RGB"):
        draw_contours(np.zeros((50, 60), np.uint8), np.zeros((50, 60), np.uint8))
    with pytest.raises(InvalidInputError, match="thickness must be >= 1"):
        draw_contours(img, np.zeros((50, 60), np.uint8), thickness=0)


@pytest.mark.parametrize("shape", [(192, 192), (1500, 2000)])
def test_legend_swatches_and_labels_sit_in_the_top_left_corner(shape):
    img = np.full(shape + (3,), 128, np.uint8)
    out = draw_legend(img, [(PRED_COLOR, "prediction"), (GT_COLOR, "ground truth"), (None, "Dice 0.873")])
    changed = np.argwhere(np.any(out != img, axis=-1))
    assert changed.max(axis=0).tolist() < [shape[0] // 2, shape[1] // 2]  # the rest of the image is untouched
    for color in (PRED_COLOR, GT_COLOR):
        ys, xs = np.nonzero(np.all(out == color, axis=-1))
        assert ys.size == (np.ptp(ys) + 1) * (np.ptp(xs) + 1) >= 100  # one filled square swatch, larger on larger images
    assert np.all(out >= 200, axis=-1).sum() > 50  # white label text (on the dimmed background)
    with pytest.raises(InvalidInputError, match="legend colour"):
        draw_legend(img, [((300, 0, 0), "x")])
