"""LiteRT (TFLite) adapter: ``.tflite`` files through ``ai_edge_litert.interpreter.Interpreter`` on the CPU (XNNPACK).

The files ``lightseg-export --formats tflite`` writes keep the PyTorch signature: one NCHW float32 input with a static
batch and NCHW float32 logits, for FP32 and INT8 alike (the INT8 file quantises right after its input and dequantises
right before its output). A file whose input or output is itself quantised (int8/uint8/int16 with a scale and zero
point, e.g. from AEQ's plain ``static_wi8_ai8`` recipe) is also accepted: the batch is quantised with the input
tensor's scale/zero point and the logits dequantised with the output's. Only the CPU is supported: GPU/NPU delegates
are device-specific builds. No torch anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .._optional import require
from ..errors import InvalidInputError
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import DEFAULT_THRESHOLD, BasePredictor, check_threads

_FLATBUFFER_ID = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer
_QUANTIZED = (np.int8, np.uint8, np.int16)


def _dims(detail: Dict[str, Any]) -> Tuple[Optional[int], ...]:
    """A tensor's shape with dynamic dimensions (-1 in shape_signature) as None."""
    sig = detail.get("shape_signature")
    shape = sig if sig is not None and len(sig) else detail["shape"]
    return tuple(int(d) if d > 0 else None for d in shape)


def _quant(detail: Dict[str, Any]) -> Optional[Tuple[float, int]]:
    """(scale, zero point) of a per-tensor quantised tensor; None for a float tensor."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return None
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.type not in _QUANTIZED or not scale:
        return None
    return float(scale), int(zero)


class LiteRTPredictor(BasePredictor):
    runtime_kind = Runtime.LITERT

    def __init__(self, path: Union[str, Path], preprocess: PreprocessConfig, input_spec: Optional[InputSpec] = None,
                 device: Optional[str] = None, precision: Union[str, Precision] = Precision.FP32,
                 threshold: float = DEFAULT_THRESHOLD, threads: Optional[int] = None, tta: str = "none") -> None:
        if device not in (None, "cpu", "auto"):
            raise InvalidInputError(f"device {device!r} is not supported by the litert runtime; expected 'cpu' "
                                    f"(GPU/NPU delegates are not wired up)")
        threads = check_threads(threads)
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"{path}: TFLite file not found")
        _check_flatbuffer(path)
        interp_mod = require("ai_edge_litert.interpreter", extra="litert", purpose="the LiteRT runtime")
        try:
            interp = interp_mod.Interpreter(model_path=str(path), num_threads=threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            text = " ".join(str(exc).split())[:240] or type(exc).__name__
            raise InvalidInputError(f"{path}: LiteRT cannot load this model ({text}); copy it again or re-export it "
                                    f"with lightseg-export --formats tflite") from exc
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
        if len(inputs) != 1 or len(outputs) < 1:
            raise InvalidInputError(f"{path}: expected one input and one logits output, the model has {len(inputs)} "
                                    f"inputs and {len(outputs)} outputs")
        inp, out = inputs[0], outputs[0]
        in_dtype = np.dtype(inp["dtype"])
        self._in_quant = _quant(inp)
        if in_dtype != np.float32 and self._in_quant is None:
            raise InvalidInputError(f"{path}: input {inp['name']!r} has type {in_dtype}; expected float32 or a "
                                    f"quantised int8/uint8/int16 tensor with a scale")
        out_dtype = np.dtype(out["dtype"])
        self._out_quant = _quant(out)
        if out_dtype != np.float32 and self._out_quant is None:
            raise InvalidInputError(f"{path}: output {out['name']!r} has type {out_dtype}; expected float32 logits")
        shape = _dims(inp)
        if len(shape) != 4 or shape[1] != 3:
            raise InvalidInputError(f"{path}: input {inp['name']!r} has shape {list(inp['shape'])}; expected NCHW "
                                    f"(N, 3, H, W) as lightseg-export writes it")
        if input_spec is not None:
            _check_spec_matches(path, input_spec, shape)
        spec = InputSpec(name=input_spec.name if input_spec is not None else _signature_name(interp, inp["name"]),
                         shape=shape, dtype="float32",
                         output_name=input_spec.output_name if input_spec is not None else out["name"])
        self._interp = interp
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = in_dtype
        self._threads = threads
        self._cur_batch = int(inp["shape"][0])
        super().__init__(spec, preprocess, precision=Precision(precision), device="cpu", threshold=threshold, tta=tta,
                         source=str(path))

    @property
    def interpreter(self) -> Any:
        return self._interp

    @property
    def threads(self) -> Optional[int]:
        """num_threads given to the interpreter (None: LiteRT's default)."""
        return self._threads

    @property
    def quantized_io(self) -> bool:
        """True when the file's input or output tensor is itself quantised (the adapter converts)."""
        return self._in_quant is not None or self._out_quant is not None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n != self._cur_batch:  # only reachable for a dynamic-batch file (static ones are checked by the base)
            self._interp.resize_tensor_input(self._in_index, [n, *batch.shape[1:]], strict=True)
            self._interp.allocate_tensors()
            self._cur_batch = n
        if self._in_quant is not None:
            scale, zero = self._in_quant
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.rint(batch / scale) + zero, info.min, info.max).astype(self._in_dtype)
        else:
            x = batch
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_index)
        if self._out_quant is not None:
            scale, zero = self._out_quant
            y = (y.astype(np.float32) - np.float32(zero)) * np.float32(scale)
        return y

    def _close(self) -> None:
        self._interp = None


def _check_flatbuffer(path: Path) -> None:
    """LiteRT says only 'not a valid Flatbuffer buffer'; name the file and what it looks like instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the TFLite file ({exc.strerror or exc})") from exc
    if len(head) < 8 or head[4:8] != _FLATBUFFER_ID:
        what = "empty" if not head else ("an ONNX file?" if path.suffix.lower() == ".onnx" else "no TFL3 identifier")
        raise InvalidInputError(f"{path}: not a TFLite flatbuffer ({what}); expected a .tflite file written by "
                                f"lightseg-export --formats tflite")


def _signature_name(interp: Any, tensor_name: str) -> str:
    """The input's signature name ('args_0') when the file has one signature, else the tensor name."""
    try:
        sigs = interp.get_signature_list()
    except Exception:  # pragma: no cover - old runtimes without signatures
        return tensor_name
    if len(sigs) == 1:
        names = next(iter(sigs.values())).get("inputs", [])
        if len(names) == 1:
            return str(names[0])
    return tensor_name


def _check_spec_matches(path: Path, spec: InputSpec, shape: Tuple[Optional[int], ...]) -> None:
    """A manifest's or the caller's input spec must describe this file. Only the shape: tensor names differ between
    the ONNX ('input') and the TFLite signature ('args_0'), and the manifest records the ONNX's."""
    if len(spec.shape) != len(shape):
        raise InvalidInputError(f"{path}: the manifest/option says input shape {list(spec.shape)} but the model has {list(shape)}")
    for axis, (a, b) in enumerate(zip(spec.shape, shape)):
        if a is not None and b is not None and a != b:
            raise InvalidInputError(f"{path}: the manifest/option says input shape {list(spec.shape)} but the model "
                                    f"has {list(shape)} (axis {axis})")
