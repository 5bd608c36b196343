"""ONNX Runtime adapter: CPU, and the CUDA / TensorRT execution providers when onnxruntime-gpu is installed.

Providers are explicit: ``providers=["cuda", "cpu"]`` (aliases ``cpu``, ``cuda``, ``tensorrt``, ``openvino``,
``coreml``, ``directml`` or full ORT names, optionally ``(name, options)`` pairs). A requested provider that this
onnxruntime build lacks is an error listing the available ones, and so is a session that silently fell back to the
CPU (ORT does that when the CUDA libraries fail to load). The TensorRT provider gets an engine and timing cache
directory by default, so a new session does not rebuild the engine; fp16/INT8 precision is carried by the ONNX
graph itself (fp16 / Q/DQ artifacts), not by ``trt_fp16_enable``. The CUDA and TensorRT providers are written against
ORT's documented options and have not been run here (UNVERIFIED); the CPU provider is tested.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._optional import require
from ..errors import BackendUnavailableError, InvalidInputError
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import DEFAULT_THRESHOLD, BasePredictor, check_threads

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
}
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}

ProviderArg = Union[str, Tuple[str, Dict[str, Any]]]


def default_trt_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lightseg_edge" / "ort-tensorrt"


def providers_for_device(device: Optional[str], available: Sequence[str]) -> List[ProviderArg]:
    """``cpu`` -> CPU; ``cuda``/``cuda:N`` -> CUDA (device N) then CPU; None -> CUDA when this build has it, else CPU."""
    if device is None or device == "auto":
        return ["cuda", "cpu"] if "CUDAExecutionProvider" in available else ["cpu"]
    if device == "cpu":
        return ["cpu"]
    if device.startswith("cuda"):
        idx = device.partition(":")[2]
        if idx and not idx.isdigit():
            raise InvalidInputError(f"device {device!r}: expected 'cuda' or 'cuda:N'")
        return [("cuda", {"device_id": int(idx or 0)}), "cpu"]
    if device in ("tensorrt", "trt"):
        return ["tensorrt", "cuda", "cpu"]
    raise InvalidInputError(f"device {device!r} is not supported by the onnxruntime runtime; expected 'cpu', 'cuda', 'cuda:N' or 'tensorrt'")


def resolve_providers(requested: Sequence[ProviderArg], available: Sequence[str], cache_dir: Optional[Union[str, Path]] = None
                      ) -> Tuple[List[str], List[Dict[str, Any]]]:
    names: List[str] = []
    options: List[Dict[str, Any]] = []
    for item in requested:
        name, opts = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            hint = " (install onnxruntime-gpu instead of onnxruntime; the two packages cannot coexist)" if full in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else ""
            raise BackendUnavailableError(f"ONNX Runtime provider {full!r} is not available in this onnxruntime build; available: {', '.join(available)}{hint}")
        if full == "TensorrtExecutionProvider":
            cache = Path(cache_dir) if cache_dir else default_trt_cache_dir()
            defaults = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
            opts = {**defaults, **opts}
            cache.mkdir(parents=True, exist_ok=True)
        if full in names:
            continue
        names.append(full)
        options.append(opts)
    if not names:
        raise InvalidInputError("providers: expected at least one execution provider")
    return names, options


class OnnxRuntimePredictor(BasePredictor):
    runtime_kind = Runtime.ONNXRUNTIME

    def __init__(self, path: Union[str, Path], preprocess: PreprocessConfig, input_spec: Optional[InputSpec] = None,
                 device: Optional[str] = None, providers: Optional[Sequence[ProviderArg]] = None,
                 threads: Optional[int] = None, graph_optimization_level: str = "all",
                 precision: Union[str, Precision] = Precision.FP32, cache_dir: Optional[Union[str, Path]] = None,
                 threshold: float = DEFAULT_THRESHOLD, tta: str = "none") -> None:
        ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"{path}: ONNX file not found")
        available = list(ort.get_available_providers())
        if isinstance(providers, str):  # one provider's name, not a sequence of one-letter names
            providers = [providers]
        requested = list(providers) if providers is not None else providers_for_device(device, available)
        names, prov_opts = resolve_providers(requested, available, cache_dir)

        so = ort.SessionOptions()
        if graph_optimization_level not in OPT_LEVELS:
            raise InvalidInputError(f"graph_optimization_level {graph_optimization_level!r}: expected one of {', '.join(OPT_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[graph_optimization_level])
        threads = check_threads(threads, low=0)  # 0: ONNX Runtime's default
        if threads is not None:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1  # one single-input graph: inter-op parallelism only adds threads
        so.log_severity_level = 3  # errors only; the provider fallback check below reports what matters
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=names, provider_options=prov_opts)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types; all mean "cannot load this file"
            raise InvalidInputError(f"{path}: {_load_problem(exc)}") from exc
        active = list(sess.get_providers())
        if names[0] not in active:
            raise BackendUnavailableError(
                f"{path}: ONNX Runtime could not start {names[0]} (the session fell back to {', '.join(active)}); "
                f"check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs, or use device='cpu'"
            )
        self._sess = sess
        self._providers = active

        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise InvalidInputError(f"{path}: expected one input and one logits output, the graph has {len(inputs)} inputs and {len(outputs)} outputs")
        inp, out = inputs[0], outputs[0]
        if inp.type not in _ORT_DTYPES:
            raise InvalidInputError(f"{path}: input {inp.name!r} has type {inp.type}; expected a float tensor")
        self._in_name, self._out_name = inp.name, out.name
        self._in_dtype = _ORT_DTYPES[inp.type]
        graph_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape)
        if len(graph_shape) != 4:
            raise InvalidInputError(f"{path}: input {inp.name!r} has shape {inp.shape}; expected NCHW")
        if input_spec is not None:
            _check_spec_matches(path, input_spec, graph_shape, inp.name)
        spec = InputSpec(name=inp.name, shape=graph_shape, dtype="float32", output_name=out.name)
        dev = "cpu" if names[0] == "CPUExecutionProvider" else names[0]
        super().__init__(spec, preprocess, precision=Precision(precision), device=dev, threshold=threshold, tta=tta, source=str(path))

    @property
    def providers(self) -> List[str]:
        """The execution providers the session actually uses, in priority order."""
        return list(self._providers)

    @property
    def session(self) -> Any:
        return self._sess

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = batch if self._in_dtype is np.float32 else batch.astype(self._in_dtype)
        (out,) = self._sess.run([self._out_name], {self._in_name: x})
        return out

    def _close(self) -> None:
        self._sess = None


def _load_problem(exc: Exception) -> str:
    """ORT's text: '[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from <path> failed:<reason>', sometimes
    many lines with C++ signatures; keep the reason, on one line, and say what to do."""
    text = " ".join(str(exc).split())
    reason = text.split(" failed:", 1)[-1].strip()
    reason = re.sub(r"\S+\.(?:h|cc|cpp):\d+ [^(]*\([^)]*\)\s*", "", reason) or type(exc).__name__  # C++ source location
    fix = "copy it again or re-export it with lightseg-export"
    if "INVALID_PROTOBUF" in text or "No graph was found" in text:
        return f"ONNX Runtime cannot load this model: not a readable ONNX file (truncated or corrupt: {reason[:120]}); {fix}"
    return f"ONNX Runtime cannot load this model ({type(exc).__name__}: {reason[:240]}); {fix}"


def _check_spec_matches(path: Path, spec: InputSpec, graph_shape: Tuple[Optional[int], ...], name: str) -> None:
    """A manifest or explicit input spec must describe the graph it is used with."""
    if spec.name != name:
        raise InvalidInputError(f"{path}: the manifest/option names the input {spec.name!r} but the graph's input is {name!r}")
    for axis, (a, b) in enumerate(zip(spec.shape, graph_shape)):
        if a is not None and b is not None and a != b:
            raise InvalidInputError(f"{path}: the manifest/option says input shape {list(spec.shape)} but the graph has {list(graph_shape)} (axis {axis})")
