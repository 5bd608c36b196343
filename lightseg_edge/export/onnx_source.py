"""``--from-onnx``: what the source file is, what the manifest beside it says, and the rules the flags must obey
against both. All of it is read and checked by the pipeline's plan, before any file is written."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..errors import ExportConfigError
from ..manifest import MANIFEST_NAME, read_manifest, sha256_file
from ..types import PreprocessConfig
from .config import ExportConfig

log = logging.getLogger("lightseg_edge.export")


def intact(path: Path, sha: Optional[str]) -> bool:
    return path.is_file() and (sha is None or sha256_file(path) == sha)


def matching_manifest(src: Path) -> Optional[dict]:
    """The manifest beside ``src`` if it describes exactly this file as its FP32 model."""
    if not (src.parent / MANIFEST_NAME).is_file():
        return None
    old = read_manifest(src.parent)  # a corrupt manifest is an error, not something to paper over
    fp32 = old["artifacts"]["fp32"]
    other = next((k for k, a in old["artifacts"].items() if k != "fp32" and a.get("path") == src.name), None)
    if other is not None:
        # Exporting from it would relabel an FP16/INT8 graph (or an engine) as the FP32 model, and replace the real one
        raise ExportConfigError(f"--from-onnx {src}: this is the export's {other} artifact, not an FP32 model; "
                                f"start from its FP32 model {src.parent / fp32['path']}")
    if fp32["path"] != src.name or fp32.get("sha256") != sha256_file(src):
        log.warning("%s: the manifest beside it describes a different FP32 model; ignoring it", src)
        return None
    return old


def check_input(cfg: ExportConfig, src: Path, dims: tuple, old: Optional[dict]) -> None:
    """The graph must take N x 3 x H x W images of a fixed size, and --model must not contradict what the file is."""
    if len(dims) != 4 or dims[1] != 3 or dims[2] is None or dims[3] is None:
        shape = "x".join("?" if d is None else str(d) for d in dims)
        raise ExportConfigError(f"--from-onnx {src}: expected an image input N x 3 x H x W with a fixed H and W, found {shape}")
    if not cfg.model:
        return
    if old is not None and old.get("model") != cfg.model:
        raise ExportConfigError(
            f"--model {cfg.model} contradicts --from-onnx {src}: its manifest says model {old.get('model')!r} (omit --model to use it)"
        )
    from ..models import get_model_config

    stride = get_model_config(cfg.model).stride  # UnknownModelError with a suggestion
    if dims[2] % stride or dims[3] % stride:
        raise ExportConfigError(
            f"--model {cfg.model} contradicts --from-onnx {src}: its {dims[2]}x{dims[3]} input is not a multiple of {cfg.model}'s stride "
            f"{stride}, so it is another model"
        )


def preprocess_for(cfg: ExportConfig, old: Optional[dict], size: Tuple[int, int]) -> Optional[PreprocessConfig]:
    """The earlier export's preprocessing, else --model's at the graph's size; None when neither says."""
    if old and old.get("preprocess"):
        return PreprocessConfig.from_dict(old["preprocess"])
    if cfg.model:
        from ..models import get_model_config

        pre = get_model_config(cfg.model).preprocess  # the model's normalisation at the graph's fixed input size
        return PreprocessConfig(size=size, mode=pre.mode, mean=pre.mean, std=pre.std)
    return None


def engine_batch(cfg: ExportConfig, src: Path, dims: tuple, old: Optional[dict]) -> Optional[Tuple[int, int, int]]:
    """The engine's batch profile, None for a static graph; --dynamic-batch and --batch are checked against the graph.
    A dynamic graph whose earlier export recorded a profile keeps it unless --dynamic-batch overrides it."""
    if dims[0] is None:
        if cfg.dynamic_batch is not None:
            return cfg.dynamic_batch
        batch = (old or {}).get("batch", {})
        if batch.get("dynamic"):
            return (batch["min"], batch["opt"], batch["max"])
        raise ExportConfigError(f"{src} has a dynamic batch: pass --dynamic-batch MIN,OPT,MAX for the engine's optimization profile")
    if cfg.dynamic_batch is not None:
        raise ExportConfigError(f"{src} has a static batch of {dims[0]}; --dynamic-batch needs an ONNX exported with a dynamic batch")
    if cfg.batch not in (1, dims[0]):
        raise ExportConfigError(f"--batch {cfg.batch} does not match {src}'s static batch of {dims[0]}")
    return None


def reusable(cfg: ExportConfig, src: Path, old: Optional[dict]) -> Dict[str, dict]:
    """precision -> manifest entry, for the requested variants the earlier export made whose files are intact."""
    arts = (old or {}).get("artifacts", {})
    return {p: arts[p] for p in cfg.precisions if p in arts and intact(src.parent / arts[p]["path"], arts[p].get("sha256"))}


def check_makeable(cfg: ExportConfig, src: Path, make: Sequence[str], pre: Optional[PreprocessConfig]) -> None:
    """What is not reused is made here, which takes calibration images (INT8) and the model's preprocessing."""
    if "int8" in make and cfg.calib_data is None:
        raise ExportConfigError(f"no INT8 model beside {src} in its manifest: pass --calib-data DIR to calibrate one")
    if make and pre is None:
        raise ExportConfigError(
            f"cannot make {', '.join(make)} from {src}: its preprocessing is unknown (no manifest beside it); pass --model NAME"
        )
