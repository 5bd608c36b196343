"""OpenVINO adapter: an OpenVINO IR (``model.xml`` with its ``model.bin`` beside it) on OpenVINO's CPU plugin, or any
other OpenVINO device named with ``ov_device`` ("GPU", "NPU", "AUTO", ...).

The inference precision is always set explicitly: on a CPU with AVX512-BF16 or AMX, OpenVINO's default
``INFERENCE_PRECISION_HINT`` is bf16, so an FP32 IR would silently run with 8-bit mantissas (and an FP16 IR is
upconverted to whatever the hint says). ``inference_precision="f32"`` (the default) keeps the precision the artifact
was checked at; ``"bf16"`` opts in to the faster mode, and is refused where the CPU has no native bf16. The effective
hint the compiled model reports is kept in ``inference_precision``.

Only the CPU plugin has been run here; other devices go through the same OpenVINO calls (UNVERIFIED).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union
from xml.etree import ElementTree

import numpy as np

from .._optional import require
from ..errors import BackendUnavailableError, InvalidInputError
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import DEFAULT_THRESHOLD, BasePredictor, check_threads
from .onnxruntime_backend import _check_spec_matches

INFERENCE_PRECISIONS = ("f32", "bf16")
# Devices that dispatch to others; "AUTO:GPU,CPU" names its candidates after the colon.
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def ov_device_for(device: Optional[str], ov_device: Optional[str]) -> str:
    """The OpenVINO device name: ``ov_device`` as given, else CPU for device None/'cpu'."""
    if ov_device is not None:
        if not isinstance(ov_device, str) or not ov_device.strip():
            raise InvalidInputError(f"ov_device={ov_device!r}: expected an OpenVINO device name such as 'CPU', 'GPU', 'NPU' or 'AUTO'")
        return ov_device.strip()
    if device is None or device == "cpu":
        return "CPU"
    raise InvalidInputError(f"device {device!r} is not supported by the openvino runtime; use device='cpu', "
                            f"or ov_device= for another OpenVINO device ('GPU', 'NPU', 'AUTO', ...)")


def check_ov_device(name: str, available: Sequence[str]) -> None:
    """``name`` (or, for AUTO/MULTI/HETERO/BATCH, each device it lists) must be one OpenVINO sees here."""
    base, _, listed = name.partition(":")
    wanted = [d.split("(")[0].strip() for d in listed.split(",") if d.strip()] if base.upper() in _VIRTUAL_DEVICES else [name]
    for dev in wanted:
        # "GPU" stands for "GPU.0" where several GPUs are numbered
        if not any(dev.upper() == a.upper() or a.upper().startswith(dev.upper() + ".") for a in available):
            raise BackendUnavailableError(f"OpenVINO device {dev!r} is not available here; available: {', '.join(available) or 'none'}")


def _one_line(exc: Exception, limit: int = 240) -> str:
    """OpenVINO's exceptions carry C++ source locations over several lines; keep one line of reason."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(("Exception from", "Check "))]
    text = " ".join(lines) or type(exc).__name__
    return text[:limit]


def _check_ir_files(path: Path) -> None:
    if not path.is_file():
        raise InvalidInputError(f"{path}: OpenVINO IR file not found")
    if path.suffix.lower() != ".xml":
        raise InvalidInputError(f"{path}: expected an OpenVINO IR .xml file (with its .bin beside it)")
    if not path.with_suffix(".bin").is_file():
        raise InvalidInputError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing beside it; "
                                f"copy the .xml and .bin together or re-export with lightseg-export")
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise InvalidInputError(f"{path}: not a readable OpenVINO IR (XML: {_one_line(exc)}); copy it again or re-export it with lightseg-export") from exc
    if root.tag != "net":
        raise InvalidInputError(f"{path}: not an OpenVINO IR (the XML root is <{root.tag}>, expected <net>)")


def _read_ir(path: Path) -> Any:
    """The IR frontend alone: ``core.read_model`` tries every frontend on a file the IR reader rejects, and
    TensorFlow's prints parse errors to stderr before the one-line "unable to read the model" comes back."""
    frontend = require("openvino.frontend", extra="openvino", purpose="the OpenVINO runtime")
    ir = frontend.FrontEndManager().load_by_framework("ir")
    return ir.convert(ir.load(str(path)))


def _compile_config(core: Any, device: str, inference_precision: str, threads: Optional[int],
                    cache_dir: Optional[Union[str, Path]]) -> Dict[str, Any]:
    if inference_precision not in INFERENCE_PRECISIONS:
        raise InvalidInputError(f"inference_precision={inference_precision!r}: expected one of {', '.join(INFERENCE_PRECISIONS)}")
    if inference_precision == "bf16" and device.upper() == "CPU":
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in caps:
            raise BackendUnavailableError(f"inference_precision='bf16': this CPU has no native bf16 support "
                                          f"(OpenVINO reports {', '.join(caps)}); use inference_precision='f32'")
    config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache_dir)
    return config


class OpenVINOPredictor(BasePredictor):
    runtime_kind = Runtime.OPENVINO

    def __init__(self, path: Union[str, Path], preprocess: PreprocessConfig, input_spec: Optional[InputSpec] = None,
                 device: Optional[str] = None, precision: Union[str, Precision] = Precision.FP32,
                 threshold: float = DEFAULT_THRESHOLD, threads: Optional[int] = None, inference_precision: str = "f32",
                 ov_device: Optional[str] = None, cache_dir: Optional[Union[str, Path]] = None, tta: str = "none") -> None:
        ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
        path = Path(path)
        _check_ir_files(path)
        name = ov_device_for(device, ov_device)
        threads = check_threads(threads)
        core = ov.Core()
        available = list(core.available_devices)
        check_ov_device(name, available)
        config = _compile_config(core, name, inference_precision, threads, cache_dir)
        try:
            model = _read_ir(path)
        except Exception as exc:  # OpenVINO raises RuntimeError for every kind of unreadable IR
            raise InvalidInputError(f"{path}: OpenVINO cannot read this IR ({_one_line(exc)}); copy it again or re-export it with lightseg-export") from exc
        if len(model.inputs) != 1 or len(model.outputs) < 1:
            raise InvalidInputError(f"{path}: expected one input and one logits output, the IR has {len(model.inputs)} inputs and {len(model.outputs)} outputs")
        try:
            compiled = core.compile_model(model, name, config)
        except Exception as exc:
            raise BackendUnavailableError(f"{path}: OpenVINO cannot compile this IR for {name} ({_one_line(exc)})") from exc

        inp, out = compiled.inputs[0], compiled.outputs[0]
        in_name = _tensor_name(inp, "input")
        graph_shape = _static_dims(inp.get_partial_shape())
        if len(graph_shape) != 4:
            raise InvalidInputError(f"{path}: input {in_name!r} has shape {inp.get_partial_shape()}; expected NCHW")
        if input_spec is not None:
            _check_spec_matches(path, input_spec, graph_shape, in_name)
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._ov_device = name
        self._hint = _effective_hint(compiled)
        self._ov_version = ov.get_version()
        spec = InputSpec(name=in_name, shape=graph_shape, dtype="float32", output_name=_tensor_name(out, "logits"))
        dev = "cpu" if name.upper() == "CPU" else name
        super().__init__(spec, preprocess, precision=Precision(precision), device=dev, threshold=threshold, tta=tta, source=str(path))

    @property
    def ov_device(self) -> str:
        """The OpenVINO device the model was compiled for ("CPU", "GPU.0", "AUTO", ...)."""
        return self._ov_device

    @property
    def inference_precision(self) -> Optional[str]:
        """The INFERENCE_PRECISION_HINT the compiled model reports ("f32", "bf16"); None if the device does not say."""
        return self._hint

    @property
    def compiled_model(self) -> Any:
        return self._compiled

    @property
    def openvino_version(self) -> str:
        return self._ov_version

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        # the request reuses its output buffer on the next call
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def _close(self) -> None:
        self._request = None
        self._compiled = None


def _tensor_name(port: Any, default: str) -> str:
    names = sorted(port.get_names())
    return names[0] if names else default


def _static_dims(pshape: Any) -> Tuple[Optional[int], ...]:
    return tuple(d.get_length() if d.is_static else None for d in pshape)


def _effective_hint(compiled: Any) -> Optional[str]:
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # a device without the property (some NPU plugins)
        return None
