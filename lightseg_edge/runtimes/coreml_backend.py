"""Core ML adapter: an ``.mlpackage`` made by the coreml export target, run by Core ML on macOS.

Core ML runs only on Apple platforms (macOS, iOS, iPadOS). On any other system the constructor raises
BackendUnavailableError at once, before importing coremltools (which on Linux can convert and save models but not
load them for prediction: its native ``libcoremlpython`` is not shipped there).

UNVERIFIED: the macOS path is written against coremltools' documented API (``coremltools.models.MLModel(path,
compute_units=ComputeUnit.X)``, ``MLModel.predict({input_name: array}) -> {output_name: array}``,
``MLModel.get_spec()``) and has not been run: there is no Mac here. The input/output names, shapes and float32 I/O it
expects are those the export target writes and checks statically (lightseg_edge.export.targets.coreml.check_package).
No torch import.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np

from .._optional import require
from ..errors import BackendUnavailableError, InvalidInputError
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import DEFAULT_THRESHOLD, BasePredictor

# compute_units= values -> coremltools.ComputeUnit member names
COMPUTE_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU",
                 "cpu_and_ne": "CPU_AND_NE", "ane": "CPU_AND_NE"}


def _platform_problem(path: Path) -> Optional[str]:
    if sys.platform == "darwin":
        return None
    system = {"linux": "Linux", "win32": "Windows", "cygwin": "Windows"}.get(sys.platform, sys.platform)
    return (f"{path}: Core ML models run only on macOS/iOS (coremltools cannot load them for prediction elsewhere); "
            f"this machine is {system}. Use the ONNX artifacts here, or copy the .mlpackage to a Mac")


class CoreMLPredictor(BasePredictor):
    """``.mlpackage`` -> Core ML on macOS. See the module docstring: the macOS path is UNVERIFIED (no Mac here)."""

    runtime_kind = Runtime.COREML

    def __init__(self, path: Union[str, Path], preprocess: PreprocessConfig, input_spec: Optional[InputSpec] = None,
                 device: Optional[str] = None, precision: Union[str, Precision] = Precision.FP32,
                 threshold: float = DEFAULT_THRESHOLD, compute_units: str = "all", tta: str = "none") -> None:
        path = Path(path)
        problem = _platform_problem(path)  # first, and without coremltools: the answer on Linux is always "no"
        if problem:
            raise BackendUnavailableError(problem)
        key = str(compute_units).lower()
        if key not in COMPUTE_UNITS:
            raise InvalidInputError(f"compute_units={compute_units!r}: expected one of {', '.join(COMPUTE_UNITS)}")
        if device not in (None, "auto", "cpu"):
            raise InvalidInputError(f"device {device!r} is not supported by the coreml runtime; Core ML picks the "
                                    f"processor itself: use compute_units= ({', '.join(COMPUTE_UNITS)})")
        if not (path.is_dir() and (path / "Manifest.json").is_file()):
            raise InvalidInputError(f"{path}: not an .mlpackage folder (no Manifest.json)")
        ct = require("coremltools", extra="coreml", purpose="the Core ML runtime")
        try:
            model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[key]))
        except Exception as exc:  # compilation/load errors come as RuntimeError or Core ML's own types
            raise InvalidInputError(f"{path}: Core ML cannot load this package ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:240]}); re-export it with lightseg-export") from exc
        in_name, shape, out_name = _io(model.get_spec(), path)
        if input_spec is not None:
            if input_spec.name != in_name:
                raise InvalidInputError(f"{path}: the manifest/option names the input {input_spec.name!r} but the package's input is {in_name!r}")
            for axis, (a, b) in enumerate(zip(input_spec.shape, shape)):
                if a is not None and a != b:
                    raise InvalidInputError(f"{path}: the manifest/option says input shape {list(input_spec.shape)} but the package has {list(shape)} (axis {axis})")
        self._model: Any = model
        self._in_name, self._out_name = in_name, out_name
        self._compute_units = key
        spec = InputSpec(name=in_name, shape=shape, dtype="float32", output_name=out_name)
        super().__init__(spec, preprocess, precision=Precision(precision), device=f"coreml:{key}",
                         threshold=threshold, tta=tta, source=str(path))

    @property
    def compute_units(self) -> str:
        return self._compute_units

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        out = self._model.predict({self._in_name: batch})
        if self._out_name not in out:
            raise InvalidInputError(f"{self._source}: Core ML returned {sorted(out)}; expected the output {self._out_name!r}")
        return np.asarray(out[self._out_name], dtype=np.float32)

    def _close(self) -> None:
        self._model = None


def _io(spec: Any, path: Path) -> Tuple[str, Tuple[int, ...], str]:
    """The package's single input (name, static NCHW shape) and output name, from its spec."""
    ins, outs = list(spec.description.input), list(spec.description.output)
    if len(ins) != 1 or len(outs) != 1:
        raise InvalidInputError(f"{path}: {len(ins)} inputs and {len(outs)} outputs; expected one image input and one logits output")
    inp = ins[0]
    if inp.type.WhichOneof("Type") != "multiArrayType":
        raise InvalidInputError(f"{path}: input {inp.name!r} is a {inp.type.WhichOneof('Type')}; expected a multi-array (tensor) input")
    shape = tuple(int(d) for d in inp.type.multiArrayType.shape)
    if len(shape) != 4:
        raise InvalidInputError(f"{path}: input {inp.name!r} has shape {list(shape)}; expected NCHW")
    return inp.name, shape, outs[0].name
