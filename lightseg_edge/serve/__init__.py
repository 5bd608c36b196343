"""Serving: a lightseg predictor behind a real Triton Inference Server (NVIDIA PyTriton). See docs/serving.md."""

from .triton_server import DEFAULT_MODEL_NAME, MAX_SERVE_SIDE, ServeConfig, TritonSegServer, serve

__all__ = ["DEFAULT_MODEL_NAME", "MAX_SERVE_SIDE", "ServeConfig", "TritonSegServer", "serve"]
