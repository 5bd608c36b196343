"""Weight files: shipped safetensors and training checkpoints, never loaded through arbitrary unpickling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

from ..errors import CheckpointError
from ._registry import get_model_config
from .._hashing import sha256_file  # noqa: F401  (re-exported)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def has_pretrained(name: str) -> bool:
    """Shipping weights is adding ``weights/<name>.safetensors`` and its card ``<name>.json`` (train/ship.py)."""
    get_model_config(name)  # an unknown name is an error, not "no weights"
    return (WEIGHTS_DIR / f"{name}.safetensors").is_file()


def pretrained_path(name: str) -> Path:
    if not has_pretrained(name):
        raise CheckpointError(
            f"model {name!r} has no shipped pretrained weights yet; train it with `lightseg-train --model {name}` "
            f"and pass the checkpoint instead"
        )
    return WEIGHTS_DIR / f"{name}.safetensors"


def model_card(name: str) -> dict:
    """The JSON model card next to a shipped weight file (metrics, data, recipe, sha256)."""
    path = pretrained_path(name).with_suffix(".json")
    return json.loads(path.read_text())


def read_state_dict(path: Union[str, Path]) -> Dict:
    """Tensors from a .safetensors file or a checkpoint saved by the trainer (loaded with weights_only=True)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decode failure is a bad file, whatever the library raised
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or a trainer checkpoint with a 'model' entry)")
    return obj


def load_weights(model, path: Union[str, Path]) -> None:
    state = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit model {getattr(model, 'name', type(model).__name__)!r}: {' '.join(first[:3])}") from exc
