"""Trainer checkpoints: tensors and plain metadata only, so ``torch.load(weights_only=True)`` reads them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

from ..errors import CheckpointError

FORMAT = "lightseg-ckpt/1"


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    """Atomic: an interrupted save leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, **state}, str(tmp))
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lightseg-edge trainer checkpoint (expected format {FORMAT!r})")
    return obj
