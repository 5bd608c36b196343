from __future__ import annotations

import numpy as np
import pytest

from lightseg_edge.data import binarize_mask
from lightseg_edge.data.transforms import check_image, logits_to_proba, normalize, normalize_per_pixel, preprocess, proba_to_mask, sigmoid
from lightseg_edge.errors import InvalidInputError
from lightseg_edge.types import PreprocessConfig


def test_binarize_handles_every_encoding():
    m01 = np.array([[0, 1], [1, 0]], np.uint8)
    assert np.array_equal(binarize_mask(m01), m01)
    assert np.array_equal(binarize_mask(m01 * 255), m01)
    noisy = np.array([[3, 250], [252, 8]], np.uint8)  # JPEG-style noise around 0/255
    assert np.array_equal(binarize_mask(noisy), m01)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1, 0] = rgb[1, 0, 2] = 255
    assert np.array_equal(binarize_mask(rgb), m01)
    assert not binarize_mask(np.zeros((3, 3), np.uint8)).any()


def test_normalisation_modes():
    img = np.array([[[10, 20, 30], [40, 50, 110]]], np.uint8)
    x = normalize(img, PreprocessConfig(size=(1, 2), mode="minmax"))
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.isclose(x[1, 0, 0], (20 - 10) / 100)  # joint min-max over all channels
    s = normalize(img, PreprocessConfig(size=(1, 2), mode="scale"))
    assert np.isclose(s[2, 0, 1], 110 / 255)
    m = normalize(img, PreprocessConfig(size=(1, 2), mode="meanstd", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert np.isclose(m[0, 0, 0], (10 / 255 - 0.5) / 0.25)
    r = normalize(img, PreprocessConfig(size=(1, 2), mode="raw"))
    assert r[2, 0, 1] == 110.0


def test_preprocess_resizes_to_network_size():
    x = preprocess(np.full((300, 400, 3), 128, np.uint8), PreprocessConfig(size=(64, 96), mode="scale"))
    assert x.shape == (3, 64, 96)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((10, 10), np.uint8), "grayscale"),
        (np.zeros((10, 10, 4), np.uint8), "alpha"),
        (np.zeros((10, 10, 3), np.uint16), "16-bit"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ("not an array", "numpy array"),
    ],
)
def test_bad_images_get_clear_errors(image, match):
    with pytest.raises(InvalidInputError, match=match):
        check_image(image)


def test_huge_image_is_refused_without_allocating():
    huge = np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), shape=(20000, 20000, 3), strides=(0, 0, 1))
    with pytest.raises(InvalidInputError, match="larger than"):
        check_image(huge)


def test_postprocess_back_to_input_resolution():
    logits = np.full((1, 1, 4, 4), -5.0, np.float32)
    logits[..., 1:3, 1:3] = 5.0
    p = logits_to_proba(logits[0], (8, 8))
    assert p.shape == (8, 8) and p.dtype == np.float32
    mask = proba_to_mask(p)
    assert mask.dtype == np.uint8 and mask[4, 4] == 1 and mask[0, 0] == 0


def test_sigmoid_is_stable_for_extreme_logits():
    s = sigmoid(np.array([-1000.0, 0.0, 1000.0], np.float32))
    assert np.allclose(s, [0.0, 0.5, 1.0]) and np.isfinite(s).all()


@pytest.mark.parametrize("mode", ["minmax", "scale", "meanstd", "raw"])
def test_lookup_normalisation_is_bit_identical_on_real_images(sample_dir, mode):
    from lightseg_edge.data.io import read_image

    cfg = PreprocessConfig(size=(256, 256), mode=mode)
    images = [read_image(p) for p in sorted((sample_dir / "images").iterdir())]
    for im in images + [np.full((5, 7, 3), 9, np.uint8)]:  # a flat image: minmax's 0/0 case
        x = normalize(im, cfg)
        assert x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(x, normalize_per_pixel(im, cfg))


@pytest.mark.parametrize("threshold", [0.0, 1e-7, 1e-6, 0.3, 0.5, 0.9, 0.999, 1 - 1e-6, 1 - 1e-7, 1.0])
def test_mask_from_logits_is_bit_identical_to_the_sigmoid_path(threshold):
    from lightseg_edge.data.transforms import logits_to_mask

    rng = np.random.default_rng(0)
    cut = np.float32(np.log(threshold / (1 - threshold))) if 0 < threshold < 1 else np.float32(0)
    # logits spread widely, many close to the cut (near 1 float32 probabilities are too coarse to resolve it), and
    # values at and one float step either side of it, where rounding decides
    edge = np.array([cut, np.nextafter(cut, np.float32(-np.inf)), np.nextafter(cut, np.float32(np.inf))], np.float32)
    near = cut + rng.normal(0, 0.05 * max(1.0, abs(float(cut))), 32 * 64)
    lg = np.concatenate([rng.normal(0, 8, 32 * 64 - 3), near, edge]).astype(np.float32).reshape(1, 64, 64)
    # tiny sizes too: OpenCV reads an array of up to four values as a scalar (a 1x1 image once crashed the fast path)
    for size in ((64, 64), (97, 131), (1, 1), (1, 4), (4, 1), (2, 2), (1, 5), (3, 2)):
        np.testing.assert_array_equal(logits_to_mask(lg, size, threshold), proba_to_mask(logits_to_proba(lg, size), threshold))


def _reference_mask(lg: np.ndarray, size, threshold: float = 0.5) -> np.ndarray:
    """The plain definition: a freshly allocated bilinear resize, the full sigmoid, the threshold."""
    import cv2

    plane = lg.reshape(lg.shape[-2:]).astype(np.float32)
    return (sigmoid(cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)) >= threshold).astype(np.uint8)


def test_scratch_reuse_never_leaks_into_results(monkeypatch):
    """The resized logits live in a reused per-thread buffer: results must be new arrays, unchanged by later calls,
    whatever the order of sizes (growing, shrinking, above the size limit)."""
    from lightseg_edge.data import transforms

    import threading

    monkeypatch.setattr(transforms, "SCRATCH_MAX_BYTES", 4 * 300 * 300)
    monkeypatch.setattr(transforms, "_scratch", threading.local())  # what earlier tests on this thread left is not ours
    rng = np.random.default_rng(1)
    calls = [(rng.normal(0, 4, (1, 32, 32)).astype(np.float32), size) for size in ((64, 64), (300, 300), (17, 23), (301, 300), (64, 64))]
    masks = [transforms.logits_to_mask(lg, size) for lg, size in calls]
    probas = [transforms.logits_to_proba(lg, size) for lg, size in calls]
    for (lg, size), mask, proba in zip(calls, masks, probas):
        np.testing.assert_array_equal(mask, _reference_mask(lg, size))
        np.testing.assert_array_equal(proba_to_mask(proba), mask)
        assert not np.shares_memory(mask, transforms._scratch.buf) and not np.shares_memory(proba, transforms._scratch.buf)
    assert transforms._scratch.buf.nbytes == 4 * 300 * 300  # grew to the limit, no further


def test_scratch_is_per_thread():
    from concurrent.futures import ThreadPoolExecutor

    from lightseg_edge.data.transforms import logits_to_mask

    rng = np.random.default_rng(2)
    jobs = [(rng.normal(0, 4, (1, 40, 40)).astype(np.float32), (97 + i, 131 - i)) for i in range(32)]
    with ThreadPoolExecutor(4) as pool:
        masks = list(pool.map(lambda job: logits_to_mask(*job), jobs))
    for (lg, size), mask in zip(jobs, masks):
        np.testing.assert_array_equal(mask, _reference_mask(lg, size))


@pytest.mark.parametrize("threshold", [1e-6, 0.01, 0.3, 0.5, 0.9, 0.999, 0.99999, 1 - 1e-6, 1 - 1e-7])
def test_logit_band_holds_every_float32_disagreement_with_room_to_spare(threshold):
    """Where the float32 sigmoid and the exact logit comparison disagree, the logit lies well inside the band."""
    from lightseg_edge.data.transforms import logit_band

    cut, band = logit_band(threshold)
    x = (cut + np.random.default_rng(3).uniform(-2, 2, 400_000) * band).astype(np.float32)
    x = np.concatenate([x, np.float32(cut) + np.arange(-2000, 2001, dtype=np.float32) * np.spacing(np.float32(max(abs(cut), 1e-30)))])
    flips = (sigmoid(x) >= threshold) != (x > cut)
    assert np.abs(x[flips].astype(np.float64) - cut).max(initial=0.0) <= band / 4
