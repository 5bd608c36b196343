"""BasePredictor's shared behaviour, on a numpy-only adapter: batching, fixed-batch padding, spec checks, lock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lightseg_edge.errors import InvalidInputError, PredictorClosedError
from lightseg_edge.runtimes.base import BasePredictor
from lightseg_edge.types import InputSpec, PreprocessConfig, Runtime

PRE = PreprocessConfig(size=(32, 32), mode="scale")


class MeanPredictor(BasePredictor):
    """Logit = mean over channels minus 0.5 (so the mask is 'brighter than mid-grey'); records each batch size."""

    runtime_kind = Runtime.ONNXRUNTIME

    def __init__(self, batch=None, max_batch=None, delay=0.0):
        super().__init__(InputSpec(shape=(batch, 3, 32, 32)), PRE, source="mean", max_batch_size=max_batch)
        self.calls = []
        self.delay = delay
        self.active = 0
        self.max_active = 0

    def _infer(self, batch):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        self.calls.append(batch.shape[0])
        self.active -= 1
        return batch.mean(axis=1, keepdims=True) - 0.5


def _img(value, h=20, w=30):
    return np.full((h, w, 3), value, np.uint8)


def test_predict_thresholds_the_shared_postprocessing():
    p = MeanPredictor()
    assert p.predict(_img(255)).all() and not p.predict(_img(0)).any()
    assert p.predict(_img(0)).shape == (20, 30)
    # sigmoid(mean/255 - 0.5) for a uniform image, at the image's own size
    np.testing.assert_allclose(p.predict_proba(_img(255)), 1 / (1 + np.exp(-0.5)), rtol=1e-6)


def test_fixed_batch_model_is_padded_and_chunked():
    p = MeanPredictor(batch=2)
    assert p.static_batch_size == 2 and p.max_batch_size == 2
    masks = p.predict_batch([_img(255), _img(0), _img(255)])
    assert [m.all() for m in masks] == [True, False, True]
    assert p.calls == [2, 2]  # 3 images -> 2 + (1 padded to 2)
    with pytest.raises(InvalidInputError, match="fixed batch of 2, got 1"):
        p.infer(np.zeros((1, 3, 32, 32), np.float32))


def test_dynamic_batch_chunks_to_the_maximum():
    p = MeanPredictor(max_batch=3)
    p.predict_batch([_img(v) for v in range(7)])
    assert p.calls == [3, 3, 1]
    with pytest.raises(InvalidInputError, match="batch of 4 exceeds this model's maximum of 3"):
        p.infer(np.zeros((4, 3, 32, 32), np.float32))


def test_nhwc_stack_is_a_sequence_of_images():
    p = MeanPredictor()
    out = p.predict_batch(np.stack([_img(255), _img(0)]))
    assert len(out) == 2 and out[0].all() and not out[1].any()


def test_bad_image_in_a_batch_is_named():
    p = MeanPredictor()
    with pytest.raises(InvalidInputError, match=r"image 1: expected HxWx3 uint8 RGB"):
        p.predict_batch([_img(1), np.zeros((4, 4), np.uint8)])


def test_spec_and_preprocessing_must_agree():
    class Bad(BasePredictor):
        def __init__(self):
            super().__init__(InputSpec(shape=(None, 3, 64, 64)), PRE, source="bad.onnx")

    with pytest.raises(InvalidInputError, match=r"bad.onnx: preprocessing resizes to \(32, 32\) but the model input is \(64, 64\)"):
        Bad()


def test_wrong_output_shape_is_reported():
    class Broken(MeanPredictor):
        def _infer(self, batch):
            return np.zeros((batch.shape[0], 2, 32, 32), np.float32)

    with pytest.raises(InvalidInputError, match=r"returned shape \[1, 2, 32, 32\]; expected logits \(1, 1, H, W\)"):
        Broken().predict(_img(3))


def test_lock_serialises_backend_calls():
    p = MeanPredictor(delay=0.01)
    threads = [threading.Thread(target=lambda: [p.predict(_img(9)) for _ in range(3)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(p.calls) == 12 and p.max_active == 1


def test_close_is_idempotent_and_final():
    p = MeanPredictor()
    p.close()
    p.close()
    with pytest.raises(PredictorClosedError):
        p.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(PredictorClosedError):
        p.predict(_img(1))


def test_threshold_validation_at_construction():
    class T(MeanPredictor):
        def __init__(self):
            BasePredictor.__init__(self, InputSpec(shape=(None, 3, 32, 32)), PRE, threshold=-0.1)

    with pytest.raises(InvalidInputError, match="threshold"):
        T()
