"""The demo's analysis (numpy + OpenCV only): timed segmentation equals predict(), area, overlay, Dice. No browser."""

from __future__ import annotations

import numpy as np
import pytest

from lightseg_edge.data.io import read_image
from lightseg_edge.data.overlay import PRED_COLOR
from lightseg_edge.demo import analysis as A
from lightseg_edge.errors import InvalidInputError
from lightseg_edge.runtimes.base import BasePredictor
from lightseg_edge.types import InputSpec, PreprocessConfig


class SlopePredictor(BasePredictor):
    """A backend whose logits are a horizontal ramp through 0: masks cover the right half, with a real boundary."""

    def __init__(self, batch=None) -> None:
        super().__init__(InputSpec("input", (batch, 3, 32, 48)), PreprocessConfig(size=(32, 48), mode="scale"), source="slope")
        self.calls = []

    def _infer(self, batch):
        self.calls.append(batch.shape)
        ramp = np.linspace(-4, 4, 48, dtype=np.float32)[None, None, None, :]
        return np.broadcast_to(ramp + batch.mean(axis=(1, 2, 3), keepdims=True) - 0.5, (batch.shape[0], 1, 32, 48)).copy()


@pytest.fixture(scope="module")
def image(sample_dir):
    return read_image(sample_dir / "images" / "ISIC_0000003.jpg")


@pytest.mark.parametrize("threshold", [None, 0.3, 0.9])
def test_timed_segment_is_predict_bit_for_bit(image, threshold):
    p = SlopePredictor()
    seg = A.timed_segment(p, image, threshold)
    np.testing.assert_array_equal(seg.mask, p.predict(image, threshold))
    np.testing.assert_array_equal(seg.proba, p.predict_proba(image))
    assert seg.mask.dtype == np.uint8 and seg.proba.dtype == np.float32
    assert seg.threshold == (0.5 if threshold is None else threshold)
    lat = seg.latency
    assert min(lat.preprocess_ms, lat.inference_ms, lat.postprocess_ms, lat.probability_ms) >= 0
    assert lat.total_ms == pytest.approx(lat.preprocess_ms + lat.inference_ms + lat.postprocess_ms)
    assert set(lat.to_dict()) == {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms", "probability_map_ms"}


def test_timed_segment_pads_a_fixed_batch_like_predict(image):
    p = SlopePredictor(batch=4)
    seg = A.timed_segment(p, image)
    assert p.calls == [(4, 3, 32, 48)]
    np.testing.assert_array_equal(seg.mask, p.predict(image))


def test_timed_segment_real_model(image):
    torch = pytest.importorskip("torch")
    from lightseg_edge.runtimes import load_predictor

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with load_predictor("ucmnet", device="cpu") as p:
            seg = A.timed_segment(p, image)
            np.testing.assert_array_equal(seg.mask, p.predict(image))
            np.testing.assert_array_equal(seg.proba, p.predict_proba(image))
    finally:
        torch.set_num_threads(before)
    assert 0 < seg.mask.sum() < seg.mask.size


def test_timed_segment_refuses_bad_input():
    p = SlopePredictor()
    with pytest.raises(InvalidInputError, match="threshold"):
        A.timed_segment(p, np.zeros((8, 8, 3), np.uint8), 1.5)
    with pytest.raises(InvalidInputError, match="uint8"):
        A.timed_segment(p, np.zeros((8, 8, 3), np.float32))


def test_lesion_area_and_describe():
    m = np.zeros((10, 20), np.uint8)
    m[2:5, 3:8] = 1
    assert A.lesion_area(m) == (15, 7.5)
    assert A.lesion_area(m * 255) == (15, 7.5)
    assert A.lesion_area(np.zeros((4, 4), np.uint8)) == (0, 0.0)
    with pytest.raises(InvalidInputError):
        A.lesion_area(np.zeros((2, 2, 3), np.uint8))
    seg = A.Segmentation(m, m.astype(np.float32), A.Latency(1.0, 2.0, 3.0, 0.5), 0.5)
    d = A.describe(seg)
    assert d["lesion_pixels"] == 15 and d["image_pixels"] == 200 and d["image_size"] == [20, 10]
    assert d["latency"]["total_ms"] == 6.0
    text = A.summary_markdown(seg, "ucmnet")
    assert "Lesion area: **15 px** (7.50 % of the 20x10 image" in text and "= **6.0 ms**" in text


def test_dice():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    assert A.dice(a, b) == 1.0  # both empty: full agreement
    a[0, :] = 1
    assert A.dice(a, b) == 0.0
    b[0, :2] = 1
    assert A.dice(a, b) == pytest.approx(2 * 2 / (4 + 2))
    assert A.dice(a, a * 255) == 1.0
    with pytest.raises(InvalidInputError):
        A.dice(a, np.zeros((3, 3)))


def test_overlay_fills_and_outlines_only_the_lesion(image):
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[50:120, 60:140] = 1
    out = A.overlay(image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = (out != image).any(axis=2)
    assert changed[mask > 0].mean() > 0.95  # filled
    assert not changed[:40].any() and not changed[130:].any()  # untouched away from the lesion (contour 1 px)
    assert tuple(out[50, 100]) == PRED_COLOR  # the outline
    np.testing.assert_array_equal(A.overlay(image, np.zeros_like(mask)), image)
    with pytest.raises(InvalidInputError):
        A.overlay(image, mask[:10])


def test_probability_and_agreement_maps(image):
    proba = np.tile(np.linspace(0, 1, image.shape[1], dtype=np.float32), (image.shape[0], 1))
    rgb = A.probability_map(proba)
    assert rgb.shape == image.shape and rgb.dtype == np.uint8
    assert rgb[:, 0].sum() < rgb[:, -1].sum()  # dark at 0, bright at 1
    a = np.zeros(image.shape[:2], np.uint8)
    b = np.zeros_like(a)
    a[:, :100] = 1
    b[:, 50:150] = 1
    agree = A.agreement_map(image, a, b)
    assert (agree[:, 150:] == image[:, 150:]).all()
    both, only_a, only_b = agree[10, 75].astype(int), agree[10, 25].astype(int), agree[10, 125].astype(int)
    assert both[1] > both[0] and only_a[0] > only_a[2] and only_b[2] > only_b[0]


def test_for_display_downscales_large_images_only():
    small = np.zeros((100, 50, 3), np.uint8)
    assert A.for_display(small) is small
    big = np.zeros((3000, 4500, 3), np.uint8)
    assert A.for_display(big).shape == (1365, 2048, 3)
