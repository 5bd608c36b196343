"""PyTorch on CUDA: fp16 autocast and CUDA-graph replay against the fp32 CPU predictor on real images."""

from __future__ import annotations

import numpy as np
import pytest

from lightseg_edge.runtimes import load_predictor

pytestmark = pytest.mark.gpu


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() + 1) / float(a.sum() + b.sum() + 1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["eager", "graph"])
def test_cuda_matches_cpu(checkpoint, sample_images, precision, cuda_graph):
    with load_predictor(checkpoint, device="cpu") as cpu:
        ref = [cpu.predict(im).astype(bool) for im in sample_images]
    with load_predictor(checkpoint, device="cuda", precision=precision, cuda_graph=cuda_graph) as gpu:
        for _ in range(2):  # the second pass replays the captured graph
            got = [gpu.predict(im).astype(bool) for im in sample_images]
    floor = 0.999 if precision == "fp32" else 0.99
    assert min(_dice(a, b) for a, b in zip(ref, got)) >= floor
