"""INT8 Q/DQ ONNX with ONNX Runtime static quantization, calibrated on real training images.

The Q/DQ graph is what TensorRT's explicit quantization parses (the implicit INT8 calibrators were deprecated in
TensorRT 10.1 and removed in 11.0). TensorRT accepts only part of what ``quantize_static`` can emit, so the
settings are fixed (NVIDIA's TensorRT Developer Guide on explicit quantization, and the ONNX Runtime
quantization documentation):
- ``QuantFormat.QDQ``, signed INT8 activations and weights, both symmetric: every zero point is 0;
- weights per channel (axis 0 of Conv/Gemm), activations per tensor;
- ``QuantizeBias=False``: the default int32 bias DequantizeLinear is rejected by the TensorRT ONNX parser;
- ``AddQDQPairToWeight=True``: FP32 weights behind a Q->DQ pair, which TensorRT 8.x needs and 10/11 accept;
- only the inputs of weighted layers (Conv, ConvTranspose, Gemm, MatMul) are quantized, as TensorRT places INT8
  (and Ultralytics' INT8 ONNX export does); normalisations, resizes and the rest stay FP32. Their outputs are not
  (``OpTypesToExcludeOutputQuantization``; by default ONNX Runtime also puts a Q/DQ pair on every Conv output, so the
  normalisation after it reads INT8-rounded values: on UCM-Net, 100 ISIC val images, mask agreement with FP32 went
  from 0.9864 to 0.9908 without them), and a tensor read by a weighted layer and by another op (a residual Add) is
  FP32 for the other op (``_only_weighted_inputs``; 0.9905, the same within noise, and a layer kept FP32 by
  ``--int8-keep`` is then exactly FP32);
- the layer that reads the image itself stays FP32: with 3 input channels it gains nothing from INT8, and a
  non-negative image loses a bit to symmetric quantization. On UCM-Net (trained, 100 ISIC val images, 200
  calibration images) this cut the INT8 mDice loss from 0.022 to 0.004.
- so do the MatMuls that compute channel statistics (a constant (1 x C) row times the activation: the deploy forms'
  LayerNorm and spatial-gate means), which are reductions, not learned layers (``statistics_layers``). The calibration methods and the ModelOpt
  route are compared on Dice by ``benchmarks/int8_methods.py``.
``check_qdq_for_tensorrt`` re-reads the result and fails the export if any of these rules is broken.

``CalibMaxIntermediateOutputs`` is deliberately not used: in onnxruntime 1.32 ``collect_data`` clears the buffered
outputs without merging them, so every batch before the last chunk would be lost. MinMax calibration only keeps two
scalars per tensor and image anyway.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .._atomic import replaced
from .._optional import require
from ..data.io import read_image
from ..data.transforms import preprocess
from ..errors import ExportError
from ..types import PreprocessConfig
from .images import ImageSet
from .onnx_export import check_onnx

log = logging.getLogger("lightseg_edge.export")

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "AddQDQPairToWeight": True,
    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
}
# The output-channel axis of the weight; Gemm/MatMul depend on transB / layout, so they are not checked.
ENTROPY_BINS = 2048  # TensorRT's entropy calibrator histogram
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}


@dataclass(frozen=True)
class Int8Result:
    path: Path
    calibration: Dict
    quantize_linear: int
    per_channel_weights: int
    preprocess: str

    def summary(self) -> str:
        c = self.calibration
        return (
            f"{self.path.name}: Q/DQ INT8 ({self.quantize_linear} QuantizeLinear, {self.per_channel_weights} per-channel weights), "
            f"{c['method']} calibration on {c['images']} {c['split']} images, list sha256 {c['list_sha256'][:12]}"
        )


def _reader(images: ImageSet, cfg: PreprocessConfig, input_name: str, batch: int, progress: bool):
    """A CalibrationDataReader that decodes images lazily (memory stays flat for 500 images) with a tqdm bar."""
    quant = require("onnxruntime.quantization", extra="export", purpose="INT8 quantization")
    from tqdm import tqdm

    class _ImageReader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self.groups = [images.samples[i : i + batch] for i in range(0, len(images.samples), batch)]
            if len(self.groups) > 1 and len(self.groups[-1]) < batch:
                self.groups.pop()  # a static-batch graph takes exactly `batch` images; drop the ragged tail
            self.used = sum(len(g) for g in self.groups)
            self.rewind()

        def rewind(self) -> None:
            self.it = iter(self.groups)
            self.bar = tqdm(total=len(self.groups) * batch, desc="INT8 calibration", unit="img", disable=not progress, leave=False)

        def get_next(self):
            group = next(self.it, None)
            if group is None:
                self.bar.close()
                return None
            x = np.stack([preprocess(read_image(s.image), cfg) for s in group])
            if len(x) < batch:
                x = np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])
            self.bar.update(len(x))
            return {input_name: x}

    return _ImageReader()


def _entropy_ranges(model: Path, reader, work: Path) -> Path:
    """Entropy (KL) calibration ranges with TensorRT's histogram (``ENTROPY_BINS`` bins searched for the best
    128-level threshold), as a calibration cache for ``quantize_static``.

    ``quantize_static`` builds its entropy calibrator with 128 bins and 128 quantized bins, so the search has a single
    candidate, the full range: every scale equals MinMax's (checked on UCM-Net: all 104), at 9x the time and memory.
    The histogram keeps every tensor's values in memory (8.7 GB for UCM-Net on 400 images at 256x256)."""
    quant = require("onnxruntime.quantization", extra="export", purpose="INT8 quantization")
    from onnxruntime.quantization.calibrate import save_tensors_data

    calibrator = quant.create_calibrator(
        model, list(QUANTIZED_OPS), augmented_model_path=str(work / "augmented.onnx"), calibrate_method=quant.CalibrationMethod.Entropy,
        extra_options={"symmetric": True, "num_bins": ENTROPY_BINS, "num_quantized_bins": 128},
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its settings and stages
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    cache = work / "entropy-ranges.json"
    save_tensors_data(ranges, cache)
    reader.rewind()
    return cache


def _pre_process(src: Path, dst: Path) -> str:
    """ORT's recommended quantization pre-processing (ONNX shape inference + basic graph optimisation).

    Its symbolic shape inference is skipped: it fails on graphs with ``Resize(x, '', scales)`` (seen
    here) and on failure onnxruntime dumps ``sym_shape_infer_temp.onnx`` into the current directory. The
    model is used as it is if pre-processing fails altogether.
    """
    shape_inference = require("onnxruntime.quantization.shape_inference", extra="export", purpose="INT8 quantization")
    try:
        shape_inference.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return "quant_pre_process(skip_symbolic_shape=True)"
    except Exception as exc:
        log.debug("quant_pre_process failed: %s", exc)
    import shutil

    shutil.copyfile(src, dst)
    return "none (quant_pre_process failed)"


def _strip_unused_domains(model) -> None:
    """quant_pre_process saves ORT's whole opset list (com.microsoft.nchwc, ...); keep only domains nodes use."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def image_layers(model) -> List[str]:
    """Names of the weighted layers that read the graph input directly (kept FP32)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input if i.name not in inits}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.input and n.input[0] in inputs]


def statistics_layers(model) -> List[str]:
    """Names of the MatMuls whose left operand is a constant: a fixed reduction of the activation (a channel mean
    written as a (1 x C) MatMul by the ONNX Runtime deploy forms), not a learned layer (kept FP32: an INT8-rounded
    mean or variance would shift every normalised value after it)."""
    inits = {i.name for i in model.graph.initializer}
    consts = inits | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input and n.input[0] in consts]


def float_layers(model) -> List[str]:
    """The weighted layers every INT8 export keeps FP32: the image layers and the statistics MatMuls."""
    return list(dict.fromkeys(image_layers(model) + statistics_layers(model)))


def check_qdq_for_tensorrt(model) -> Tuple[List[str], int, int]:
    """(problems, QuantizeLinear count, per-channel weight count): every rule TensorRT's parser enforces."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers: Dict[str, List] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    problems, nq, per_channel = [], 0, 0
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        nq += n.op_type == "QuantizeLinear"
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None:
            if zp.data_type != TensorProto.INT8:
                problems.append(f"{n.name}: zero point of type {TensorProto.DataType.Name(zp.data_type)} (TensorRT needs INT8)")
            elif np.any(numpy_helper.to_array(zp) != 0):
                problems.append(f"{n.name}: non-zero zero point (TensorRT supports symmetric quantization only)")
        if n.op_type == "QuantizeLinear" and n.input[0] in inits and numpy_helper.to_array(inits[n.input[1]]).size > 1:
            per_channel += 1
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            users = [u for dq in consumers.get(n.output[0], []) for u in consumers.get(dq.output[0], [])]
            for u in users:
                want = _WEIGHT_AXIS.get(u.op_type)
                if want is not None and axis != want:
                    problems.append(f"{n.name}: per-channel weight axis {axis} for {u.op_type} (expected the output-channel axis {want})")
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT32:
            problems.append(f"{n.name}: int32 (bias) DequantizeLinear, which the TensorRT parser rejects")
        activation_q = n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[1] in inits
        if activation_q and numpy_helper.to_array(inits[n.input[1]]).size > 1:
            problems.append(f"{n.name}: per-channel activation scale (TensorRT expects per-tensor activations)")
    return problems, nq, per_channel


def quantized_layers(path: Path) -> List[str]:
    """Names of the weighted layers of a Q/DQ ONNX that read a DequantizeLinear output (the ones ``--int8-keep`` can
    keep FP32), in graph order."""
    onnx = require("onnx", purpose="INT8 quantization")
    model = onnx.load(str(path), load_external_data=False)
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and any(t in dq for t in n.input)]


def keep_float(src: Path, dst: Path, names: Sequence[str]) -> Path:
    """The Q/DQ graph ``src`` with the layers ``names`` reading FP32 again (atomic ``dst``, may be ``src``).

    Each input of a kept layer that comes through Q->DQ is rewired to the tensor before the QuantizeLinear; a weight
    stored as INT8 behind a DequantizeLinear alone becomes an FP32 initializer of the dequantized values. The Q/DQ
    nodes nobody reads any more are removed. The other layers keep their scales, so the ranges stay those of the
    calibration."""
    onnx = require("onnx", purpose="INT8 quantization")
    model = onnx.load(str(src))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    wanted = set(names)
    for node in graph.node:
        if node.name in wanted:
            for i, t in enumerate(node.input):
                node.input[i] = _float_source(graph, producer, t)
    _drop_dead_qdq(graph)
    with replaced(Path(dst)) as tmp:
        onnx.save(model, str(tmp))
        check_onnx(tmp)
    return Path(dst)


def recount(result: Int8Result, path: Path) -> Int8Result:
    """``result`` with the Q/DQ counts of ``path`` (after ``keep_float``), re-checked against TensorRT's rules."""
    onnx = require("onnx", purpose="INT8 quantization")
    problems, nq, per_channel = check_qdq_for_tensorrt(onnx.load(str(path)))
    if problems:
        raise ExportError("int8", "the Q/DQ graph is not TensorRT-parseable: " + "; ".join(problems[:5]))
    return replace(result, path=Path(path), quantize_linear=nq, per_channel_weights=per_channel)


def _only_weighted_inputs(graph) -> None:
    """ONNX Runtime gives a quantized tensor one Q/DQ pair that every consumer reads, so an Add or a normalisation
    beside a Conv on the same tensor reads INT8-rounded values. Those consumers read the FP32 tensor again: only the
    inputs of ``QUANTIZED_OPS`` go through Q/DQ, and a layer kept FP32 (``keep_float``) is exactly the FP32 model's."""
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS + ("QuantizeLinear", "DequantizeLinear"):
            for i, t in enumerate(node.input):
                node.input[i] = _float_source(graph, producer, t)
    _drop_dead_qdq(graph)


def _float_source(graph, producer: Dict, tensor: str) -> str:
    """The FP32 tensor behind ``tensor`` when it is a DequantizeLinear output, else ``tensor``."""
    from onnx import numpy_helper

    dq = producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return tensor
    q = producer.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return q.input[0]
    inits = {i.name: i for i in graph.initializer}
    if dq.input[0] not in inits:
        return tensor
    values = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 and dq.input[2] else 0.0
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shape = [1] * values.ndim
    if np.ndim(scale) == 1 and values.ndim:
        shape[axis] = -1
    name = f"{dq.input[0]}_fp32"
    if name not in inits:
        graph.initializer.append(numpy_helper.from_array((values - np.reshape(zero, shape)) * np.reshape(scale, shape), name))
    return name


def _drop_dead_qdq(graph) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then the initializers nobody reads."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {t for n in graph.node for t in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {t for n in graph.node for t in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def quantize_int8(
    src: Path, dst: Path, images: ImageSet, cfg: PreprocessConfig, batch: int = 1, method: str = "minmax", progress: bool = True,
    quantizer: str = "ort",
) -> Int8Result:
    """FP32 ONNX ``src`` -> Q/DQ INT8 ONNX ``dst`` calibrated on ``images`` (atomic), with ONNX Runtime's static
    quantization or (``quantizer="modelopt"``) NVIDIA ModelOpt's (``int8_modelopt``)."""
    if quantizer == "modelopt":
        from .int8_modelopt import quantize_int8_modelopt

        return quantize_int8_modelopt(src, dst, images, cfg, batch, method, progress)
    onnx = require("onnx", purpose="INT8 quantization")
    quant = require("onnxruntime.quantization", extra="export", purpose="INT8 quantization")
    from .onnx_export import graph_io

    src, dst = Path(src), Path(dst)
    input_name = graph_io(src)[0]
    methods = {
        "minmax": quant.CalibrationMethod.MinMax,
        "entropy": quant.CalibrationMethod.Entropy,
        "percentile": quant.CalibrationMethod.Percentile,
    }
    reader = _reader(images, cfg, input_name, batch, progress)
    if reader.used == 0:
        raise ExportError("int8", f"no complete calibration batch: {len(images)} images for a static batch of {batch}")
    with tempfile.TemporaryDirectory(prefix="lightseg-int8-") as work, replaced(dst) as tmp:
        pre = Path(work) / "pre.onnx"
        pre_label = _pre_process(src, pre)
        excluded = float_layers(onnx.load(str(pre), load_external_data=False))
        cache = _entropy_ranges(pre, reader, Path(work)) if method == "entropy" else None
        quant.quantize_static(
            str(pre),
            str(tmp),
            None if cache else reader,
            quant_format=quant.QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=False,
            activation_type=quant.QuantType.QInt8,
            weight_type=quant.QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=excluded,
            extra_options=dict(EXTRA_OPTIONS),
            calibration_cache_path=cache,
        )
        model = onnx.load(str(tmp))
        _strip_unused_domains(model)
        _only_weighted_inputs(model.graph)
        problems, nq, per_channel = check_qdq_for_tensorrt(model)
        if problems:
            raise ExportError("int8", "the Q/DQ graph is not TensorRT-parseable: " + "; ".join(problems[:5]))
        if nq == 0:
            raise ExportError("int8", "quantization inserted no QuantizeLinear node (no Conv/Gemm/MatMul found?)")
        onnx.save(model, str(tmp))
        check_onnx(tmp)
    calibration = {
        **images.provenance(),
        "images": reader.used,
        "method": method,
        "batch": batch,
        "list_sha256": ImageSet(
            images.root, images.layout, images.split, images.samples[: reader.used], images.available, images.seed
        ).list_sha256(),
        "preprocess": cfg.to_dict(),
        "quantizer": {
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "activations": "int8 symmetric per-tensor",
            "weights": "int8 symmetric per-channel",
            "ops": list(QUANTIZED_OPS),
            "extra_options": dict(EXTRA_OPTIONS),
            "pre_process": pre_label,
            "kept_fp32": excluded,
        },
    }
    return Int8Result(dst, calibration, nq, per_channel, pre_label)
