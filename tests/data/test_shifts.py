"""Acquisition shifts: deterministic, shape-preserving, the mask moved with the image, each doing what its name says
(checked on a real ISIC sample image)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lightseg_edge.data.io import read_image, read_mask
from lightseg_edge.data.shifts import SHIFTS, get_shift
from lightseg_edge.errors import InvalidInputError

GEOMETRIC = {"zoom-out", "zoom-in", "round-field"}


@pytest.fixture(scope="module")
def pair(sample_dir):
    image = cv2.resize(read_image(sample_dir / "images" / "ISIC_0000000.jpg"), (256, 256), interpolation=cv2.INTER_LINEAR)
    mask = read_mask(sample_dir / "masks" / "ISIC_0000000_segmentation.png")
    return image, cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_shift_keeps_shapes_and_is_deterministic(pair, name):
    image, mask = pair
    a, b = SHIFTS[name](image, mask), SHIFTS[name](image, mask)
    assert a[0].shape == image.shape and a[0].dtype == np.uint8 and a[0].flags.c_contiguous
    assert a[1].shape == mask.shape and set(np.unique(a[1])) <= set(np.unique(mask))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert (name == "none") == np.array_equal(a[0], image)
    if name not in GEOMETRIC:
        assert np.array_equal(a[1], mask)  # a photometric shift leaves the lesion where it was


def _mean(image):
    return image.astype(np.float64).mean(axis=(0, 1))


def test_photometric_shifts_go_the_way_they_say(pair):
    image, mask = pair
    shifted = {n: SHIFTS[n](image, mask)[0] for n in SHIFTS if n not in GEOMETRIC}
    assert _mean(shifted["dark"]).sum() < _mean(image).sum() < _mean(shifted["bright"]).sum()
    red_blue = {n: _mean(im)[0] / _mean(im)[2] for n, im in shifted.items()}
    assert red_blue["cool"] < red_blue["none"] < red_blue["warm"]
    assert shifted["low-contrast"].std() < image.std()
    spread = {n: np.ptp(im.astype(np.int16), axis=2).mean() for n, im in shifted.items()}
    assert spread["grey"] < 0.6 * spread["none"]
    sharp = {n: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for n, im in shifted.items()}
    assert sharp["blur"] < 0.3 * sharp["none"] and sharp["low-res"] < 0.3 * sharp["none"]
    assert 0 < np.abs(shifted["jpeg"].astype(np.int16) - image).mean() < 10


def test_zoom_scales_a_centred_lesion():
    image = np.full((256, 256, 3), 200, np.uint8)
    mask = np.zeros((256, 256), np.uint8)
    mask[96:160, 96:160] = 1
    image[mask > 0] = 60
    for name, zoom in (("zoom-out", 0.6), ("zoom-in", 1.5)):
        im, m = SHIFTS[name](image, mask)
        assert m.sum() / mask.sum() == pytest.approx(zoom ** 2, rel=0.05)
        assert np.array_equal(im[..., 0] < 130, m > 0)  # the image moved with the mask


def test_round_field_blacks_out_the_corners_and_the_mask_there(pair):
    image, mask = pair
    im, m = SHIFTS["round-field"](np.ascontiguousarray(image), np.ones_like(mask))
    assert not im[0, 0].any() and not im[-1, -1].any() and m[0, 0] == 0 and m[-1, 0] == 0
    assert np.array_equal(im[128, 128], image[128, 128]) and m[128, 128] == 1 and m[128, 2] == 1
    assert 0.75 < m.mean() < 0.82  # a circle through the mid-sides keeps pi/4 of the square


def test_unknown_shift_names_the_known_ones():
    with pytest.raises(InvalidInputError, match="shift 'fog': expected one of none, dark"):
        get_shift("fog")


def test_dataset_with_shift_leaves_the_original_alone(sample_dir):
    from lightseg_edge.data.dataset import SegmentationDataset
    from lightseg_edge.data.layouts import list_samples
    from lightseg_edge.models import get_model_config

    ds = SegmentationDataset(list_samples(sample_dir, "train")[:2], get_model_config("ucmnet").preprocess)
    before = ds.images.copy()
    dark = ds.with_shift(get_shift("dark"))
    assert np.array_equal(ds.images, before) and dark.images.mean() < ds.images.mean()
    assert np.array_equal(dark.masks, ds.masks) and len(dark) == len(ds)
    assert ds.with_shift(get_shift("none")) is ds
