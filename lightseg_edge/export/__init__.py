"""Export: registry model -> checked, simplified ONNX -> FP16 / INT8 ONNX -> TensorRT engine, with a manifest.

``export(ExportConfig(model="ucmnet", fp16=True))`` runs the whole pipeline (``lightseg-export`` on the command
line). Importing this package loads nothing heavy: ``export`` and ``ExportConfig`` are resolved on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export", "ExportConfig", "ExportResult"]


def __getattr__(name: str) -> Any:
    if name == "ExportConfig":
        from .config import ExportConfig

        return ExportConfig
    if name in ("export", "ExportResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
