"""Core ML target: the PyTorch deploy-form model -> ``model.<precision>.mlpackage`` (ML Program), FP32 and FP16.

Core ML converts from PyTorch, not from ONNX (coremltools dropped its ONNX frontend), so this target needs the
module: ``lightseg-export --model NAME --formats coreml``. The module is traced with ``torch.jit.trace`` on a sample
of the export's static input shape and converted with ``coremltools.convert(convert_to="mlprogram")``; the input and
output keep the ONNX names and FP32 I/O (the FP16 package computes in FP16 but takes and returns float32, like
``model.fp16.onnx``). The minimum deployment target is iOS 16 / macOS 13, the first with FP16 ML Program I/O and the
ops our models use (``layer_norm``, ``gelu``, ``upsample_bilinear``).

Core ML runs only on Apple platforms. On Linux coremltools converts and saves but cannot load a model for prediction
(its native ``libcoremlpython`` is not shipped there), so ``runnable()`` says why and the export checks the package
statically instead (:func:`check_package`: the spec is re-read from disk without compiling, the input/output names,
shapes and types are compared with the export's, and the weight precision is read from the ML Program's constants).
No accuracy is recorded for it here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from ..._hashing import artifact_bytes
from ..._optional import is_available, require
from ...errors import ExportConfigError, ExportError, InvalidInputError
from ...types import InputSpec, Runtime
from . import BuiltArtifact, Target, TargetJob

PRECISIONS = ("fp32", "fp16")
MINIMUM_DEPLOYMENT_TARGET = "iOS16"  # coremltools.target.iOS16 (macOS 13): ML Program v7, FP16 I/O, our ops
_STEP = "coreml"

# coremltools prints these on import or conversion on a machine it was not built/tested for; none is an error.
_NOISE = re.compile(
    r"Failed to load _ML\w+Proxy"  # no libcoremlpython on Linux: predictions impossible, conversion fine
    r"|has not been tested with coremltools"  # torch newer than coremltools' test matrix
    r"|scikit-learn version .* is not supported"
    r"|Failed to load .*torchao.*\.so|Detected no triton"  # torchao, imported by coremltools, on a CPU machine
    r"|is an Enum subclass and is now natively supported by torch\.compile"  # torchao/torch deprecation notice
)
_NOISY_LOGGERS = ("coremltools", "torchao", "torchao.kernel.intmm", "torch.utils._pytree")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not _NOISE.search(record.getMessage())
        except Exception:  # a record whose message cannot be formatted is not ours to drop
            return True


@contextlib.contextmanager
def quiet_coremltools(progress: bool = False) -> Iterator[io.StringIO]:
    """Drop coremltools' known import/convert chatter (only the messages matched by ``_NOISE``: every other warning
    and every exception still comes through) and, unless ``progress``, its tqdm bars. Yields the captured stderr."""
    flt = _DropNoise()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for lg in loggers:
        lg.addFilter(flt)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*has not been tested with coremltools.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"coremltools(\..*)?")
            if progress:
                yield buf
            else:
                real = sys.stderr
                try:
                    with contextlib.redirect_stderr(buf):  # tqdm bars ("Converting PyTorch Frontend ==> MIL Ops")
                        yield buf
                finally:
                    rest = _without_bars(buf.getvalue())  # anything else written to stderr is passed on
                    if rest:
                        real.write(rest)
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


_BAR = re.compile(r"\d+%\|.*\|.*\[|^\s*$")


def _without_bars(text: str) -> str:
    """stderr text minus tqdm progress-bar frames (split on carriage returns) and coremltools' known noise."""
    keep = [seg for line in text.split("\n") for seg in line.split("\r")
            if not _BAR.search(seg) and not _NOISE.search(seg)]
    return "".join(seg + "\n" for seg in keep)


def import_coremltools(progress: bool = False) -> Any:
    with quiet_coremltools(progress):
        return require("coremltools", extra="coreml", purpose="the Core ML export target")


def runnable() -> Optional[str]:
    """None where Core ML packages can be run here (macOS with coremltools), else why not."""
    if sys.platform != "darwin":
        return "Core ML predictions need macOS (coremltools cannot run models on Linux or Windows)"
    if not is_available("coremltools"):
        return "coremltools is not installed: pip install 'lightseg-edge[coreml]'"
    return None


def _static_shape(spec: InputSpec) -> Tuple[int, ...]:
    shape = tuple(spec.shape)
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ExportConfigError(f"the coreml target needs a static input shape, got {list(shape)}: "
                                f"export with --batch N instead of --dynamic-batch")
    return shape


def check_package(path: Any, input_spec: InputSpec) -> Dict[str, Any]:
    """Statically check a saved .mlpackage against the export's input spec; returns what it found.

    Re-reads the spec from disk (``coremltools.utils.load_spec``: no compilation, works on Linux), checks it is an
    ML Program with one float32 input ``input_spec.name`` of ``input_spec.shape`` and an output named
    ``input_spec.output_name``, and reads the weight precision from the program's constants (blob-file tensors, i.e.
    the weights, by element type). Raises InvalidInputError, one line, on any mismatch.
    """
    ct = import_coremltools()
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2  # noqa: PLC0415 (coremltools is optional)

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise InvalidInputError(f"{path}: not an .mlpackage (no Manifest.json)")
    with quiet_coremltools():
        spec = ct.utils.load_spec(str(path))
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise InvalidInputError(f"{path}: a Core ML {kind} model; expected an ML Program")
    ins, outs = list(spec.description.input), list(spec.description.output)
    if len(ins) != 1 or len(outs) != 1:
        raise InvalidInputError(f"{path}: {len(ins)} inputs and {len(outs)} outputs; expected one image input and one logits output")
    arr_type = FeatureTypes_pb2.ArrayFeatureType
    found: Dict[str, Any] = {}
    for role, feat, want_name in (("input", ins[0], input_spec.name), ("output", outs[0], input_spec.output_name)):
        if feat.name != want_name:
            raise InvalidInputError(f"{path}: {role} is named {feat.name!r}; expected {want_name!r}")
        if feat.type.WhichOneof("Type") != "multiArrayType":
            raise InvalidInputError(f"{path}: {role} {feat.name!r} is a {feat.type.WhichOneof('Type')}; expected a multi-array")
        ma = feat.type.multiArrayType
        dtype = arr_type.ArrayDataType.Name(ma.dataType)
        shape = [int(d) for d in ma.shape]
        if dtype != "FLOAT32":
            raise InvalidInputError(f"{path}: {role} {feat.name!r} is {dtype}; expected FLOAT32 I/O")
        found[f"{role}_shape"] = shape
        found[f"{role}_dtype"] = "float32"
    want_in = [int(d) for d in input_spec.shape]
    if found["input_shape"] != want_in:
        raise InvalidInputError(f"{path}: input shape {found['input_shape']}; expected {want_in}")
    want_out = [want_in[0], 1, want_in[2], want_in[3]]
    if found["output_shape"] and found["output_shape"] != want_out:
        raise InvalidInputError(f"{path}: output shape {found['output_shape']}; expected {want_out}")

    # weights: the ML Program's const ops whose values live in the weight blob (small constants are inline)
    elements: Dict[str, int] = {}
    fn = spec.mlProgram.functions.get("main")
    if fn is None:
        raise InvalidInputError(f"{path}: the ML Program has no 'main' function")
    block = fn.block_specializations[fn.opset]
    for op in block.operations:
        if op.type != "const" or "val" not in op.attributes:
            continue
        val = op.attributes["val"]
        if val.WhichOneof("value") != "blobFileValue":
            continue
        tt = val.type.tensorType
        n = 1
        for d in tt.dimensions:
            n *= int(d.constant.size) if d.WhichOneof("dimension") == "constant" else 1
        name = MIL_pb2.DataType.Name(tt.dataType)
        elements[name] = elements.get(name, 0) + n
    floats = {k: v for k, v in elements.items() if k.startswith("FLOAT")}
    if not floats:
        weight_precision = "none"
    elif set(floats) == {"FLOAT16"}:
        weight_precision = "fp16"
    elif set(floats) == {"FLOAT32"}:
        weight_precision = "fp32"
    else:
        weight_precision = "mixed"
    found.update(
        format="mlprogram",
        spec_version=int(spec.specificationVersion),
        opset=str(fn.opset),
        weight_precision=weight_precision,
        weight_elements=dict(sorted(elements.items())),
        size_bytes=artifact_bytes(path),
    )
    return found


def _convert(ct: Any, traced: Any, spec: InputSpec, shape: Tuple[int, ...], precision: str, progress: bool) -> Any:
    import numpy as np  # noqa: PLC0415

    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    with quiet_coremltools(progress):
        return ct.convert(
            traced,
            source="pytorch",
            inputs=[ct.TensorType(name=spec.name, shape=shape, dtype=np.float32)],
            outputs=[ct.TensorType(name=spec.output_name, dtype=np.float32)],
            convert_to="mlprogram",
            compute_precision=compute,
            minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
        )


def build(job: TargetJob) -> Tuple[BuiltArtifact, ...]:
    if job.model is None:
        raise ExportConfigError("the coreml target converts from the PyTorch model: export with --model NAME "
                                "(not --from-onnx)")
    wanted = [p for p in job.precisions if p in PRECISIONS] or ["fp32"]
    shape = _static_shape(job.input_spec)
    torch = require("torch", purpose="the Core ML export target")
    ct = import_coremltools(job.progress)

    model = job.model.eval()
    sample = torch.rand(*shape)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            # torch 2.13 deprecates jit.trace; coremltools 9.0's torch.export path fails on our models
            # (max_pool2d "got 2 input(s), expected minimum 3"), so tracing stays the converter's input for now
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"`torch\.jit\.trace(_method)?` is deprecated")
            traced = torch.jit.trace(model, sample)
    except Exception as exc:
        raise ExportError(_STEP, f"torch.jit.trace failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from exc

    out = []
    for precision in wanted:
        name = f"model.{precision}.mlpackage"
        dest = Path(job.stage) / name
        try:
            mlmodel = _convert(ct, traced, job.input_spec, shape, precision, job.progress)
        except Exception as exc:
            msg = " ".join(str(exc).split())[:240]
            raise ExportError(_STEP, f"coremltools {ct.__version__} could not convert the model to {precision} "
                                     f"({type(exc).__name__}: {msg})") from exc
        if dest.exists():
            shutil.rmtree(dest)
        with quiet_coremltools(job.progress):
            mlmodel.save(str(dest))
        check = check_package(dest, job.input_spec)
        if check["weight_precision"] not in (precision, "none"):
            raise ExportError(_STEP, f"{name}: asked for {precision} but its weights are {check['weight_precision']}")
        out.append(BuiltArtifact(
            key=f"coreml-{precision}",
            path=name,
            precision=precision,
            extra={
                "converter": "coremltools.convert(torch.jit.trace)",
                "coremltools": ct.__version__,
                "minimum_deployment_target": MINIMUM_DEPLOYMENT_TARGET,
                "compute_precision": "FLOAT16" if precision == "fp16" else "FLOAT32",
                "check": check,
            },
        ))
    return tuple(out)


TARGET = Target(
    name="coreml",
    runtime=Runtime.COREML,
    precisions=PRECISIONS,
    needs_torch_model=True,
    runnable=runnable,
    build=build,
)
