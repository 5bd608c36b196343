"""ONNX Runtime CPU sessions and batched inference for the export's own checks (parity, FP16/INT8 accuracy)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np

from .._optional import require
from .images import batches

log = logging.getLogger("lightseg_edge.export")


def cpu_session(model: Union[Path, str, bytes]):
    """An ORT CPU session (from a path or serialized model bytes) with full graph optimisation, as a deployed CPU
    predictor would use."""
    ort = require("onnxruntime", purpose="checking the exported ONNX model")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # ORT's own warnings (e.g. unused initializers) are noise here
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def batch_plan(static_batch: Optional[int], dynamic_max: Optional[int]) -> Tuple[int, bool]:
    """(chunk size, pad last chunk): a static graph takes exactly its batch; a dynamic one is fed chunks of up to 2,
    so both batch 2 and (for an odd count) batch 1 are exercised."""
    if static_batch is not None:
        return static_batch, True
    return max(1, min(2, dynamic_max or 1)), False


def run_onnx(session, x: np.ndarray, chunk: int, pad: bool) -> np.ndarray:
    """Logits for every row of ``x`` from an ONNX Runtime session (see ``run_batches``)."""
    name = session.get_inputs()[0].name
    return run_batches(lambda xb: session.run(None, {name: xb})[0], x, chunk, pad)


def run_batches(infer: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int, pad: bool) -> np.ndarray:
    """Logits for every row of ``x``, ``chunk`` rows per call; a static-batch model gets its last chunk padded by
    repeating the last image."""
    outs = []
    for start, stop in batches(len(x), chunk):
        xb = x[start:stop]
        if pad and len(xb) < chunk:
            xb = np.concatenate([xb, np.repeat(xb[-1:], chunk - len(xb), axis=0)])
        y = infer(np.ascontiguousarray(xb, dtype=np.float32))
        outs.append(np.asarray(y, dtype=np.float32)[: stop - start])
    return np.concatenate(outs)
