"""TensorRT ONNX-parser pre-flight: will this ONNX import on TensorRT 8.5 / 8.6 / 10.x on the target?

Users export on a workstation and build the engine on a Jetson (TensorRT 8.5 on JetPack 5, 8.6 or 10.3 on JetPack 6,
10.x/11 on desktops and JetPack 7). This check answers, without TensorRT, which nodes of an ONNX file the target's
parser documents as unsupported, so the failure shows up at export time and not after copying to the device.

It is table-driven: ``data/tensorrt_onnx_ops.json`` is onnx-tensorrt's ``docs/operators.md`` per TensorRT version,
parsed by ``tools/tensorrt_ops_table.py`` (provenance in the file: repository, ref, commit or sha256, date read). For
each node (subgraphs included) and each version it checks:

- the operator is in the version's matrix and marked supported (``ai.onnx`` domain; any other domain needs a plugin);
- the element type of the node's main data input (input 0; output 0 for source nodes such as Constant, and the
  target type of Cast) is in the operator's "Supported Types", after the casts the version's notes say the parser
  applies (TensorRT 8.x casts INT64 to INT32 and DOUBLE to FLOAT); types come from ``onnx.shape_inference``;
- the restrictions the table turned into ``checks``: input rank (2D/3D pooling), dilations, zero points of Q/DQ
  nodes, Resize modes and antialiasing, constant ``axes`` inputs, single-output LayerNormalization/MaxPool;
- the model's ``ai.onnx`` opset against the version's documented range (a warning above it).

What it cannot see: layer-level limits of the builder (tactics, memory, DLA), plugin availability, or anything the
documentation does not state. A clean pre-flight means "the parser documents every node as supported", not "the
engine builds"; a failed one names the nodes that will not import. Versions the table has no matrix for (e.g. "11")
come back as ``unknown`` with the reason, never as a pass.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .._optional import require
from ..errors import InvalidInputError

TABLE_PATH = Path(__file__).resolve().parent / "data" / "tensorrt_onnx_ops.json"
DEFAULT_VERSIONS: Tuple[str, ...] = ("8.5", "8.6", "10.x", "11")
ONNX_DOMAINS = ("", "ai.onnx")

# ONNX TensorProto element type names -> the words operators.md uses.
_TYPE_WORDS = {
    "FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "DOUBLE": "DOUBLE", "INT32": "INT32", "INT64": "INT64",
    "INT8": "INT8", "UINT8": "UINT8", "BOOL": "BOOL", "INT4": "INT4", "UINT4": "UINT4", "FLOAT4E2M1": "FP4",
    "FLOAT8E4M3FN": "FP8", "FLOAT8E4M3FNUZ": "FP8", "FLOAT8E5M2": "FP8", "FLOAT8E5M2FNUZ": "FP8",
}
# ONNX defaults of the attributes the table restricts (used when a node leaves them out).
_ATTR_DEFAULTS: Dict[str, Any] = {"coordinate_transformation_mode": "half_pixel", "mode": "nearest",
                                  "nearest_mode": "round_prefer_floor", "keep_aspect_ratio_policy": "stretch",
                                  "antialias": 0}


@dataclass(frozen=True)
class Finding:
    """One problem one node has on one TensorRT version."""

    version: str
    kind: str  # unsupported_op | unknown_op | custom_domain | unsupported_type | restriction | opset
    op_type: str
    node: str  # node name ("" when the ONNX leaves it empty; "<model>" for model-level findings)
    message: str
    severity: str = "error"  # error: the parser documents it as unsupported; warning: may fail, cannot tell here

    def to_dict(self) -> Dict[str, str]:
        return {"version": self.version, "kind": self.kind, "op_type": self.op_type, "node": self.node,
                "message": self.message, "severity": self.severity}


@dataclass(frozen=True)
class VersionResult:
    version: str  # the table key ("8.5", "10.x")
    doc_version: Optional[str]  # the TensorRT version its operators.md states ("10.15"); None when unknown
    status: str  # ok | fail | unknown
    findings: Tuple[Finding, ...] = ()
    reason: str = ""  # why the status is unknown

    @property
    def errors(self) -> Tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> Tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def summary(self) -> str:
        """One line: 'TensorRT 8.5: FAIL - LayerNormalization unsupported (25 nodes, e.g. /enc/ln)'."""
        label = f"TensorRT {self.version}" + (f" (docs {self.doc_version})" if self.doc_version and self.doc_version != self.version else "")
        if self.status == "unknown":
            return f"{label}: unknown - {self.reason}"
        warn = f"; {len(self.warnings)} warning(s): {_group(self.warnings)}" if self.warnings else ""
        if self.status == "ok":
            return f"{label}: ok - every node is documented as supported{warn}"
        return f"{label}: FAIL - {_group(self.errors)}{warn}"

    def to_dict(self) -> Dict[str, Any]:
        return {"version": self.version, "doc_version": self.doc_version, "status": self.status,
                "reason": self.reason, "summary": self.summary(), "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class PreflightReport:
    source: str  # the ONNX file (or "<model>" for an in-memory ModelProto)
    opset: Optional[int]  # the model's ai.onnx opset
    op_counts: Tuple[Tuple[str, int], ...]  # (op_type, count), ai.onnx ops as "Op", others as "domain::Op"
    results: Tuple[VersionResult, ...]
    table: Tuple[Tuple[str, str], ...] = field(default=())  # provenance of the operator table (repository, read_on)

    @property
    def ok(self) -> bool:
        """No version with a known matrix reports an error (unknown versions are not counted as passes or fails)."""
        return all(r.status != "fail" for r in self.results)

    def result(self, version: str) -> VersionResult:
        for r in self.results:
            if r.version == version:
                return r
        raise KeyError(version)

    def unsupported_ops(self, version: str) -> Tuple[str, ...]:
        return tuple(sorted({f.op_type for f in self.result(version).errors if f.kind in ("unsupported_op", "unknown_op", "custom_domain")}))

    def lines(self) -> Tuple[str, ...]:
        return tuple(r.summary() for r in self.results)

    def summary(self) -> str:
        """One line for the step table: 'TensorRT parser: 8.5 FAIL (LayerNormalization), 8.6 ok, 10.x ok, 11 unknown'."""
        parts = []
        for r in self.results:
            if r.status == "fail":
                ops = sorted({f.op_type for f in r.errors})
                parts.append(f"{r.version} FAIL ({', '.join(ops)})")
            elif r.status == "ok":
                parts.append(f"{r.version} ok" + (f" ({len(r.warnings)} warning(s))" if r.warnings else ""))
            else:
                parts.append(f"{r.version} unknown (no operator table)")
        return f"TensorRT ONNX parser pre-flight of {Path(self.source).name}: " + ", ".join(parts)

    def to_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "opset": self.opset, "ok": self.ok, "summary": self.summary(),
                "op_counts": dict(self.op_counts), "table": dict(self.table),
                "versions": {r.version: r.to_dict() for r in self.results}}


def _group(findings: Sequence[Finding], examples: int = 2) -> str:
    """'LayerNormalization: not supported by this parser (25 nodes, e.g. /a, /b); ...'"""
    by: Dict[Tuple[str, str], List[str]] = {}
    for f in findings:
        by.setdefault((f.op_type, f.message), []).append(f.node or "<unnamed>")
    out = []
    for (op, msg), nodes in by.items():
        eg = ", ".join(nodes[:examples]) + (", ..." if len(nodes) > examples else "")
        out.append(f"{op}: {msg} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, e.g. {eg})")
    return "; ".join(out)


# -- the table -----------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def load_table() -> Dict[str, Any]:
    """The packaged operator table (see tools/tensorrt_ops_table.py)."""
    try:
        return json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{TABLE_PATH}: the TensorRT operator table is missing from this installation "
                                f"(package data lightseg_edge/export/data/*.json); reinstall lightseg-edge") from exc


def known_versions(table: Optional[Dict[str, Any]] = None) -> Tuple[str, ...]:
    return tuple((table or load_table())["versions"])


# -- the graph -----------------------------------------------------------------------------------------------------------
def _walk(graph: Any) -> Iterator[Tuple[Any, Any]]:
    """(graph, node) for every node, descending into If/Loop/Scan bodies."""
    for node in graph.node:
        yield graph, node
        for sub in _subgraphs(node):
            yield from _walk(sub)


class _Graph:
    """Types, ranks and constant values of every tensor name, from shape inference and the initializers."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", purpose="the TensorRT pre-flight")
        self.onnx = onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # shape inference is best effort here: types it cannot infer are simply not checked
            inferred = model
        self.types: Dict[str, int] = {}
        self.ranks: Dict[str, int] = {}
        self.consts: Dict[str, Any] = {}  # name -> TensorProto (initializers and Constant outputs)
        graphs = [inferred.graph] + [attr_g for _, n in _walk(inferred.graph) for attr_g in _subgraphs(n)]
        for g in graphs:
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                tt = vi.type.tensor_type
                if tt.elem_type:
                    self.types[vi.name] = tt.elem_type
                if tt.HasField("shape"):
                    self.ranks[vi.name] = len(tt.shape.dim)
            for init in g.initializer:
                self.types[init.name] = init.data_type
                self.ranks[init.name] = len(init.dims)
                self.consts[init.name] = init
            for node in g.node:
                if node.op_type == "Constant" and node.domain in ONNX_DOMAINS and node.output:
                    for attr in node.attribute:
                        if attr.name == "value":
                            self.consts[node.output[0]] = attr.t
                            self.types[node.output[0]] = attr.t.data_type
                            self.ranks[node.output[0]] = len(attr.t.dims)

    def type_word(self, name: str) -> Optional[str]:
        t = self.types.get(name)
        if not t:
            return None
        onnx_name = self.onnx.TensorProto.DataType.Name(t)
        return _TYPE_WORDS.get(onnx_name, onnx_name)

    def array(self, name: str):
        return self.onnx.numpy_helper.to_array(self.consts[name])


def _subgraphs(node: Any) -> List[Any]:
    out = []
    for attr in node.attribute:
        if attr.HasField("g"):
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def _attr(node: Any, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            if a.type == a.STRING:
                return a.s.decode("utf-8", "replace")
            if a.type == a.INT:
                return a.i
            if a.type == a.INTS:
                return list(a.ints)
            if a.type == a.FLOAT:
                return a.f
            return None
    return _ATTR_DEFAULTS.get(name)


# -- the checks ----------------------------------------------------------------------------------------------------------
def _check_node(node: Any, g: _Graph, version: str, spec: Dict[str, Any]) -> List[Finding]:
    op, name = node.op_type, node.name
    found: List[Finding] = []

    def add(kind: str, message: str, severity: str = "error") -> None:
        found.append(Finding(version, kind, op, name, message, severity))


    if node.domain not in ONNX_DOMAINS:
        add("custom_domain", f"domain {node.domain!r} is not an ONNX operator set; TensorRT needs a plugin for it")
        return found
    entry = spec["operators"].get(op)
    if entry is None:
        add("unknown_op", "not in this version's operator matrix (treat as unsupported)")
        return found
    if not entry["supported"]:
        add("unsupported_op", "not supported by this parser")
        return found

    # data types
    allowed = set(entry.get("types", ()))
    casts = spec.get("type_casts", {})
    probes: List[Tuple[str, str]] = []
    if node.input and node.input[0]:
        probes.append(("input", node.input[0]))
    elif node.output:
        probes.append(("output", node.output[0]))
    if op in ("Cast", "CastLike") and node.output:
        probes.append(("output", node.output[0]))
    for role, tensor in probes:
        word = g.type_word(tensor)
        if word is None or not allowed:
            continue
        effective = casts.get(word, word)
        if effective not in allowed:
            via = f" (cast to {effective})" if effective != word else ""
            add("unsupported_type", f"{role} type {word}{via} not in the supported types {', '.join(sorted(allowed))}")

    # documented restrictions the table made checkable ("note": where a check comes from the parser's source)
    checks = entry.get("checks", {})
    note = f"; {checks['note']}" if checks.get("note") else ""
    ranks = checks.get("input_rank")
    if ranks and node.input and node.input[0] in g.ranks and g.ranks[node.input[0]] not in ranks:
        add("restriction", f"input rank {g.ranks[node.input[0]]} (documented: rank {'/'.join(map(str, ranks))} only)")
    if checks.get("dilations_all_ones"):
        dil = _attr(node, "dilations")
        if dil and any(d != 1 for d in dil):
            add("restriction", f"dilations {dil} (documented: empty or all ones)")
    if checks.get("single_output") and any(o for o in node.output[1:]):
        add("restriction", "uses outputs beyond the first (documented: only the first output is supported)")
    zero = checks.get("zero_input")
    if zero and len(node.input) > zero["index"] and node.input[zero["index"]]:
        tensor = node.input[zero["index"]]
        if tensor in g.consts:
            if g.array(tensor).any():
                add("restriction", f"non-zero {zero['name']} (documented: must be zero)")
        else:
            add("restriction", f"{zero['name']} is not a constant, cannot check it is zero", "warning")
    for const in checks.get("constant_inputs", ()):
        if len(node.input) > const["index"] and node.input[const["index"]] and node.input[const["index"]] not in g.consts:
            add("restriction", f"{const['name']} is computed, not an initializer (must be constant{note})",
                "error" if const.get("strict") else "warning")
    for attr, values in checks.get("allowed_attributes", {}).items():
        if attr == "nearest_mode" and _attr(node, "mode") != "nearest":
            continue
        value = _attr(node, attr)
        if value is not None and value not in values:
            add("restriction", f"{attr}={value!r} (documented: {', '.join(values)})")
    for attr, want in checks.get("attribute_equals", {}).items():
        value = _attr(node, attr)
        if value is not None and value != want:
            add("restriction", f"{attr}={value!r} (documented: must be {want!r})")
    return found


def _load(model_or_path: Union[str, Path, Any]) -> Tuple[Any, str]:
    onnx = require("onnx", purpose="the TensorRT pre-flight")
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise InvalidInputError(f"{path}: ONNX file not found")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # DecodeError and friends: not an ONNX file
            raise InvalidInputError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {str(exc)[:160]})") from exc
        return model, str(path)
    if hasattr(model_or_path, "graph"):
        return model_or_path, "<model>"
    raise InvalidInputError(f"preflight: expected an ONNX file path or an onnx.ModelProto, got {type(model_or_path).__name__}")


def preflight(onnx_path: Union[str, Path, Any], versions: Iterable[str] = DEFAULT_VERSIONS,
              table: Optional[Dict[str, Any]] = None) -> PreflightReport:
    """Check every node of ``onnx_path`` (a file or an onnx.ModelProto) against each TensorRT version's parser table."""
    table = table or load_table()
    versions = tuple(versions)
    unknown = [v for v in versions if v not in table["versions"]]
    if unknown:
        raise InvalidInputError(f"unknown TensorRT version(s) {', '.join(unknown)}; the operator table has "
                                f"{', '.join(table['versions'])}")
    model, source = _load(onnx_path)
    g = _Graph(model)
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), None)
    nodes = [n for _, n in _walk(model.graph)]
    counts = Counter(n.op_type if n.domain in ONNX_DOMAINS else f"{n.domain}::{n.op_type}" for n in nodes)

    results = []
    for version in versions:
        spec = table["versions"][version]
        if not spec.get("available", True):
            results.append(VersionResult(version, None, "unknown", (), spec.get("reason", "no operator table")))
            continue
        findings: List[Finding] = []
        lo, hi = spec.get("opset_min"), spec.get("opset_max")
        if opset is not None and hi is not None and opset > hi:
            findings.append(Finding(version, "opset", "", "<model>", f"model opset {opset} is above the documented "
                                    f"maximum {hi}; export with --opset {hi}", "warning"))
        if opset is not None and lo is not None and opset < lo:
            findings.append(Finding(version, "opset", "", "<model>", f"model opset {opset} is below the documented "
                                    f"minimum {lo}"))
        for node in nodes:
            findings.extend(_check_node(node, g, version, spec))
        status = "fail" if any(f.severity == "error" for f in findings) else "ok"
        results.append(VersionResult(version, spec.get("doc_version"), status, tuple(findings)))
    src = table.get("source", {})
    provenance = tuple((k, str(src[k])) for k in ("repository", "file", "read_on") if k in src)
    return PreflightReport(source, opset, tuple(sorted(counts.items())), tuple(results), provenance)
