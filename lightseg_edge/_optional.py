"""Optional-dependency probes. Module tops never import heavy packages; functions call ``require`` instead."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

# package import name -> (pip extra that provides it, human name)
_EXTRAS = {
    "torch": ("train", "PyTorch"),
    "onnx": ("export", "ONNX"),
    "onnxruntime": ("export", "ONNX Runtime"),
    "onnxsim": ("export", "onnxsim"),
    "onnxslim": ("export", "onnxslim"),
    "tensorrt": ("trt", "TensorRT"),
    "pycuda": ("", "PyCUDA"),  # no extra: it builds from source against the local CUDA toolkit
    "cuda": ("trt", "cuda-python"),
    "pynvml": ("gpu", "nvidia-ml-py"),
    "matplotlib": ("train", "matplotlib"),
    "psutil": ("bench", "psutil"),
    "openvino": ("openvino", "OpenVINO"),
    "nncf": ("openvino", "NNCF"),
    "ai_edge_litert": ("litert", "LiteRT"),
    "litert_torch": ("litert", "litert-torch"),
    "coremltools": ("coreml", "coremltools"),
    "modelopt": ("modelopt", "NVIDIA ModelOpt"),
    "tritonclient": ("triton", "tritonclient"),
    "pytriton": ("serve", "NVIDIA PyTriton"),
}


def is_available(name: str) -> bool:
    """True if ``name`` can be imported; never imports it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(name: str, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``name`` or raise a MissingDependencyError that says which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra = extra or _EXTRAS.get(name, ("", ""))[0]
        hint = f"pip install 'lightseg-edge[{extra}]'" if extra else f"pip install {name}"
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(f"the '{name}' package is needed{what} but is not installed ({exc}). Install it with: {hint}") from exc
