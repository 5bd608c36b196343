"""One predictor interface over PyTorch, ONNX Runtime (CPU / CUDA / TensorRT EP) and native TensorRT.

    from lightseg_edge.runtimes import load_predictor
    with load_predictor("exports/ucmnet") as p:          # an export folder, .onnx, .plan, checkpoint or model name
        mask = p.predict(rgb_uint8_image)                  # HxW uint8 {0,1} at the image's own resolution

Importing this package imports numpy only (plus OpenCV when an image is first processed); the backend modules and
their heavy dependencies load on first use, and only the PyTorch adapter ever imports torch. Runs on Python 3.8+.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import BasePredictor, Predictor
from .loader import load_predictor

_LAZY = {
    "PyTorchPredictor": ".pytorch_backend",
    "OnnxRuntimePredictor": ".onnxruntime_backend",
    "TensorRTPredictor": ".tensorrt_backend",
    "DeployManifest": "..manifest",
    "ManifestError": "..errors",
    "read_deploy_manifest": "..manifest",
    "draw_contours": "..data.overlay",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [  # noqa: RUF022 (public API first, then the lazily loaded names)
    "load_predictor", "Predictor", "BasePredictor", "PyTorchPredictor", "OnnxRuntimePredictor", "TensorRTPredictor",
    "DeployManifest", "ManifestError", "read_deploy_manifest", "draw_contours",
]
