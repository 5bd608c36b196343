"""Test doubles for the benchmark tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from lightseg_edge.types import InputSpec, Precision, PreprocessConfig, Runtime


class FakeClock:
    """A nanosecond clock that only moves when the fake predictor says so."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


class FakePredictor:
    """Each call advances ``clock`` by the next duration (ms) of a fixed cycle: known behaviour, no wall clock."""

    runtime = Runtime.ONNXRUNTIME
    precision = Precision.FP32
    device = "cpu"
    threshold = 0.5
    static_batch_size = None
    max_batch_size = None

    def __init__(self, clock: FakeClock, durations_ms: Sequence[float], logit: float = 1.0, size=(64, 64)) -> None:
        self.clock = clock
        self.durations = list(durations_ms)
        self.calls: List[str] = []
        self.logit = logit
        self.preprocess_config = PreprocessConfig(size=size, mode="scale")
        self.input_spec = InputSpec(shape=(None, 3, size[0], size[1]))

    def _tick(self, what: str) -> None:
        self.clock.t += int(self.durations[len(self.calls) % len(self.durations)] * 1e6)
        self.calls.append(what)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._tick("infer")
        n, _, h, w = batch.shape
        return np.full((n, 1, h, w), self.logit, np.float32)

    def predict(self, image: np.ndarray, threshold=None) -> np.ndarray:
        self._tick("predict")
        return np.ones(image.shape[:2], np.uint8)

    def predict_batch(self, images, threshold=None):
        self._tick("predict_batch")
        return [np.ones(im.shape[:2], np.uint8) for im in images]

    def close(self) -> None:
        self.calls.append("close")
