"""timm-style explicit registry: each model file registers its entrypoints with ``@register_model``."""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from ..errors import UnknownModelError
from ._cfg import ModelConfig

_ENTRYPOINTS: Dict[str, Callable] = {}
_CONFIGS: Dict[str, ModelConfig] = {}


def register_model(cfg: ModelConfig) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        if cfg.name in _ENTRYPOINTS:
            raise RuntimeError(f"model {cfg.name!r} registered twice")
        _ENTRYPOINTS[cfg.name] = fn
        _CONFIGS[cfg.name] = cfg
        return fn

    return deco


def list_models(pattern: str = "*") -> List[str]:
    return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatch(n, pattern))


def _check_name(name: str) -> None:
    if name not in _ENTRYPOINTS:
        close = difflib.get_close_matches(name, list(_ENTRYPOINTS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}")


def get_model_config(name: str) -> ModelConfig:
    _check_name(name)
    return _CONFIGS[name]


def create_model(name: str, pretrained: bool = False, checkpoint: Optional[Union[str, Path]] = None, **kwargs):
    """Build a registered model; ``pretrained`` loads the shipped ISIC weights, ``checkpoint`` a training checkpoint."""
    _check_name(name)
    model = _ENTRYPOINTS[name](**kwargs)
    if checkpoint is not None:
        from ._weights import load_weights

        load_weights(model, checkpoint)
    elif pretrained:
        from ._weights import load_weights, pretrained_path

        load_weights(model, pretrained_path(name))
    return model
