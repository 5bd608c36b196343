"""Export targets beyond ONNX: each is one module here and one row of ``TARGETS``.

A target turns the checked, simplified FP32 ONNX (and, where its converter needs it, the PyTorch deploy-form model)
into files for one runtime. The export flow runs every requested target in one loop: ``build`` makes the files in
the staging folder, then each artifact is loaded through that runtime's predictor and scored on the same held-out
images as the ONNX variants (or, where the runtime cannot run on this machine, checked statically and recorded as
not runnable here: never a made-up accuracy figure).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ...errors import ExportConfigError
from ...types import InputSpec, PreprocessConfig, Runtime


@dataclass(frozen=True)
class TargetJob:
    """Everything a target's build step may use. Paths are inside the staging folder."""

    onnx_fp32: Path  # the checked, simplified FP32 ONNX
    stage: Path  # where the target writes its files (flat names, see BuiltArtifact)
    precisions: Tuple[str, ...]  # requested, e.g. ("fp32", "fp16", "int8"); the target makes those it supports
    preprocess: PreprocessConfig
    input_spec: InputSpec  # the ONNX's input (static batch for every target except ONNX/TensorRT)
    model_name: Optional[str] = None
    model: Any = None  # the PyTorch deploy-form module; None when exporting from an ONNX file
    calibration: Optional[Any] = None  # an export.images.ImageSet of calibration images (INT8 only)
    progress: bool = False
    # keep(precision, candidates, build, runtime, variant) -> export.keep.KeepDecision: the --<precision>-keep choice,
    # build(kept, path) writing a trial variant that ``runtime`` scores on the selection images. None: nothing kept.
    keep: Optional[Callable[..., Any]] = None
    # the deploy form ``onnx_fp32`` and ``model`` hold (recorded with each artifact); None: a given ONNX file's own
    deploy_form: Optional[Any] = None


@dataclass(frozen=True)
class BuiltArtifact:
    """One file (or .mlpackage folder) a target made, as its manifest entry will list it."""

    key: str  # manifest artifact key, "<target>-<precision>", e.g. "openvino-fp16"
    path: str  # the main file or folder, relative to the stage folder
    precision: str  # fp32 | fp16 | int8
    companions: Tuple[str, ...] = ()  # other files the main file needs (OpenVINO's .bin), relative to the stage folder
    extra: Dict[str, Any] = field(default_factory=dict)  # recorded in the manifest entry (converter, options)


@dataclass(frozen=True)
class Target:
    """One row of the target table."""

    name: str  # the --formats value
    runtime: Runtime  # the runtime that loads its artifacts
    precisions: Tuple[str, ...]  # what it can make
    needs_torch_model: bool  # its converter starts from the PyTorch module, not the ONNX
    runnable: Callable[[], Optional[str]]  # None when its artifacts can be run here, else why not (scored or not)
    build: Callable[[TargetJob], Tuple[BuiltArtifact, ...]]
    static_batch: bool = True  # its files take a fixed batch only (--dynamic-batch is refused); False: ONNX-based
    # Extra scored settings of a built artifact: (accuracy key, artifact key, predictor options), e.g. OpenVINO's
    # fp32 IR run with a bf16 inference precision hint.
    extra_scores: Tuple[Tuple[str, str, Dict[str, Any]], ...] = ()


# --formats name -> the module holding its TARGET. "onnx" (always made: every target starts from it) and "tensorrt"
# (the engine step) are the pipeline's own steps.
_MODULES = {"openvino": ".openvino", "tflite": ".litert", "coreml": ".coreml", "triton": ".triton", "embedded": ".embedded"}
BUILTIN_FORMATS = ("onnx", "tensorrt")
FORMATS = BUILTIN_FORMATS + tuple(_MODULES)
DEFAULT_FORMATS = BUILTIN_FORMATS


def get_target(name: str) -> Target:
    """The target row for a --formats name (its module imports no converter until ``build`` runs)."""
    if name not in _MODULES:
        raise ExportConfigError(f"--formats {name!r}: unknown format; expected some of {', '.join(FORMATS)}")
    return importlib.import_module(_MODULES[name], __name__).TARGET
