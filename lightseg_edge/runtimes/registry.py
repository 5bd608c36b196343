"""The runtime registry: one row per runtime, read by the loader, the CLIs, the bench and the doctor.

Adding a runtime is one backend module (a ``BasePredictor`` subclass) and one ``RuntimeSpec`` row here. Nothing in
this module imports a runtime's library: availability is a ``find_spec`` probe, and the predictor class is imported
only when a predictor is made.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple, Type, Union

from .._optional import is_available
from ..errors import InvalidInputError
from ..types import PRECISION_NAMES, Runtime

CUDA_BINDINGS = ("cuda", "pycuda", "torch")  # any of them lets the TensorRT predictor own device memory
# Options every runtime accepts (load_predictor keyword arguments).
COMMON_OPTIONS = frozenset({"precision", "threshold", "tta", "preprocess", "input_spec", "model", "verify"})


@dataclass(frozen=True)
class RuntimeSpec:
    runtime: Runtime
    label: str  # how people write it ("ONNX Runtime")
    aliases: Tuple[str, ...]  # other names accepted for --runtime / runtime=
    suffixes: Tuple[str, ...]  # model files (or folders, for .mlpackage) this runtime loads directly
    options: FrozenSet[str]  # runtime-specific load_predictor options, beside COMMON_OPTIONS
    predictor: str  # "module:Class", relative to lightseg_edge.runtimes; imported on first use
    modules: Tuple[str, ...]  # import names that must all be present for the runtime to run here
    extra: str  # the pip extra that installs it ("" where it comes from elsewhere, e.g. JetPack)
    artifact_prefix: Optional[str] = None  # manifest keys "<prefix>-<precision>"; None: the legacy ONNX/engine keys
    needs_gpu: bool = False
    runs_on: str = ""  # where it runs when not here (Core ML: macOS)

    @property
    def names(self) -> Tuple[str, ...]:
        return (self.runtime.value,) + self.aliases

    def available(self) -> bool:
        """Its Python packages are installed (whether it can run here: ``unusable_reason``)."""
        return all(is_available(m) for m in self.modules)

    def unusable_reason(self, device: Optional[str] = None) -> Optional[str]:
        """None when this runtime can run on ``device`` here, else why not (one phrase). Imports nothing; the one
        check the loader, the demo, the bench and the doctor share."""
        if not self.available():
            return f"{self.label} is not installed ({self.install_hint()})"
        if self.runs_on == "macOS" and sys.platform != "darwin":
            return f"{self.label} runs only on macOS and iOS"
        if self.needs_gpu and device == "cpu":
            return f"{self.label} needs a GPU, and the device is cpu"
        if self.needs_gpu and not any(is_available(m) for m in CUDA_BINDINGS):
            return f"{self.label} needs a CUDA binding (cuda-python, pycuda or torch)"
        return None

    def install_hint(self) -> str:
        return f"pip install 'lightseg-edge[{self.extra}]'" if self.extra else f"install {self.label} for your platform"

    def predictor_class(self) -> Type:
        module, _, cls = self.predictor.partition(":")
        return getattr(importlib.import_module(module, __package__), cls)


RUNTIMES: Dict[Runtime, RuntimeSpec] = {
    spec.runtime: spec
    for spec in (
        RuntimeSpec(Runtime.PYTORCH, "PyTorch", ("torch",), (".pt", ".pth", ".ckpt", ".safetensors"),
                    frozenset({"cuda_graph", "threads"}), ".pytorch_backend:PyTorchPredictor", ("torch",), "train"),
        RuntimeSpec(Runtime.ONNXRUNTIME, "ONNX Runtime", ("ort", "onnx"), (".onnx",),
                    frozenset({"providers", "threads", "graph_optimization_level", "cache_dir"}),
                    ".onnxruntime_backend:OnnxRuntimePredictor", ("onnxruntime",), "onnx"),
        RuntimeSpec(Runtime.TENSORRT, "TensorRT", ("trt",), (".plan", ".engine", ".trt"),
                    frozenset({"buffers", "cuda_graph", "allow_host_code"}), ".tensorrt_backend:TensorRTPredictor",
                    ("tensorrt",), "trt", needs_gpu=True),
        RuntimeSpec(Runtime.OPENVINO, "OpenVINO", ("ov",), (".xml",),
                    frozenset({"threads", "inference_precision", "ov_device", "cache_dir"}),
                    ".openvino_backend:OpenVINOPredictor", ("openvino",), "openvino", artifact_prefix="openvino"),
        RuntimeSpec(Runtime.LITERT, "LiteRT", ("tflite",), (".tflite",), frozenset({"threads"}),
                    ".litert_backend:LiteRTPredictor", ("ai_edge_litert",), "litert", artifact_prefix="tflite"),
        RuntimeSpec(Runtime.COREML, "Core ML", ("mlpackage",), (".mlpackage",), frozenset({"compute_units"}),
                    ".coreml_backend:CoreMLPredictor", ("coremltools",), "coreml", artifact_prefix="coreml",
                    runs_on="macOS"),
    )
}

_BY_NAME = {name: spec for spec in RUNTIMES.values() for name in spec.names}


def runtime_names() -> Tuple[str, ...]:
    return tuple(r.value for r in RUNTIMES)


def alias_table() -> Dict[str, str]:
    """Every accepted name -> the runtime's canonical name."""
    return {name: spec.runtime.value for name, spec in _BY_NAME.items()}


def get_runtime(name: Union[str, Runtime]) -> RuntimeSpec:
    """The spec for a runtime name or alias; InvalidInputError listing the names otherwise."""
    key = name.value if isinstance(name, Runtime) else str(name).lower()
    if key not in _BY_NAME:
        raise InvalidInputError(f"unknown runtime {name!r}; expected auto or one of {', '.join(runtime_names())}")
    return _BY_NAME[key]


def runtime_for_suffix(suffix: str) -> Optional[RuntimeSpec]:
    suffix = suffix.lower()
    return next((spec for spec in RUNTIMES.values() if suffix in spec.suffixes), None)


def known_suffixes() -> Tuple[str, ...]:
    return tuple(s for spec in RUNTIMES.values() for s in spec.suffixes)


def runtime_for_artifact(key: str) -> Optional[RuntimeSpec]:
    """The runtime that runs a manifest artifact: 'fp32'/'fp16'/'int8' ONNX, 'engine', or '<prefix>-<precision>'."""
    if key in PRECISION_NAMES:
        return RUNTIMES[Runtime.ONNXRUNTIME]
    if key == "engine":
        return RUNTIMES[Runtime.TENSORRT]
    prefix = key.rsplit("-", 1)[0]
    return next((s for s in RUNTIMES.values() if s.artifact_prefix and s.artifact_prefix == prefix), None)


def artifact_key(spec: RuntimeSpec, precision: str) -> str:
    """The manifest key of ``spec``'s artifact at ``precision`` (the inverse of runtime_for_artifact)."""
    if spec.runtime is Runtime.ONNXRUNTIME:
        return precision
    if spec.runtime is Runtime.TENSORRT:
        return "engine"
    if spec.artifact_prefix is None:
        raise InvalidInputError(f"the {spec.runtime.value} runtime has no export artifacts")
    return f"{spec.artifact_prefix}-{precision}"


def check_options(spec: RuntimeSpec, options: Dict[str, object]) -> None:
    allowed = COMMON_OPTIONS | spec.options
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidInputError(f"unknown option(s) {', '.join(unknown)} for the {spec.runtime.value} runtime; "
                                f"expected some of {', '.join(sorted(allowed))}")
