"""OpenVINO IR target: ``openvino-fp32/fp16/int8.xml`` (+ ``.bin``) from the checked FP32 ONNX.

- fp32 / fp16: ``openvino.convert_model`` then ``openvino.save_model``. ``save_model`` compresses weights to fp16 by
  default, so ``compress_to_fp16`` is always passed: False for fp32, True for fp16 (fp16 weight constants followed
  by a Convert to f32; the graph still computes at the runtime's inference precision).
- int8: NNCF post-training quantization of the fp32 IR, calibrated on the export's calibration images (the
  training split), fed through the same pre-processing as every runtime, one static batch at a time.
  The MIXED preset (symmetric weights, asymmetric activations) fits this family of networks, whose first layer
  reads non-negative images and whose activations are mostly non-negative (GELU/ReLU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..._optional import require
from ...errors import ExportConfigError, ExportError
from ...runtimes.registry import RUNTIMES
from ...types import Runtime
from ..images import load_inputs
from . import BuiltArtifact, Target, TargetJob

NNCF_PRESET = "mixed"


def runnable() -> Optional[str]:
    spec = RUNTIMES[Runtime.OPENVINO]
    return None if spec.available() else f"openvino is not installed ({spec.install_hint()})"


def build(job: TargetJob) -> Tuple[BuiltArtifact, ...]:
    wanted = [p for p in TARGET.precisions if p in job.precisions]
    if "int8" in wanted and job.calibration is None:
        raise ExportConfigError("--formats openvino with --int8 needs calibration images: pass --calib-data DIR")
    _telemetry_off()
    ov = require("openvino", extra="openvino", purpose="the OpenVINO export target")
    model = _convert(ov, job)
    return tuple(_BUILDERS[p](ov, model, job) for p in wanted)


def _telemetry_off() -> None:
    """OpenVINO's converter and NNCF send usage telemetry from a forked process unless a consent file in the home
    folder says no. The toolkit makes no network connections, so this process declines consent without writing that
    file (the fork would also deadlock a process that has loaded JAX, as the LiteRT converter does)."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package, nothing to send
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


def _convert(ov: Any, job: TargetJob) -> Any:
    try:
        model = ov.convert_model(str(job.onnx_fp32))
    except Exception as exc:  # OpenVINO's frontend errors are RuntimeError/OpConversionFailure with C++ traces
        raise ExportError("openvino", f"openvino.convert_model cannot convert {job.onnx_fp32.name}: {_reason(exc)}") from exc
    shape = tuple(job.input_spec.shape)
    # every non-ONNX target gets a static batch; an ONNX with a dynamic batch is pinned to the export's input spec
    if not model.inputs[0].get_partial_shape().is_static and all(isinstance(d, int) for d in shape):
        model.reshape({0: list(shape)})
    return model


def _save(ov: Any, model: Any, job: TargetJob, precision: str, compress: bool, extra: Dict[str, Any]) -> BuiltArtifact:
    key = f"openvino-{precision}"
    xml = Path(job.stage) / f"{key}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=compress)
    info = {"converter": "openvino.convert_model", "openvino": ov.__version__, "compress_to_fp16": compress, **extra}
    return BuiltArtifact(key=key, path=xml.name, precision=precision, companions=(xml.with_suffix(".bin").name,), extra=info)


def _fp32(ov: Any, model: Any, job: TargetJob) -> BuiltArtifact:
    return _save(ov, model, job, "fp32", False, {})


def _fp16(ov: Any, model: Any, job: TargetJob) -> BuiltArtifact:
    return _save(ov, model, job, "fp16", True, {})


def _int8(ov: Any, model: Any, job: TargetJob) -> BuiltArtifact:
    nncf = require("nncf", extra="openvino", purpose="OpenVINO INT8 quantization")
    batch = _static_batch(model)
    groups = _groups(job.calibration.samples, batch)
    if not groups:
        raise ExportError("openvino", f"no complete calibration batch: {len(job.calibration)} images for a static batch of {batch}")
    # decoded lazily, per batch: memory stays flat for hundreds of calibration images
    dataset = nncf.Dataset(groups, lambda group: load_inputs(group, job.preprocess))
    try:
        with _quiet_nncf(job.progress):
            # TRANSFORMER keeps NNCF from quantizing the layer-norm arithmetic (channel ReduceMean, variance, scale)
            # of the deploy forms: on UCM-Net it lifted mask agreement with fp32 from 0.985 to 0.996 (50 ISIC val images).
            quantized = nncf.quantize(model.clone(), dataset, preset=nncf.QuantizationPreset(NNCF_PRESET),
                                      model_type=nncf.ModelType.TRANSFORMER, subset_size=len(groups))
    except Exception as exc:
        raise ExportError("openvino", f"NNCF quantization failed: {_reason(exc)}") from exc
    used = [s for g in groups for s in g]
    listed = dataclasses.replace(job.calibration, samples=tuple(used))
    extra = {"quantizer": "nncf.quantize", "nncf": nncf.__version__, "preset": NNCF_PRESET, "model_type": "transformer", "subset_size": len(groups),
             "calibration": {**listed.provenance(), "batch": batch, "list_sha256": listed.list_sha256()}}
    return _save(ov, quantized, job, "int8", False, extra)


_BUILDERS = {"fp32": _fp32, "fp16": _fp16, "int8": _int8}


def _static_batch(model: Any) -> int:
    n = model.inputs[0].get_partial_shape()[0]
    return n.get_length() if n.is_static else 1


def _groups(samples: Sequence[Any], batch: int) -> List[Tuple[Any, ...]]:
    """Calibration samples in static batches; a ragged tail is dropped (as export.int8 does) rather than padded
    with repeats that would weight some images twice."""
    groups = [tuple(samples[i : i + batch]) for i in range(0, len(samples), batch)]
    return [g for g in groups if len(g) == batch]


@contextlib.contextmanager
def _quiet_nncf(progress: bool) -> Iterator[None]:
    """NNCF logs at INFO and draws rich progress bars on stdout (no switch turns them off); the export prints its own
    step table, so without --progress both are held back. Errors still raise."""
    if progress:
        yield
        return
    logger = logging.getLogger("nncf")
    levels = [(h, h.level) for h in logger.handlers] + [(logger, logger.level)]
    for obj, _ in levels:
        obj.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for obj, level in levels:
            obj.setLevel(level)


def _reason(exc: Exception) -> str:
    """One line of OpenVINO's/NNCF's message, without the C++ source locations."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(("Exception from", "Check "))]
    return (" ".join(lines) or type(exc).__name__)[:240]


# On CPUs with AVX512-BF16 OpenVINO would silently run the fp32 IR in bf16; the runtime pins f32 and bf16 is its own,
# scored setting.
TARGET = Target(name="openvino", runtime=Runtime.OPENVINO, precisions=("fp32", "fp16", "int8"), needs_torch_model=False,
                runnable=runnable, build=build, extra_scores=(("openvino-bf16", "openvino-fp32", {"inference_precision": "bf16"}),))
