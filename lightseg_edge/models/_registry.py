"""timm-style explicit registry: each model file registers its entrypoints with ``@register_model``."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from .._hashing import brief_repr
from ..errors import InvalidInputError, UnknownModelError
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
    if not isinstance(name, str) or name not in _ENTRYPOINTS:
        close = difflib.get_close_matches(name, list(_ENTRYPOINTS), n=1) if isinstance(name, str) else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        # brief_repr: the name may come from a file (a checkpoint's metadata) and be any length
        raise UnknownModelError(f"unknown model {brief_repr(name, 80)}.{hint} Available: {', '.join(list_models())}")


def get_model_config(name: str) -> ModelConfig:
    _check_name(name)
    return _CONFIGS[name]


def _check_kwargs(name: str, kwargs: dict) -> None:
    """Unknown keyword arguments are the caller's mistake: name the accepted ones. Checked against signatures rather
    than by catching TypeError, so a TypeError inside a model's code keeps its traceback."""
    entry = _ENTRYPOINTS[name]
    sig = inspect.signature(entry)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        # An entrypoint forwards **kwargs to its model class, after the config: check against the class.
        try:
            built = typing.get_type_hints(entry).get("return")
        except (NameError, TypeError):
            return
        if not inspect.isclass(built):
            return
        sig = sig.replace(parameters=list(inspect.signature(built).parameters.values())[1:])
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(sig.parameters) or "none"
        raise InvalidInputError(f"create_model({name!r}): {exc}; accepted keyword arguments: {accepted}") from exc


def create_model(name: str, pretrained: bool = False, checkpoint: Optional[Union[str, Path]] = None, **kwargs):
    """Build a registered model; ``pretrained`` loads the shipped ISIC weights, ``checkpoint`` a training checkpoint."""
    _check_name(name)
    _check_kwargs(name, kwargs)
    model = _ENTRYPOINTS[name](**kwargs)
    if checkpoint is not None:
        from ._weights import load_weights

        load_weights(model, checkpoint)
    elif pretrained:
        from ._weights import load_weights, pretrained_path

        load_weights(model, pretrained_path(name))
    return model
