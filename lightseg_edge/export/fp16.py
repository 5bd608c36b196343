"""FP16 ONNX with FP32 inputs and outputs (``keep_io_types``), with a measured overflow check.

Precision goes into the graph's tensor types (TensorRT 10.12 deprecated and 11.0 removed the FP16 builder flag), so
a strongly-typed TensorRT network runs exactly what this file says. The conversion is ONNX Runtime's
``onnxruntime.transformers.float16.convert_float_to_float16`` (onnxconverter-common is not a dependency).

Overflow check. FP16 tops out at 65504. Before converting, the FP32 graph runs on real images with every float
tensor exposed, and a node is kept in FP32 (``node_block_list``) when
- any of its float inputs or outputs reaches ``FP16_LIMIT`` (65504 / 4: headroom for images brighter or larger
  than the ones checked), or
- it is a normalisation or reduction (``SENSITIVE_OPS``) whose accumulation over one reduction group,
  ``max(sum x^2, sum |x|)`` taken over the FP32 input, reaches ``FP16_LIMIT``: a kernel that accumulates in FP16
  would overflow there (the classic "LayerNorm in FP16" failure; UCM-Net's spatial InstanceNorm spans up to 65,536
  elements, EGE-UNet's hand-written LayerNorm squares 0-255 inputs).
Blocking a node whose output is too large also blocks its consumers (their input is the same tensor), so FP32
spreads exactly as far as the large values do. Without check images, every normalisation and reduction stays FP32.
ONNX Runtime's own default block list (ops without FP16 kernels) is kept as well.

After the conversion, a kept-FP32 node reads FP32 values only: FP16 round trips between two FP32 nodes are dropped
(``drop_fp16_round_trips``), and constants the converter turned into FP16 and cast back (Constant(fp16) ->
Cast(fp32), e.g. InstanceNormalization's ``scale`` and ``B``) are folded into FP32 initializers holding the same
values (``fold_constant_casts``), and the Constant nodes FP16 normalisations read as parameters become initializers
(``parameters_as_initializers``): TensorRT 8.5 and 8.6 import InstanceNormalization only with initializer parameters.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._atomic import replaced
from .._optional import require
from .onnx_export import check_onnx

log = logging.getLogger("lightseg_edge.export")

FP16_MAX = 65504.0
FP16_LIMIT = FP16_MAX / 4
NORMALIZATIONS = (
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "MeanVarianceNormalization",
    "LpNormalization",
    "BatchNormalization",
)
REDUCTIONS = (
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "Softmax",
    "LogSoftmax",
)
SENSITIVE_OPS = NORMALIZATIONS + REDUCTIONS


@dataclass(frozen=True)
class KeptNode:
    node: str
    op: str
    reason: str


@dataclass(frozen=True)
class Fp16Result:
    path: Path
    check_images: int
    limit: float
    checked_nodes: int
    peak_abs: Optional[float]  # largest |value| of any float tensor in the FP32 graph on the check images
    kept_fp32: Tuple[KeptNode, ...] = field(default_factory=tuple)
    casts: int = 0
    converter: str = "onnxruntime.transformers.float16"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = self.path.name
        d["kept_fp32"] = [asdict(k) for k in self.kept_fp32]
        return d

    def summary(self) -> str:
        ops = sorted({k.op for k in self.kept_fp32})
        kept = f"{len(self.kept_fp32)} node(s) kept FP32 ({', '.join(ops)})" if self.kept_fp32 else "no node needed FP32"
        peak = f", peak |x| {self.peak_abs:.3g}" if self.peak_abs is not None else ""
        return f"{self.path.name}: FP16 with FP32 I/O, overflow check on {self.check_images} images{peak}: {kept}"


def _name_nodes(model) -> None:
    """The block list works by node name; the exporters leave some nodes unnamed."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after its producers (stable otherwise). The FP16 converter appends
    its I/O Cast nodes at the end; onnx.checker and the TensorRT parser need producer-before-consumer order."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(t in available for t in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({t for n in rest for t in n.input if t not in available})[:3]
            raise ValueError(f"graph has a cycle or dangling inputs ({', '.join(missing)})")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def drop_fp16_round_trips(graph) -> int:
    """Remove Cast(fp32->fp16) -> Cast(fp16->fp32) pairs; returns how many FP32 consumers were rewired.

    The converter casts every kept-FP32 node's output to FP16 and back before the next kept-FP32 node, so a value
    too large for FP16 would still overflow between two FP32 nodes. Consumers of the round trip read the FP32 value
    directly instead (an Identity keeps the name where the round trip ends in a graph output).
    """
    from onnx import TensorProto, helper

    def cast_to(node) -> int:
        return next((a.i for a in node.attribute if a.name == "to"), -1) if node.op_type == "Cast" else -1

    consumers: Dict[str, List] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    outputs = {o.name for o in graph.output}
    down = {n.output[0]: n for n in graph.node if cast_to(n) == TensorProto.FLOAT16}
    removed, identities, rewired = set(), [], 0
    for fp16_name, c1 in down.items():
        for c2 in [c for c in consumers.get(fp16_name, []) if cast_to(c) == TensorProto.FLOAT]:
            src, dst = c1.input[0], c2.output[0]
            if dst in outputs:
                identities.append(helper.make_node("Identity", [src], [dst], name=f"{c2.name}_fp32"))
            else:
                for user in consumers.get(dst, []):
                    for i, t in enumerate(user.input):
                        if t == dst:
                            user.input[i] = src
            removed.add(id(c2))
            rewired += 1
    live = [n for n in graph.node if id(n) not in removed] + identities
    used = {t for n in live for t in n.input} | outputs
    live = [n for n in live if not (cast_to(n) == TensorProto.FLOAT16 and n.output[0] not in used)]
    produced = {t for n in live for t in n.output}
    del graph.node[:]
    graph.node.extend(live)
    stale = [vi for vi in graph.value_info if vi.name not in produced]
    for vi in stale:
        graph.value_info.remove(vi)
    return rewired


def fold_constant_casts(graph) -> int:
    """Replace Cast(to FLOAT) of a constant (a Constant node's ``value`` or an initializer) by an FP32 initializer of
    the same name; returns how many Casts were folded.

    The converter turns every Constant node into FP16, so a node kept in FP32 reads its constant parameters through
    Constant(fp16) -> Cast(fp32): InstanceNormalization's ``scale`` and ``B`` from the PyTorch exporter, and any
    initializer shared with an FP16 node. The TensorRT 8.5 importer and 8.6's default (plugin) InstanceNormalization
    path require ``scale`` and ``B`` to be initializers and reject such a graph. The folded initializer holds exactly
    the value the Cast computed (the FP16 constant widened to FP32), so the graph's numerics do not change. A Constant
    or initializer left without readers is removed; a Cast whose output is a graph output is left alone.
    """
    from onnx import AttributeProto, TensorProto, numpy_helper

    def cast_to(node) -> int:
        return next((a.i for a in node.attribute if a.name == "to"), -1)

    nodes = list(graph.node)  # one set of wrappers for the whole pass: id() must not see a recycled object
    consts: Dict[str, object] = {i.name: i for i in graph.initializer}
    const_node: Dict[str, object] = {}
    for n in nodes:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1:
            value = next((a.t for a in n.attribute if a.name == "value" and a.type == AttributeProto.TENSOR), None)
            if value is not None:
                consts[n.output[0]] = value
                const_node[n.output[0]] = n
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input}  # an initializer that is also a graph input can be overridden
    folded, sources, new_inits = set(), set(), []
    for n in nodes:
        if (
            n.op_type != "Cast"
            or n.domain not in ("", "ai.onnx")
            or cast_to(n) != TensorProto.FLOAT
            or len(n.input) != 1
            or n.input[0] not in consts
            or n.input[0] in inputs
            or n.output[0] in outputs
            or n.output[0] in consts
        ):
            continue
        src = consts[n.input[0]]
        if src.data_type not in floats or src.data_location == TensorProto.EXTERNAL:
            continue
        new_inits.append(numpy_helper.from_array(numpy_helper.to_array(src).astype(np.float32), n.output[0]))
        folded.add(id(n))
        sources.add(n.input[0])
    if not folded:
        return 0
    live = [n for n in nodes if id(n) not in folded]
    used = {t for n in live for t in n.input} | outputs
    orphans = sources - used  # constants only the folded Casts read
    live = [n for n in live if not (n.output and n.output[0] in orphans and const_node.get(n.output[0]) is n)]
    copies = [type(n)() for n in live]
    for c, n in zip(copies, live):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    for init in [i for i in graph.initializer if i.name in orphans]:
        graph.initializer.remove(init)
    graph.initializer.extend(new_inits)
    names = orphans | {i.name for i in new_inits}
    for vi in [vi for vi in graph.value_info if vi.name in names]:
        graph.value_info.remove(vi)
    return len(folded)


# inputs the TensorRT parser reads as weights (InstanceNormalization: "scale and B must be initializers" up to 8.6)
PARAMETER_INPUTS = {
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "BatchNormalization": (1, 2, 3, 4),
}


def parameters_as_initializers(graph) -> int:
    """Turn the Constant nodes a normalisation reads as parameters (``PARAMETER_INPUTS``) into initializers of the
    same name, type and value; returns how many. The same tensor either way; the parser docs ask for initializers."""
    from onnx import AttributeProto

    wanted = {
        n.input[i]
        for n in graph.node
        if n.domain in ("", "ai.onnx")
        for i in PARAMETER_INPUTS.get(n.op_type, ())
        if i < len(n.input) and n.input[i]
    }
    outputs = {o.name for o in graph.output}
    nodes, moved = list(graph.node), set()
    for n in nodes:
        if n.op_type != "Constant" or n.domain not in ("", "ai.onnx") or len(n.output) != 1:
            continue
        name = n.output[0]
        value = next((a.t for a in n.attribute if a.name == "value" and a.type == AttributeProto.TENSOR), None)
        if name not in wanted or name in outputs or value is None:
            continue
        init = graph.initializer.add()
        init.CopyFrom(value)
        init.name = name
        moved.add(id(n))
    if moved:
        keep = [n for n in nodes if id(n) not in moved]
        copies = [type(n)() for n in keep]
        for c, n in zip(copies, keep):
            c.CopyFrom(n)
        del graph.node[:]
        graph.node.extend(copies)
    return len(moved)


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else (a.i if a.type == 2 else a.f if a.type == 1 else default)
    return default


def _reduce_axes(node, rank: int, inits: Dict[str, np.ndarray]) -> Optional[Tuple[int, ...]]:
    """The axes a normalisation/reduction accumulates over; None = all axes."""
    op = node.op_type
    if op in ("LayerNormalization",):
        a = int(_attr(node, "axis", -1)) % rank
        return tuple(range(a, rank))
    if op in ("InstanceNormalization",):
        return tuple(range(2, rank))
    if op == "MeanVarianceNormalization":
        return tuple(int(a) % rank for a in _attr(node, "axes", [0, 2, 3]))
    if op in ("LpNormalization", "Softmax", "LogSoftmax"):
        return (int(_attr(node, "axis", -1)) % rank,)
    if op == "BatchNormalization":
        return ()  # inference BN uses stored statistics: nothing is accumulated
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1] in inits:
        axes = inits[node.input[1]].tolist()
    if not axes:
        return None if not int(_attr(node, "noop_with_empty_axes", 0)) else ()
    return tuple(int(a) % rank for a in (axes if isinstance(axes, list) else [axes]))


def _accumulation(node, x: np.ndarray, inits: Dict[str, np.ndarray]) -> float:
    """Largest per-group accumulation a kernel performs: max(sum x^2, sum |x|) (sum exp(x - max) for softmax)."""
    x = x.astype(np.float64)
    if node.op_type == "GroupNormalization":
        g = int(_attr(node, "num_groups", 1))
        x = x.reshape(x.shape[0], g, -1)
        axes: Optional[Tuple[int, ...]] = (2,)
    else:
        axes = _reduce_axes(node, x.ndim, inits)
    if axes == ():
        return 0.0
    if node.op_type in ("Softmax", "LogSoftmax", "ReduceLogSumExp"):
        e = np.exp(x - x.max(axis=axes, keepdims=True))
        return float(e.sum(axis=axes).max())
    return float(max(np.square(x).sum(axis=axes).max(), np.abs(x).sum(axis=axes).max()))


def _exposed(model):
    """A copy of ``model`` whose float intermediate tensors are all graph outputs."""
    onnx = require("onnx", purpose="the FP16 overflow check")
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {o.name for o in inferred.graph.output}
    floats = [vi for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and vi.name not in known]
    aug = onnx.ModelProto()
    aug.CopyFrom(inferred)
    for vi in floats:
        aug.graph.output.append(onnx.helper.make_tensor_value_info(vi.name, onnx.TensorProto.FLOAT, None))
    return aug


def choose_fp32_nodes(model, check_inputs: Optional[np.ndarray]) -> Tuple[List[KeptNode], int, Optional[float]]:
    """(nodes to keep in FP32 with the reason, number of nodes checked, peak |x|) for an FP32 ONNX model."""
    numpy_helper = require("onnx.numpy_helper", extra="export", purpose="the FP16 overflow check")

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = list(model.graph.node)
    if check_inputs is None or len(check_inputs) == 0:
        kept = [
            KeptNode(n.name, n.op_type, "no check images: normalisations and reductions stay FP32")
            for n in nodes
            if n.op_type in SENSITIVE_OPS
        ]
        return kept, 0, None
    from .onnxrun import cpu_session  # ONNX Runtime only when images are checked

    sess = cpu_session(_exposed(model).SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0]
    static_n = inp.shape[0] if isinstance(inp.shape[0], int) else 1
    peak: Dict[str, float] = {k: float(np.abs(v).max()) if v.size and v.dtype.kind == "f" else 0.0 for k, v in inits.items()}
    accum: Dict[str, float] = {}
    for i in range(len(check_inputs)):
        x = np.repeat(check_inputs[i : i + 1], static_n, axis=0)  # a static-batch graph takes exactly its batch
        values = dict(zip(names, sess.run(None, {inp.name: x})))
        values[inp.name] = x
        for k, v in values.items():
            v = np.asarray(v)
            if v.dtype.kind == "f" and v.size:
                peak[k] = max(peak.get(k, 0.0), float(np.abs(v).max()) if np.isfinite(v).all() else float("inf"))
        for n in nodes:
            if n.op_type in SENSITIVE_OPS and n.input and n.input[0] in values:
                accum[n.name] = max(accum.get(n.name, 0.0), _accumulation(n, np.asarray(values[n.input[0]]), inits))
        del values
    kept: List[KeptNode] = []
    for n in nodes:
        tensors = [t for t in list(n.input) + list(n.output) if t in peak]
        worst = max((peak[t] for t in tensors), default=0.0)
        if worst >= FP16_LIMIT:
            kept.append(KeptNode(n.name, n.op_type, f"peak |x| {worst:.3g} >= {FP16_LIMIT:.0f}"))
        elif accum.get(n.name, 0.0) >= FP16_LIMIT:
            kept.append(KeptNode(n.name, n.op_type, f"accumulation {accum[n.name]:.3g} >= {FP16_LIMIT:.0f} over one reduction group"))
    graph_peak = max((v for k, v in peak.items() if k not in inits), default=0.0)
    return kept, len(nodes), graph_peak


KEEPABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul") + SENSITIVE_OPS  # what --fp16-keep ranks


def keepable_nodes(src: Path) -> List[str]:
    """The nodes ``--fp16-keep`` may keep in FP32 (weighted layers, normalisations and reductions), by the names the
    conversion gives them."""
    onnx = require("onnx", purpose="the FP16 conversion")
    model = onnx.load(str(src), load_external_data=False)
    _name_nodes(model)
    return [n.name for n in model.graph.node if n.op_type in KEEPABLE_OPS]


def convert_fp16(src: Path, dst: Path, check_inputs: Optional[np.ndarray], keep: Sequence[str] = ()) -> Fp16Result:
    """FP32 ONNX ``src`` -> FP16 ONNX ``dst`` (FP32 I/O), keeping overflow-prone nodes, and the nodes ``keep`` names
    (``--fp16-keep``), in FP32; atomic."""
    onnx = require("onnx", purpose="the FP16 conversion")
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as exc:  # minimal ORT builds ship without the transformers tools
        from ..errors import MissingDependencyError

        raise MissingDependencyError(
            f"FP16 conversion needs onnxruntime.transformers.float16 (part of the onnxruntime wheel): {exc}"
        ) from exc
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    _name_nodes(model)
    kept, checked, peak = choose_fp32_nodes(model, check_inputs)
    ops = {n.name: n.op_type for n in model.graph.node}
    chosen = {k.node for k in kept}
    kept += [KeptNode(name, ops.get(name, "?"), "--fp16-keep") for name in keep if name not in chosen]
    for k in kept:
        log.debug("fp16: keeping %s (%s) in FP32: %s", k.node, k.op, k.reason)
    fp16 = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST),
        node_block_list=[k.node for k in kept],
    )
    drop_fp16_round_trips(fp16.graph)
    # normalisation parameters as initializers, FP32 ones for FP32 nodes (TensorRT 8.5/8.6 InstanceNormalization)
    folded = fold_constant_casts(fp16.graph)
    moved = parameters_as_initializers(fp16.graph)
    log.debug("fp16: %d Constant -> Cast(fp32) pair(s) folded into FP32 initializers, %d Constant(s) made initializers", folded, moved)
    topological_sort(fp16.graph)
    with replaced(dst) as tmp:
        onnx.save(fp16, str(tmp))
        check_onnx(tmp)
    casts = sum(1 for n in fp16.graph.node if n.op_type == "Cast")
    n_images = 0 if check_inputs is None else len(check_inputs)
    return Fp16Result(dst, n_images, FP16_LIMIT, checked, peak, tuple(kept), casts)


def io_types(path: Path) -> Tuple[Sequence[int], Sequence[int]]:
    """Element types of the graph inputs and outputs (1 = float32, 10 = float16)."""
    onnx = require("onnx", purpose="reading ONNX files")
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return (
        [i.type.tensor_type.elem_type for i in m.graph.input if i.name not in inits],
        [o.type.tensor_type.elem_type for o in m.graph.output],
    )
