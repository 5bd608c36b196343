"""Weight files: shipped safetensors and training checkpoints, never loaded through arbitrary unpickling."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import CheckpointError
from ._registry import get_model_config
from .._hashing import path_argument, sha256_file  # noqa: F401  (sha256_file re-exported)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_EXPECTED = "a lightseg-train checkpoint (.pt) or .safetensors weights"


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


def load_torch_file(path: Union[str, Path], what: str = "weights") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data, never arbitrary pickled objects. A file that
    is not that (an unsafe pickle, a truncated or foreign file) is one CheckpointError line naming it."""
    import torch

    try:
        with warnings.catch_warnings():
            # torch warns about a pickle protocol before it reads (or fails on) a file; the outcome is what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "not loadable weights"
        raise CheckpointError(f"{path}: cannot read {what}: {_torch_load_problem(exc)}") from exc


def _torch_load_problem(exc: Exception) -> str:
    """torch's own text runs to a dozen lines and suggests weights_only=False; say what it means, and the safe fix."""
    text = " ".join(str(exc).split())
    unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if unsafe:
        return (f"refused to unpickle a Python object ({unsafe.group(1)}): the file holds more than tensors, and loading it "
                f"could run code; expected {_EXPECTED}: re-save only the state dict, from a source you trust")
    if isinstance(exc, pickle.UnpicklingError):
        why = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        detail = (why.group(1) if why else text)[:120]
        return f"not a tensors-only PyTorch file (the safe unpickler stops: {detail}); expected {_EXPECTED}"
    if isinstance(exc, EOFError) or "PytorchStreamReader" in text:
        return f"truncated or corrupt PyTorch file; expected {_EXPECTED}: copy or download it again"
    # Arbitrary bytes reach torch's legacy pickle reader, which fails with whatever the bytes trip (KeyError: 210).
    return f"not a tensors-only PyTorch file ({type(exc).__name__}: {text[:120]}); expected {_EXPECTED}"


def _read_safetensors(path: Path) -> Tuple[Dict, Optional[str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            recorded = (f.metadata() or {}).get("model")
            recorded = recorded if isinstance(recorded, str) and recorded.isprintable() else None  # no registry name is otherwise
            return {k: f.get_tensor(k) for k in f.keys()}, recorded
    except Exception as exc:  # any decode failure is a bad file, whatever the library raised
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"{path}: cannot read weights: corrupt or truncated .safetensors file ({detail}); expected {_EXPECTED}: copy or download it again"
        ) from exc


def _read(path: Union[str, Path]) -> Tuple[Dict, Optional[str]]:
    """(state dict, the model name the file records or None)."""
    import torch

    path = path_argument(path, "checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; expected {_EXPECTED}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = load_torch_file(path)
    config = obj.get("config") if isinstance(obj, dict) else None
    recorded = config.get("model") if isinstance(config, dict) else None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or a trainer checkpoint with a 'model' entry)")
    return obj, recorded


def read_state_dict(path: Union[str, Path]) -> Dict:
    """Tensors from a .safetensors file or a checkpoint saved by the trainer (loaded with weights_only=True)."""
    return _read(path)[0]


def fit_summary(expected: Dict, state: Dict) -> str:
    """'' when ``state`` fits ``expected`` key for key and shape for shape; else counts and the first three names."""
    missing = [k for k in expected if k not in state]
    unexpected = [k if k.isprintable() else repr(k) for k in state if k not in expected]  # names from the file: one line
    reshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in expected
                if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    # load_state_dict casts silently: integer tensors where the model has float weights are not these weights
    retyped = [f"{k}: file {state[k].dtype} vs model {expected[k].dtype}" for k in expected
               if k in state and state[k].is_floating_point() != expected[k].is_floating_point()]
    parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for keys, what in
             ((missing, "missing keys"), (unexpected, "unexpected keys"), (reshaped, "shape mismatches"), (retyped, "dtype mismatches")) if keys]
    return "; ".join(parts)


def load_weights(model, path: Union[str, Path]) -> None:
    name = getattr(model, "name", type(model).__name__)
    state, recorded = _read(path)
    problem = fit_summary(model.state_dict(), state)
    if not problem:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as exc:  # a check torch makes and fit_summary does not
            problem = " ".join(str(exc).split())[:300]
    if recorded and recorded != name:
        fix = f"the file is for model {recorded!r}: load it as that model (--model {recorded})"
    else:
        fix = f"expected weights trained for {name!r}"
    raise CheckpointError(f"{path}: weights do not fit model {name!r}: {problem}; {fix}")


def save_safetensors(model, path: Union[str, Path], model_name: str) -> Path:
    """The model's state dict as .safetensors (tensors only, ``model`` recorded in the metadata), written atomically."""
    from safetensors.torch import save

    from .._atomic import write_bytes_atomic

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_bytes_atomic(path, save(tensors, metadata={"model": model_name}), durable=True)

