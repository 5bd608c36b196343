"""Test-time augmentation: the flipped views, flipped back and averaged, for numpy and torch alike."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lightseg_edge.data.tta import VIEWS, averaged_logits, check_tta
from lightseg_edge.errors import InvalidInputError
from lightseg_edge.types import TTA


def _not_flip_symmetric(x):
    """A stand-in network whose output depends on where a pixel is (a running sum along each spatial axis)."""
    return (x[:, :1].cumsum(axis=2) + 2 * x[:, 1:2].cumsum(axis=3)).astype(np.float32)


@pytest.fixture
def batch():
    return np.random.default_rng(0).normal(size=(2, 3, 8, 12)).astype(np.float32)


def test_none_is_the_plain_call(batch):
    calls = []
    out = averaged_logits(lambda b: calls.append(b) or _not_flip_symmetric(b), batch, TTA.NONE)
    assert len(calls) == 1 and calls[0] is batch
    np.testing.assert_array_equal(out, _not_flip_symmetric(batch))


def test_flips_is_the_mean_of_the_four_views_flipped_back(batch):
    expected = (_not_flip_symmetric(batch)
                + _not_flip_symmetric(batch[..., ::-1])[..., ::-1]
                + _not_flip_symmetric(batch[:, :, ::-1])[:, :, ::-1]
                + _not_flip_symmetric(batch[:, :, ::-1, ::-1])[:, :, ::-1, ::-1]) / 4
    out = averaged_logits(_not_flip_symmetric, batch, TTA.FLIPS)
    assert out.dtype == np.float32 and out.shape == (2, 1, 8, 12)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-5)
    assert np.abs(out - _not_flip_symmetric(batch)).max() > 0.1  # the views differ for such a network


def test_a_flip_equivariant_network_is_unchanged(batch):
    double = lambda b: 2 * b[:, :1]  # noqa: E731 - pixel-wise, so each view flipped back is the plain output
    np.testing.assert_array_equal(averaged_logits(double, batch, TTA.FLIPS), double(batch))


def test_a_runtime_that_reuses_its_output_buffer(batch):
    """TensorRT-style: every call returns the same host array. The first view must not be overwritten by the next."""
    buf = np.empty((2, 1, 8, 12), np.float32)

    def run(b):
        buf[...] = _not_flip_symmetric(b)
        return buf

    np.testing.assert_allclose(averaged_logits(run, batch, TTA.FLIPS), averaged_logits(_not_flip_symmetric, batch, TTA.FLIPS), atol=1e-6)


def test_torch_and_numpy_give_the_same_average(batch):
    torch = pytest.importorskip("torch")
    net = torch.nn.Conv2d(3, 1, 3, padding=1).eval()
    with torch.no_grad():
        via_torch = averaged_logits(net, torch.from_numpy(batch), TTA.FLIPS, flip=torch.flip).numpy()
        via_numpy = averaged_logits(lambda b: net(torch.from_numpy(np.ascontiguousarray(b))).numpy(), batch, TTA.FLIPS)
    np.testing.assert_allclose(via_torch, via_numpy, atol=1e-6)


@pytest.mark.parametrize("value, expected", [(None, TTA.NONE), ("none", TTA.NONE), ("flips", TTA.FLIPS), (TTA.FLIPS, TTA.FLIPS)])
def test_check_tta_accepts(value, expected):
    assert check_tta(value) is expected


@pytest.mark.parametrize("value", ["flip", "d4", 1, ""])
def test_check_tta_names_the_flag_and_the_choices(value):
    with pytest.raises(InvalidInputError, match="^" + re.escape(f"--tta={value!r}: expected one of none, flips") + "$"):
        check_tta(value, "--tta")


def test_every_tta_starts_with_the_input_itself():
    assert all(views[0] == () for views in VIEWS.values()) and set(VIEWS) == set(TTA)
