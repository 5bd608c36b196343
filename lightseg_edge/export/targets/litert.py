"""LiteRT (TFLite) target: the PyTorch deploy-form model -> ``model.fp32.tflite`` and ``model.int8.tflite``.

FP32: ``litert_torch.convert(model, (sample,))`` (torch.export -> StableHLO -> TFLite). It starts from the PyTorch
module, not from the ONNX: onnx2tf fails on UCM-Net's normalisation constants. The converted model keeps the PyTorch
signature: one NCHW float32 input (static batch, the ONNX's shape) and NCHW float32 logits; the conversion inserts
the NHWC transposes inside the graph, so the same preprocessing feeds every runtime.

INT8: post-training static quantisation with ai-edge-quantizer (what litert-torch uses underneath; its own
``QuantConfig`` offers PT2E, built on torch.ao.quantization that torch 2.13 deprecates), applied to the convolutions
only: CONV_2D and DEPTHWISE_CONV_2D get int8 weights (symmetric, per-channel) and int8 activations (asymmetric,
per-tensor, global min/max over ``job.calibration``); every other op (the decomposed GroupNorm/InstanceNorm/LayerNorm
MEAN/SUB/SQUARED_DIFFERENCE/RSQRT/MUL/ADD, GELU, resize, ...) stays float32, with QUANTIZE/DEQUANTIZE around each
convolution; graph input and output stay float32. This is the same split as ONNX Runtime's Q/DQ int8 of the ONNX,
and as there the convolution that reads the image stays float32. The export's ``--int8-keep`` decision
(``export.keep``, through ``TargetJob.keep``) keeps the costliest further convolutions float32: calibration runs once,
each trial re-quantises with the same ranges and is scored through the LiteRT predictor.

Why not full-integer (AEQ ``static_wi8_ai8`` on every op): measured on 50 ISIC 2018 val images vs ONNX Runtime fp32
masks (mask Dice dataset/mean/min), 1-thread XNNPACK latency vs 5.7-6.1 ms fp32: full-integer 0.973/0.974/0.81 at
17.5 ms (per-tensor int8 of the norms' inputs, whose channels differ widely in scale, then RSQRT amplifies the noise
of the low-variance channels); int16 activations for the norm ops are either refused by AEQ (SQUARED_DIFFERENCE) or
fail at run time (int16 RSQRT of a zero-quantised variance) or run 9x slower than fp32 (no XNNPACK int16 kernels);
norms kept float, rest int8: 0.984/0.984/0.89 at 7.3 ms; convolutions only: 0.984/0.984/0.80 at 6.0 ms. ONNX
Runtime Q/DQ and OpenVINO/NNCF int8 reach 0.985/0.985 on the same images; only weight-only int8 (float compute)
reaches 0.997. AEQ's default calibration is a moving average of per-image min/max (0.951 for full-integer); the
global min/max used here is better. (These figures predate the float stem and ``--int8-keep``; the README's precision
table has the current ones.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..._atomic import write_bytes_atomic
from ..._optional import is_available, require
from ...errors import ExportConfigError, ExportError
from ...types import Runtime
from . import BuiltArtifact, Target, TargetJob

log = logging.getLogger("lightseg_edge.export")

NAME = "tflite"
PRECISIONS = ("fp32", "int8")
CONVERTER = "litert-torch"
EXTRA = "litert"
SIGNATURE = "serving_default"  # litert_torch.model.DEFAULT_SIGNATURE_NAME
CALIB_CHUNK = 16  # calibration images preprocessed at a time (AEQ runs them one by one anyway)

INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")  # quantised; every other op stays float32
LAYOUT_OPS = ("TRANSPOSE", "RESHAPE")  # between the graph input and the first convolution

# What the recipe is, in words, for the manifest (see the module docstring).
INT8_RECIPE = {
    "tool": "ai-edge-quantizer",
    "recipe": "static_wi8_ai8",
    "full_integer": False,
    "ops": list(INT8_OPS),
    "float_ops": "all other ops (normalisation MEAN/SUB/SQUARED_DIFFERENCE/RSQRT/MUL/ADD, GELU, resize, ...)",
    "weights": "int8, symmetric, per-channel",
    "activations": "int8, asymmetric, per-tensor",
    "algorithm": "min_max_uniform_quant",
    "calibration": "global min/max over the calibration images",
    "io": "float32 (QUANTIZE/DEQUANTIZE around each quantised op)",
}

# Native-log lines the converter and the TFLite interpreter always write to fd 2, each harmless: absl INFO lines
# ("I0000 ... port.cc oneDNN custom operations are on", "flatbuffer_export.cc Estimated count of arithmetic ops"),
# the absl pre-init banner, TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate", torchao's optional-kernel
# probes, torch's pytree deprecation notice for torchao's enums, and AEQ's tqdm calibration bars (carriage-return
# lines). Everything else is passed through.
_NOISE = re.compile(
    r"^(?:"
    r"I\d{4} [\d:. ]+\d+ \S+\.cc:\d+\]"  # absl INFO
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|Failed to load \S*torchao\S*: Could not load this library"
    r"|W\d{4} [\d:. ]+\d+ \S*_pytree\.py:\d+\] .* is an Enum subclass"
    r"|(?:Running Calibration|Generating Quantization Parameters|Applying Transformations)[^\n]*"
    r"|\s*"
    r")"
)


def runnable() -> Optional[str]:
    """None when ``.tflite`` files can be run here (ai-edge-litert installed), else why not."""
    if is_available("ai_edge_litert"):
        return None
    return f"ai-edge-litert is not installed (pip install 'lightseg-edge[{EXTRA}]')"


# -- log noise ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration (litert-torch reads its switches from the environment on use)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Capture fd 2 (C++ logging bypasses Python) and write back every line that is not known noise.

    Nothing is dropped on failure: the captured text is written back unfiltered when the body raises, so a converter
    crash report stays visible."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            lines = [seg for line in text.splitlines() for seg in line.split("\r")]
            keep = lines if failed else [ln for ln in lines if not _NOISE.match(ln)]
            if keep:
                os.write(2, ("\n".join(keep) + "\n").encode())


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Silence litert-torch's progress tree (unless ``progress``), the Python warnings torch.export and litert-torch
    always give for these models, and the native INFO logs; errors and unknown warnings still show."""
    show = "y" if progress else "n"
    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)  # "<enum 'KernelPreference'> is an Enum subclass ..." when torchao is imported
    try:
        with _env(LITERT_TORCH_SHOW_PROGRESS=show), _native_stderr_filtered(), warnings.catch_warnings():
            # torch's pytree deprecation, raised inside torch.export's own unpickling of tree specs
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*isinstance\(treespec, LeafSpec\)")
            # AEQ's calibrator keeps every intermediate tensor on purpose (that is how it reads their ranges)
            warnings.filterwarnings("ignore", category=UserWarning, message=r".*experimental_preserve_all_tensors")
            yield
    finally:
        pytree.setLevel(level)


# -- conversion --------------------------------------------------------------------------------------------------
def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def convert_fp32(model: Any, shape: Tuple[int, ...], progress: bool = False) -> bytes:
    """The deploy-form module (eval mode) -> TFLite flatbuffer bytes, for a static NCHW float32 input ``shape``."""
    torch = require("torch", purpose="the tflite export target")
    with _quiet(progress):
        litert_torch = require("litert_torch", extra=EXTRA, purpose="the tflite export target")
        sample = torch.zeros(*shape, dtype=torch.float32)
        model = model.eval()
        with torch.no_grad():
            edge = litert_torch.convert(model, (sample,))
        return bytes(edge.model_content())


def int8_recipe(float_ops: Sequence[str] = ()) -> Any:
    """AEQ static int8 (weights and activations) on ``INT8_OPS`` only, float32 elsewhere and at the graph I/O; the ops
    whose output tensors ``float_ops`` names stay float32 too (``--int8-keep``)."""
    rm_mod = require("ai_edge_quantizer.recipe_manager", extra=EXTRA, purpose="tflite INT8 quantisation")
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    op = qtyping.TFLOperationName
    rm = rm_mod.RecipeManager()
    for name in INT8_OPS:
        rm.add_static_config(".*", getattr(op, name), activation_num_bits=8, weight_num_bits=8,
                             algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
    for tensor in float_ops:  # AEQ matches an op by its scope: its output tensor names, each followed by ";"
        rm.add_quantization_config(f"^{re.escape(tensor)};$", op.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE)
    rm.add_quantization_config(".*", op.INPUT, algorithm_key=AlgorithmName.NO_QUANTIZE)
    rm.add_quantization_config(".*", op.OUTPUT, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return rm.get_quantization_recipe()


def _calibrate(flatbuffer: bytes, recipe: Any, data: Dict[str, Any], threads: int) -> Any:
    """Tensor min/max over all calibration inputs (AEQ's ``Quantizer.calibrate`` keeps a moving average instead)."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(bytearray(flatbuffer), num_threads=threads, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(data, rm)
    return calib.get_model_qsvs()


def _interpreter(flatbuffer: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=flatbuffer)


def _signature_input_name(flatbuffer: bytes) -> str:
    sig = _interpreter(flatbuffer).get_signature_list()
    if SIGNATURE not in sig or len(sig[SIGNATURE]["inputs"]) != 1:
        raise ExportError("tflite-int8", f"the converted model's signatures are {sig}; expected one input in {SIGNATURE!r}")
    return sig[SIGNATURE]["inputs"][0]


def quantizable_ops(flatbuffer: bytes) -> Tuple[List[str], List[str]]:
    """(ops ``--int8-keep`` ranks and names, ops that read the image): output tensor names of the ``INT8_OPS`` ops in
    graph order. An op reading the graph input (through layout ops only) stays float32, as in the ONNX INT8: with
    three input channels it gains nothing from int8."""
    it = _interpreter(flatbuffer)
    tensors = {t["index"]: t["name"] for t in it.get_tensor_details()}
    image = {int(d["index"]) for d in it.get_input_details()}
    quantizable, reads_image = [], []
    for o in it._get_ops_details():
        inputs = {int(i) for i in o["inputs"]}
        if o["op_name"] in LAYOUT_OPS and inputs & image:
            image |= {int(t) for t in o["outputs"]}
        elif o["op_name"] in INT8_OPS:
            (reads_image if inputs & image else quantizable).append(tensors[o["outputs"][0]])
    return quantizable, reads_image


def int8_builder(flatbuffer: bytes, calib_batches: List[Any], threads: int = 1) -> Callable[[Sequence[str]], bytes]:
    """Calibrate once; the returned ``build(float_ops)`` makes the INT8 flatbuffer with those ops kept float32 (the
    other ops keep the ranges of the one calibration)."""
    aeq = require("ai_edge_quantizer", extra=EXTRA, purpose="tflite INT8 quantisation")
    name = _signature_input_name(flatbuffer)
    stats = _calibrate(flatbuffer, int8_recipe(), {SIGNATURE: [{name: x} for x in calib_batches]}, threads)

    def build(float_ops: Sequence[str] = ()) -> bytes:
        q = aeq.Quantizer(bytearray(flatbuffer), int8_recipe(float_ops))
        return bytes(q.quantize(stats, enable_progress_bar=False, enable_progress_report=False).quantized_model)

    return build


def _calibration_batches(job: TargetJob) -> List[Any]:
    from ..images import load_inputs

    samples = list(job.calibration.samples)
    out = []
    for start in range(0, len(samples), CALIB_CHUNK):
        x = load_inputs(samples[start:start + CALIB_CHUNK], job.preprocess)
        out.extend(x[i:i + 1] for i in range(len(x)))  # the file's batch; calibrate one image per invoke
    batch = int(job.input_spec.shape[0] or 1)
    if batch > 1:  # a static batch > 1: group images, the last group padded by repetition
        import numpy as np

        flat = np.concatenate(out)
        pad = (-len(flat)) % batch
        if pad:
            flat = np.concatenate([flat, np.repeat(flat[-1:], pad, axis=0)])
        out = [flat[i:i + batch] for i in range(0, len(flat), batch)]
    return out


def build(job: TargetJob) -> Tuple[BuiltArtifact, ...]:
    wanted = [p for p in PRECISIONS if p in job.precisions]
    if not wanted:
        return ()
    if job.model is None:
        raise ExportConfigError("the tflite target converts from the PyTorch model: export with --model NAME, not --from-onnx")
    if "int8" in wanted and (job.calibration is None or len(job.calibration) == 0):
        raise ExportConfigError("tflite int8 needs calibration images: pass --calib-data DIR (a dataset root or a folder of images)")
    shape = tuple(job.input_spec.shape)
    if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ExportConfigError(f"the tflite target needs a static NCHW input shape, got {list(shape)}; export with a fixed --batch")
    job.stage.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    try:
        fp32 = convert_fp32(job.model, shape, progress=job.progress)
    except ExportConfigError:
        raise
    except Exception as exc:  # torch.export / the MLIR lowering: one line naming the model
        raise ExportError("tflite-fp32", f"litert-torch could not convert {job.model_name or 'the model'}: {_one_line(exc)}") from exc
    out: List[BuiltArtifact] = []
    common = {"converter": CONVERTER, "versions": versions, "input_layout": "NCHW", "signature": SIGNATURE}
    if "fp32" in wanted:
        write_bytes_atomic(job.stage / "model.fp32.tflite", fp32)
        out.append(BuiltArtifact(key=f"{NAME}-fp32", path="model.fp32.tflite", precision="fp32",
                                 extra={**common, "quantisation": None}))
    if "int8" in wanted:
        try:
            int8, keep = _int8(job, fp32)
        except ExportConfigError:
            raise
        except Exception as exc:
            raise ExportError("tflite-int8", f"ai-edge-quantizer could not quantise {job.model_name or 'the model'}: {_one_line(exc)}") from exc
        write_bytes_atomic(job.stage / "model.int8.tflite", int8)
        recipe = dict(INT8_RECIPE, calibration_images=len(job.calibration))
        out.append(BuiltArtifact(key=f"{NAME}-int8", path="model.int8.tflite", precision="int8",
                                 extra={**common, "quantisation": recipe, **keep}))
    return tuple(out)


def _int8(job: TargetJob, fp32: bytes) -> Tuple[bytes, Dict[str, Any]]:
    """(INT8 flatbuffer, manifest fields) with the ops ``--int8-keep`` chose kept float32 (``job.keep``)."""
    with _quiet(job.progress):
        build = int8_builder(fp32, _calibration_batches(job))
        candidates, image_ops = quantizable_ops(fp32)
        fixed = {"float_image_ops": image_ops}
        if job.keep is None:
            return build(image_ops), fixed

        def trial(kept: Tuple[str, ...], path: Path) -> Path:
            path = path.with_suffix(".tflite")
            path.write_bytes(build(image_ops + list(kept)))
            return path

        decision = job.keep("int8", candidates, trial, Runtime.LITERT, f"{NAME}-int8")
        int8 = build(image_ops + list(decision.kept))
    log.info("%s-int8: %s", NAME, decision.summary())
    return int8, {**fixed, "keep": decision.to_dict()}


TARGET = Target(name=NAME, runtime=Runtime.LITERT, precisions=PRECISIONS, needs_torch_model=True,
                runnable=runnable, build=build)
