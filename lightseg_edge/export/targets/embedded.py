"""Embedded-preprocessing ONNX (``--embed-preprocess``, or ``embedded`` in ``--formats``): images in, masks out.

DeepStream's nvinfer and many mobile apps feed a network a uint8 image and read its output as it is; they cannot run
the project's Python pre/post-processing, and UCM-Net's per-image min-max normalisation cannot be written as
nvinfer's fixed scale/offset. So each ONNX variant of the export (``model.onnx``, ``model.fp16.onnx``,
``model.int8.onnx``) is also written with the processing inside the graph (``model[.<precision>].embedded.onnx``)::

    image  uint8 (N, H, W, 3) RGB at the network size   -> Cast, Transpose to NCHW, normalise as lightseg.preprocess
    ... the network, unchanged ...
    logits       float32 (N, 1, H, W)
    probability  float32 (N, 1, H, W)   Sigmoid(logits)
    mask         uint8   (N, 1, H, W)   probability >= lightseg.threshold

The image must already be at the network size (nvinfer and the platform image APIs resize; a resize inside the graph
would fix one interpolation for every caller). The normalisation is the same float32 arithmetic as
``data.transforms.normalize``: ``minmax`` per image, ``(x - min) / (max - min)`` (0 where the image is flat),
``scale`` ``x / 255``, ``meanstd`` ``(x / 255 - mean) / std``, ``raw`` ``x``. The graph keeps the source's
``lightseg.*`` metadata and adds ``lightseg.embedded``, which names the input and outputs.

The files are not scored by a predictor (the predictors feed normalised NCHW float tensors); the tests check on real
images that their masks equal the plain ONNX's through the project's own pre/post-processing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..._atomic import replaced
from ..._optional import require
from ...errors import ExportError
from ...types import PreprocessConfig, Runtime
from . import BuiltArtifact, Target, TargetJob

NAME = "embedded"
PRECISIONS = ("fp32", "fp16", "int8")
SOURCES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}  # pipeline.FILE_NAMES
IMAGE, LOGITS, PROBABILITY, MASK = "image", "logits", "probability", "mask"
THRESHOLD = 0.5  # runtimes.base.DEFAULT_THRESHOLD
MIN_OPSET = 13  # ReduceMin/ReduceMax with axes as an attribute up to 17, GreaterOrEqual from 12


def runnable() -> str:
    return ("takes uint8 NHWC images and returns masks, which no predictor feeds; its masks are tested against the plain "
            "ONNX's on real images")


def file_name(precision: str) -> str:
    return SOURCES[precision].replace(".onnx", ".embedded.onnx")


def embed(src: Path, dst: Path, pre: PreprocessConfig, threshold: float = THRESHOLD) -> Path:
    """``src`` (one float32 NCHW input, one logits output) -> ``dst`` with pre/post-processing in the graph (atomic)."""
    onnx = require("onnx", purpose="the embedded-preprocessing ONNX")
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(NAME, f"{src.name}: expected one input and one output, got {len(inputs)} and {len(graph.output)}")
    net_in, net_out = inputs[0], graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in net_in.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise ExportError(NAME, f"{src.name}: expected an N x 3 x H x W input, got {dims}")
    h, w = pre.size
    if dims[2:] != [h, w]:
        raise ExportError(NAME, f"{src.name}: the input is {dims[2]}x{dims[3]} but the preprocessing resizes to {h}x{w}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ExportError(NAME, f"{src.name}: opset {opset}; the embedded processing needs {MIN_OPSET} or later")

    head, consts = _normalisation(pre, net_in.name, opset)
    raw = "embedded/network_output"  # the network's own output keeps its producer; the graph output is renamed
    for node in graph.node:
        node.output[:] = [raw if t == net_out.name else t for t in node.output]
        node.input[:] = [raw if t == net_out.name else t for t in node.input]
    tail = [
        helper.make_node("Identity", [raw], [LOGITS], name="embedded/logits"),
        helper.make_node("Sigmoid", [raw], [PROBABILITY], name="embedded/sigmoid"),
        helper.make_node("GreaterOrEqual", [PROBABILITY, "embedded/threshold"], ["embedded/above"], name="embedded/compare"),
        helper.make_node("Cast", ["embedded/above"], [MASK], to=TensorProto.UINT8, name="embedded/mask"),
    ]
    consts.append(helper.make_tensor("embedded/threshold", TensorProto.FLOAT, [], [float(threshold)]))
    nodes = head + list(graph.node) + tail
    out_dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in net_out.type.tensor_type.shape.dim]
    new = helper.make_graph(
        nodes, graph.name, [helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, [dims[0], h, w, 3])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, out_dims),
         helper.make_tensor_value_info(PROBABILITY, TensorProto.FLOAT, out_dims),
         helper.make_tensor_value_info(MASK, TensorProto.UINT8, out_dims)],
        list(graph.initializer) + consts, value_info=list(graph.value_info),
    )
    out = helper.make_model(new, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name=model.producer_name, producer_version=model.producer_version)
    for p in model.metadata_props:
        out.metadata_props.add(key=p.key, value=p.value)
    out.metadata_props.add(key="lightseg.embedded", value=json.dumps({
        "input": f"{IMAGE}: uint8 (N, {h}, {w}, 3) RGB at the network size",
        "outputs": {LOGITS: "float32 logits", PROBABILITY: "float32 sigmoid(logits)", MASK: f"uint8, probability >= {threshold:g}"},
        "normalisation": pre.mode}))
    with replaced(Path(dst)) as tmp:
        onnx.save(out, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return Path(dst)


def _normalisation(pre: PreprocessConfig, net_input: str, opset: int) -> Tuple[list, list]:
    """Nodes image (uint8 NHWC) -> ``net_input`` (float32 NCHW, normalised), and their constants."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", [IMAGE], ["embedded/float"], to=TensorProto.FLOAT, name="embedded/cast"),
             helper.make_node("Transpose", ["embedded/float"], ["embedded/x"], perm=[0, 3, 1, 2], name="embedded/nchw")]
    consts: List = []

    def const(name: str, value) -> str:
        consts.append(numpy_helper.from_array(np.asarray(value, np.float32), f"embedded/{name}"))
        return f"embedded/{name}"

    def op(kind: str, ins: List[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, ins, [out], name=f"embedded/{out.split('/')[-1]}", **attrs))
        return out

    x = "embedded/x"
    if pre.mode == "minmax":
        axes = [1, 2, 3]
        if opset >= 18:  # axes became an input of ReduceMin/ReduceMax in opset 18
            axes_t = numpy_helper.from_array(np.asarray(axes, np.int64), "embedded/axes")
            consts.append(axes_t)
            lo = op("ReduceMin", [x, "embedded/axes"], "embedded/lo", keepdims=1)
            hi = op("ReduceMax", [x, "embedded/axes"], "embedded/hi", keepdims=1)
        else:
            lo = op("ReduceMin", [x], "embedded/lo", axes=axes, keepdims=1)
            hi = op("ReduceMax", [x], "embedded/hi", axes=axes, keepdims=1)
        span = op("Sub", [hi, lo], "embedded/span")
        # uint8 levels: max > min means a span of at least 1, and a flat image (span 0) gives 0 / 1 = 0, as transforms do
        safe = op("Max", [span, const("one", 1.0)], "embedded/safe_span")
        op("Div", [op("Sub", [x, lo], "embedded/shifted"), safe], net_input)
    elif pre.mode == "scale":
        op("Div", [x, const("255", 255.0)], net_input)
    elif pre.mode == "meanstd":
        scaled = op("Div", [x, const("255", 255.0)], "embedded/scaled")
        centred = op("Sub", [scaled, const("mean", np.reshape(pre.mean, (1, 3, 1, 1)))], "embedded/centred")
        op("Div", [centred, const("std", np.reshape(pre.std, (1, 3, 1, 1)))], net_input)
    else:
        op("Identity", [x], net_input)
    return nodes, consts


def build(job: TargetJob) -> Tuple[BuiltArtifact, ...]:
    out = []
    for precision in (p for p in PRECISIONS if p in job.precisions):
        src = job.onnx_fp32 if precision == "fp32" else _variant(job, precision)
        embed(src, job.stage / file_name(precision), job.preprocess)
        out.append(BuiltArtifact(key=f"{NAME}-{precision}", path=file_name(precision), precision=precision,
                                 extra={"source": SOURCES[precision], "input": f"{IMAGE} uint8 NHWC",
                                        "outputs": [LOGITS, PROBABILITY, MASK], "normalisation": job.preprocess.mode}))
    return tuple(out)


def _variant(job: TargetJob, precision: str) -> Path:
    """A reduced-precision ONNX: made in the staging folder, or (--from-onnx in place) kept beside the FP32 source."""
    made = job.stage / SOURCES[precision]
    return made if made.is_file() else job.onnx_fp32.parent / SOURCES[precision]


TARGET = Target(name=NAME, runtime=Runtime.ONNXRUNTIME, precisions=PRECISIONS, needs_torch_model=False, runnable=runnable,
                build=build, static_batch=False)
