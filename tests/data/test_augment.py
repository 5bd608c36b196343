"""The ``dermoscope`` policy: ``robust`` plus a round field of view on some samples, its black corners cleared from the
mask; on a real ISIC sample image."""

from __future__ import annotations

import cv2
import numpy as np

from lightseg_edge.data.augment import Augmentation, augment
from lightseg_edge.data.io import read_image, read_mask


def _pair(sample_dir):
    image = cv2.resize(read_image(sample_dir / "images" / "ISIC_0000000.jpg"), (128, 128), interpolation=cv2.INTER_LINEAR)
    mask = read_mask(sample_dir / "masks" / "ISIC_0000000_segmentation.png")
    return image, cv2.resize(mask, (128, 128), interpolation=cv2.INTER_NEAREST)


def _round_fields(policy, image, mask, n=60):
    """Indices of the draws whose four corners came out black (a field of view cut them) with no lesion left there."""
    found = []
    for i in range(n):
        im, m = augment(image, mask, np.random.default_rng([3, 0, i]), policy)
        corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
        if all(im[y, x].max() <= 20 and m[y, x] == 0 for y, x in corners) and im[64, 64].max() > 40:
            found.append(i)
    return found


def test_dermoscope_adds_round_fields_and_robust_does_not(sample_dir):
    image, mask = _pair(sample_dir)
    fields = _round_fields(Augmentation.DERMOSCOPE, image, mask)
    assert 2 <= len(fields) <= 30  # a quarter of the draws, some with radii too large to reach every corner
    assert _round_fields(Augmentation.ROBUST, image, mask) == []


def test_field_of_view_clears_the_mask_where_the_image_is_black():
    image, full = np.full((128, 128, 3), 200, np.uint8), np.ones((128, 128), np.uint8)  # bright skin, all lesion
    draws = _round_fields(Augmentation.DERMOSCOPE, image, full)
    assert draws
    for i in draws:
        im, m = augment(image, full, np.random.default_rng([3, 0, i]), Augmentation.DERMOSCOPE)
        dark = im.max(axis=2) <= 20
        assert 0.01 < (m == 0).mean() < 0.4  # the corners, not the whole frame
        assert (m[dark] == 0).mean() > 0.9
