"""lightseg-edge: lightweight skin-lesion segmentation from paper to device.

Importing the package loads no torch, ONNX or TensorRT; the functions below import what they need when called.
"""

from __future__ import annotations

from ._version import __version__
from .errors import LightsegError


def create_model(name: str, pretrained: bool = False, **kwargs):
    """Build a registered model (``pretrained=True`` loads the shipped ISIC-trained weights)."""
    from .models import create_model as _create

    return _create(name, pretrained=pretrained, **kwargs)


def list_models(pattern: str = "*"):
    from .models import list_models as _list

    return _list(pattern)


def get_model_config(name: str):
    from .models import get_model_config as _get

    return _get(name)


def load_predictor(source, runtime: str = "auto", device=None, **options):
    """One predictor interface over PyTorch, ONNX Runtime and TensorRT; see ``lightseg_edge.runtimes``."""
    from .runtimes import load_predictor as _load

    return _load(source, runtime=runtime, device=device, **options)


__all__ = ["__version__", "LightsegError", "create_model", "list_models", "get_model_config", "load_predictor"]
