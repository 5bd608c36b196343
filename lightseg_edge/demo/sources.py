"""What the demo offers (models, and for each the runtimes and precisions that can run here) and the predictor cache.

A source is a registry model name with shipped weights, an export folder, a ``.onnx`` / ``.plan`` file or a
checkpoint. Its options are read from what is on disk and installed, without loading anything heavy: an export
folder offers ONNX Runtime for each ONNX artifact in its manifest, TensorRT for its engine (when TensorRT is
installed), and PyTorch for the weights it was exported from (when torch is installed).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._optional import is_available
from ..errors import InvalidInputError, LightsegError
from ..runtimes.registry import RUNTIMES, artifact_key, known_suffixes, runtime_for_suffix
from ..types import Precision, Runtime

FP32 = "fp32"
PYTORCH = RUNTIMES[Runtime.PYTORCH]
DEFAULT_MODEL = "ucmnet"


@dataclass(frozen=True)
class SourceOption:
    """One entry of the model menu: ``label`` (what the page shows), ``source`` (what ``load_predictor`` gets) and
    ``runtimes``: runtime -> the precisions it can run here, first one the default."""

    label: str
    source: str
    runtimes: Tuple[Tuple[str, Tuple[str, ...]], ...]

    @property
    def runtime_names(self) -> List[str]:
        return [r for r, _ in self.runtimes]

    def precisions(self, runtime: str) -> List[str]:
        for r, precs in self.runtimes:
            if r == runtime:
                return list(precs)
        return []


def _cuda_with_torch() -> bool:
    if not is_available("torch"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not take the menu down
        return False


def _torch_precisions(device: Optional[str]) -> Tuple[str, ...]:
    # PyTorch runs fp16 (autocast) on CUDA only and has no INT8 mode (see runtimes.pytorch_backend).
    return (FP32, "fp16") if device != "cpu" and _cuda_with_torch() else (FP32,)


def _registry_option(name: str, device: Optional[str]) -> SourceOption:
    from ..models._weights import has_pretrained  # imports torch: only for a registry name

    if not has_pretrained(name):  # an unknown name raises UnknownModelError listing the known ones
        raise InvalidInputError(f"{name!r}: this registry model has no shipped weights; pass a checkpoint or an export folder instead")
    return SourceOption(label=name, source=name, runtimes=(("pytorch", _torch_precisions(device)),))


def _folder_option(folder: Path, device: Optional[str]) -> SourceOption:
    from ..manifest import read_deploy_manifest

    man = read_deploy_manifest(folder)
    runtimes: List[Tuple[str, Tuple[str, ...]]] = []
    for spec in RUNTIMES.values():
        if spec is PYTORCH or spec.unusable_reason(device) is not None:
            continue
        if spec.runtime is Runtime.TENSORRT:
            precisions = (man.artifacts["engine"].precision or "fp16",) if "engine" in man.artifacts else ()
        else:
            precisions = tuple(p.value for p in Precision if artifact_key(spec, p.value) in man.artifacts)
        if precisions:
            runtimes.append((spec.runtime.value, precisions))
    if (man.raw.get("weights") or {}).get("source") and PYTORCH.unusable_reason(device) is None:
        weights = man.raw["weights"]
        if weights.get("source") == "pretrained" or (folder / str(weights["source"])).is_file():
            runtimes.append(("pytorch", _torch_precisions(device)))
    if not runtimes:
        raise InvalidInputError(f"{folder}: nothing in this export can run here (artifacts: {', '.join(man.artifacts) or 'none'}); "
                                f"install the onnx extra for ONNX Runtime")
    return SourceOption(label=f"{man.model} ({folder})", source=str(folder), runtimes=tuple(runtimes))


def _file_option(path: Path, device: Optional[str]) -> SourceOption:
    from ..manifest import find_manifest_for

    spec = runtime_for_suffix(path.suffix)
    if spec is None:
        raise InvalidInputError(f"{path}: unrecognised model file type {path.suffix.lower()!r}; expected an export folder or one of "
                                f"{', '.join(known_suffixes())}")
    reason = spec.unusable_reason(device)
    if reason is not None:
        raise InvalidInputError(f"{path}: a {path.suffix.lower()} file runs on {spec.label}, which cannot run here: {reason}")
    if spec is PYTORCH:
        return SourceOption(label=str(path), source=str(path), runtimes=(("pytorch", _torch_precisions(device)),))
    found = find_manifest_for(path)
    art = found[1] if found else None
    default = "fp16" if spec.runtime is Runtime.TENSORRT else FP32
    prec = (art.effective_precision if art is not None else None) or default
    return SourceOption(label=str(path), source=str(path), runtimes=((spec.runtime.value, (prec,)),))


def option_for(source: str, device: Optional[str] = None) -> SourceOption:
    """The menu entry for one command-line SOURCE; a LightsegError (one line) says why it cannot be offered."""
    path = Path(source)
    if path.is_dir():
        return _folder_option(path, device)
    if path.is_file():
        return _file_option(path, device)
    if "/" in source or "\\" in source or path.suffix:
        raise InvalidInputError(f"{source}: no such file or folder; expected an export folder, .onnx, .plan/.engine, checkpoint, "
                                f".safetensors or a registry model name")
    if not is_available("torch"):
        raise InvalidInputError(f"{source!r}: a registry model runs on PyTorch, which is not installed; pip install 'lightseg-edge[train]', "
                                f"or pass an export folder / .onnx")
    return _registry_option(source, device)


def shipped_options(device: Optional[str] = None) -> List[SourceOption]:
    """Every registry model with shipped weights, UCM-Net first (none when torch is not installed)."""
    if not is_available("torch"):
        return []
    from ..models import list_models
    from ..models._weights import has_pretrained

    names = [name for name in list_models() if has_pretrained(name)]
    names.sort(key=lambda name: name != DEFAULT_MODEL)  # the project's main model first: the page's default
    return [_registry_option(name, device) for name in names]


def discover(sources: Sequence[str] = (), device: Optional[str] = None) -> List[SourceOption]:
    """The menu: the given SOURCEs in order, or every shipped model when none is given. Labels are unique."""
    options = [option_for(s, device) for s in sources] if sources else shipped_options(device)
    if not options:
        raise InvalidInputError("no model to offer: no SOURCE given and no shipped weights can run here (torch missing?); "
                                "pass an export folder or a .onnx file")
    seen: Dict[str, int] = {}
    unique = []
    for opt in options:
        label = opt.label
        if label in seen:
            seen[label] += 1
            label = f"{label} #{seen[opt.label]}"
        else:
            seen[label] = 1
        unique.append(SourceOption(label, opt.source, opt.runtimes))
    return unique


class PredictorCache:
    """One predictor per (source, runtime, precision), loaded on first use and kept; ``close`` releases them all.

    Thread-safe: the page may serve several requests at once; a predictor is loaded once even when two requests
    ask for it together (loads are serialised by one lock; predictors themselves are thread-safe).
    """

    def __init__(self, device: Optional[str] = None, loader: Any = None) -> None:
        self._device = device
        self._loader = loader
        self._items: "OrderedDict[Tuple[str, str, str], Any]" = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def get(self, source: str, runtime: str, precision: str) -> Tuple[Any, float]:
        """(predictor, seconds spent loading it now: 0.0 when it was cached)."""
        import time

        key = (str(source), str(runtime), str(precision))
        with self._lock:
            if self._closed:
                raise LightsegError("the demo is shutting down")
            if key in self._items:
                return self._items[key], 0.0
            loader = self._loader
            if loader is None:
                from ..runtimes import load_predictor as loader
            start = time.perf_counter()
            predictor = loader(key[0], runtime=key[1], device=self._device, precision=key[2])
            self._items[key] = predictor
            return predictor, time.perf_counter() - start

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Close every predictor (idempotent); later ``get`` calls fail."""
        with self._lock:
            self._closed = True
            items, self._items = list(self._items.values()), OrderedDict()
        for predictor in items:
            try:
                predictor.close()
            except Exception:  # one failing close must not keep the others open
                pass
