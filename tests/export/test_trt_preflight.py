"""TensorRT ONNX-parser pre-flight: the packaged operator table and the per-version node checks."""

from __future__ import annotations

import json

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import numpy as np  # noqa: E402

from lightseg_edge.errors import InvalidInputError  # noqa: E402
from lightseg_edge.export.trt_preflight import DEFAULT_VERSIONS, TABLE_PATH, known_versions, load_table, preflight  # noqa: E402
from lightseg_edge.types import InputSpec  # noqa: E402

KNOWN = ("8.5", "8.6", "10.1", "10.x")


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _x(name="x", elem=TensorProto.FLOAT, shape=(1, 4, 8, 8)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_table_loads_with_provenance():
    table = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    assert table == load_table()
    src = table["source"]
    assert src["repository"] == "https://github.com/onnx/onnx-tensorrt" and src["file"] == "docs/operators.md"
    assert src["read_on"] == "2026-11-30" and src["generator"] == "tools/tensorrt_ops_table.py"
    assert set(DEFAULT_VERSIONS) <= set(known_versions())
    for version in KNOWN:
        v = table["versions"][version]
        assert v["available"] and v["opset_max"] >= 17 and len(v["operators"]) > 150
        assert len(v["source"]["sha256"]) == 64
        assert v["source"]["commit"] or v["source"].get("note")  # a pinned commit, or where the copy came from
    assert table["versions"]["10.x"]["doc_version"].startswith("10.")
    assert table["versions"]["11"] == {"available": False, "reason": table["versions"]["11"]["reason"]}
    # spot checks against the documents: LayerNormalization arrived in 8.6
    ops = {v: table["versions"][v]["operators"] for v in KNOWN}
    assert not ops["8.5"]["LayerNormalization"]["supported"]
    assert all(ops[v]["LayerNormalization"]["supported"] for v in ("8.6", "10.1", "10.x"))
    assert "INT8" in ops["8.5"]["DequantizeLinear"]["types"]


def test_layernorm_is_reported_for_85_only():
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], name="ln0", axis=-1)
    inits = [numpy_helper.from_array(np.ones(8, np.float32), "s"), numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    report = preflight(_model([node], [_x()], [_x("y")], inits))
    status = {r.version: r.status for r in report.results}
    assert status == {"8.5": "fail", "8.6": "ok", "10.x": "ok", "11": "unknown"}
    (f,) = report.result("8.5").errors
    assert (f.op_type, f.node, f.kind) == ("LayerNormalization", "ln0", "unsupported_op")
    assert report.unsupported_ops("8.5") == ("LayerNormalization",) and not report.ok
    line = report.summary()
    assert "\n" not in line and "8.5 FAIL (LayerNormalization)" in line and "11 unknown" in line
    assert all("\n" not in s for s in report.lines())
    json.dumps(report.to_dict())


def test_op_unsupported_everywhere_and_custom_domains():
    nodes = [helper.make_node("Unique", ["x"], ["u"], name="uniq"),
             helper.make_node("Foo", ["x"], ["y"], name="plugin", domain="com.example")]
    report = preflight(_model(nodes, [_x()], [_x("u"), _x("y")]), versions=KNOWN)
    for r in report.results:
        assert {(f.op_type, f.node, f.kind) for f in r.errors} == {("Unique", "uniq", "unsupported_op"),
                                                                  ("Foo", "plugin", "custom_domain")}


def test_types_casts_and_attribute_restrictions():
    nodes = [
        helper.make_node("Relu", ["i"], ["r"], name="relu_int64"),  # 8.x: INT64 -> INT32, not a Relu type; 10.x: ok
        helper.make_node("Resize", ["x", "", "sc"], ["z"], name="cubic", mode="cubic"),  # cubic: nowhere
        helper.make_node("DequantizeLinear", ["q", "qs", "qz"], ["dq"], name="dq_zp"),  # non-zero zero point
    ]
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"),
             numpy_helper.from_array(np.array(0.1, np.float32), "qs"), numpy_helper.from_array(np.array(3, np.int8), "qz")]
    model = _model(nodes, [_x("i", TensorProto.INT64, (4,)), _x(), _x("q", TensorProto.INT8)],
                   [_x("r", TensorProto.INT64, (4,)), _x("z", shape=(1, 4, 16, 16)), _x("dq")], inits)
    report = preflight(model, versions=KNOWN)
    by = {r.version: {(f.node, f.kind) for f in r.errors} for r in report.results}
    for v in ("8.5", "8.6"):
        assert by[v] == {("relu_int64", "unsupported_type"), ("cubic", "restriction"), ("dq_zp", "restriction")}
    for v in ("10.1", "10.x"):
        assert by[v] == {("cubic", "restriction"), ("dq_zp", "restriction")}
    msg = next(f.message for f in report.result("8.5").errors if f.node == "relu_int64")
    assert "INT64 (cast to INT32)" in msg


def test_computed_instancenorm_scale_fails_85_and_86_plugin_path():
    cast = [helper.make_node("Cast", [n + "_h"], [n], name="cast_" + n, to=TensorProto.FLOAT) for n in ("s", "b")]
    consts = [helper.make_node("Constant", [], [n + "_h"], value=numpy_helper.from_array(np.ones(4, np.float16)))
              for n in ("s", "b")]
    inorm = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="in0")
    report = preflight(_model(consts + cast + [inorm], [_x()], [_x("y")]), versions=KNOWN)
    assert {r.version: r.status for r in report.results} == {"8.5": "fail", "8.6": "fail", "10.1": "ok", "10.x": "ok"}
    assert "kNATIVE_INSTANCENORM" in report.result("8.6").errors[0].message


def test_opset_above_documented_range_warns():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_x()], [_x("y")], opset=20)
    r = preflight(model, versions=("8.6",)).result("8.6")
    assert r.status == "ok" and r.warnings[0].kind == "opset" and "--opset 17" in r.warnings[0].message


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown TensorRT version"):
        preflight(_model([], [_x()], [_x()]), versions=("7.0",))
    with pytest.raises(InvalidInputError, match="not found"):
        preflight(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xff")
    with pytest.raises(InvalidInputError):
        preflight(bad)


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    """FP32 ONNX of two zoo models (random weights), exported the way lightseg-export does."""
    pytest.importorskip("torch")
    from lightseg_edge.export.onnx_export import export_onnx
    from lightseg_edge.models import create_model

    folder = tmp_path_factory.mktemp("zoo_onnx")
    out = {}
    for name in ("ucmnet", "malunet"):
        out[name] = export_onnx(create_model(name).eval().deploy(), folder / f"{name}.onnx", InputSpec(), opset=17)
    return out


def test_zoo_onnx_matches_the_table(zoo_onnx):
    # UCM-Net's deploy form takes its channels-first LayerNorms' statistics as MatMuls over the channel axis (no
    # LayerNormalization node), so TensorRT 8.5, whose parser has no LayerNormalization, documents every node too
    ucm = preflight(zoo_onnx["ucmnet"])
    assert dict(ucm.op_counts).get("LayerNormalization", 0) == 0 and dict(ucm.op_counts)["MatMul"] == 50
    assert ucm.result("8.5").status == "ok" and ucm.unsupported_ops("8.5") == ()
    assert ucm.result("8.6").status == "ok" and ucm.result("10.x").status == "ok"
    assert ucm.result("11").status == "unknown"
    mal = preflight(zoo_onnx["malunet"], versions=KNOWN)  # MALUNet: no LayerNormalization node, every op documented
    assert mal.ok and all(r.status == "ok" for r in mal.results)
