"""The FP16 overflow check, graph ordering and the Q/DQ rules, on small hand-built ONNX graphs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lightseg_edge.export.fp16 import FP16_LIMIT, choose_fp32_nodes, convert_fp16, io_types, topological_sort  # noqa: E402
from lightseg_edge.export.int8 import check_qdq_for_tensorrt  # noqa: E402


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _graph_with_large_values():
    """x*300*300 (beyond FP16's 65504) -> /90000 -> *100 -> InstanceNorm over 8x8 (sum x^2 ~ 2e5) -> 1x1 conv."""
    nodes = [
        helper.make_node("Mul", ["x", "three_hundred"], ["t0"], name="scale_up"),
        helper.make_node("Mul", ["t0", "three_hundred"], ["t1"], name="scale_up_more"),
        helper.make_node("Div", ["t1", "big"], ["t2"], name="scale_down"),
        helper.make_node("Mul", ["t2", "hundred"], ["t3"], name="times_100"),
        helper.make_node("InstanceNormalization", ["t3", "gamma", "beta"], ["t4"], name="inorm"),
        helper.make_node("Conv", ["t4", "w", "b"], ["y"], name="head"),
    ]
    inits = [
        _const("three_hundred", 300.0),
        _const("big", 90000.0),
        _const("hundred", 100.0),
        _const("gamma", np.ones(3)),
        _const("beta", np.zeros(3)),
        _const("w", np.full((1, 3, 1, 1), 0.3)),
        _const("b", [0.1]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_overflow_check_keeps_exactly_the_risky_nodes_in_fp32():
    x = np.random.default_rng(0).random((2, 1, 3, 8, 8), dtype=np.float32).reshape(2, 3, 8, 8)
    kept, checked, peak = choose_fp32_nodes(_graph_with_large_values(), x)
    reasons = {k.node: k.reason for k in kept}
    assert set(reasons) == {"scale_up_more", "scale_down", "inorm"}, reasons
    assert "peak |x|" in reasons["scale_up_more"] and "accumulation" in reasons["inorm"]
    assert checked == 6 and peak >= FP16_LIMIT


def test_without_check_images_all_normalisations_stay_fp32():
    kept, checked, peak = choose_fp32_nodes(_graph_with_large_values(), None)
    assert [k.node for k in kept] == ["inorm"] and checked == 0 and peak is None


def test_fp16_model_keeps_fp32_io_and_matches(tmp_path):
    from lightseg_edge.export.onnxrun import cpu_session

    src = tmp_path / "m.onnx"
    onnx.save(_graph_with_large_values(), str(src))
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    res = convert_fp16(src, tmp_path / "m.fp16.onnx", x)
    assert io_types(res.path) == ([TensorProto.FLOAT], [TensorProto.FLOAT])
    assert {k.node for k in res.kept_fp32} == {"scale_up_more", "scale_down", "inorm"}
    a = cpu_session(src).run(None, {"x": x})[0]
    b = cpu_session(res.path).run(None, {"x": x})[0]
    assert np.isfinite(b).all() and np.abs(a - b).max() < 1e-2 * max(1.0, np.abs(a).max())
    # the large value never passes through an FP16 tensor, not even between two FP32 nodes (the converter alone
    # would cast it to FP16 and back). ONNX Runtime CPU computes many FP16 ops in FP32 internally, so running the
    # FP16 graph there would not reveal such an overflow; hence this structural check.
    m = onnx.load(str(res.path))
    producer = {o: n for n in m.graph.node for o in n.output}
    big_out = next(n for n in m.graph.node if n.name == "scale_up_more").output[0]
    readers = [n for n in m.graph.node if big_out in n.input]
    assert [n.name for n in readers] == ["scale_down"] and producer[big_out].name == "scale_up_more"


def test_instancenorm_constants_become_initializers_without_changing_outputs(tmp_path, monkeypatch):
    """scale/B as Constant nodes (the PyTorch exporter's form): the kept-FP32 InstanceNorm reads FP32 initializers,
    not Constant(fp16) -> Cast(fp32) (TensorRT 8.5/8.6 reject that), and the outputs do not change at all."""
    from lightseg_edge.export import fp16
    from lightseg_edge.export.onnxrun import cpu_session

    model = _graph_with_large_values()
    inits = {i.name: i for i in model.graph.initializer}
    consts = [helper.make_node("Constant", [], [k], name=f"const_{k}", value=inits[k]) for k in ("gamma", "beta")]
    for k in ("gamma", "beta"):
        model.graph.initializer.remove(inits[k])
    nodes = consts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)

    res = fp16.convert_fp16(src, tmp_path / "folded.onnx", x)
    with monkeypatch.context() as mp:
        mp.setattr(fp16, "fold_constant_casts", lambda graph: 0)
        plain = fp16.convert_fp16(src, tmp_path / "plain.onnx", x)
    assert "inorm" in {k.node for k in res.kept_fp32}
    m = onnx.load(str(res.path))
    init_types = {i.name: i.data_type for i in m.graph.initializer}
    inorm = next(n for n in m.graph.node if n.name == "inorm")
    assert [init_types.get(t) for t in inorm.input[1:]] == [TensorProto.FLOAT, TensorProto.FLOAT]
    # gamma, beta, and three_hundred (read by an FP16 and an FP32 Mul: an FP16 initializer cast back) are folded
    assert not [n for n in m.graph.node if n.op_type == "Constant"] and res.casts == plain.casts - 3
    assert init_types["three_hundred"] == TensorProto.FLOAT16
    assert init_types[next(n for n in m.graph.node if n.name == "scale_up_more").input[1]] == TensorProto.FLOAT
    before = onnx.load(str(plain.path))
    producer = {o: n.op_type for n in before.graph.node for o in n.output}
    assert [producer.get(t) for t in next(n for n in before.graph.node if n.name == "inorm").input[1:]] == ["Cast", "Cast"]
    assert np.array_equal(cpu_session(res.path).run(None, {"x": x})[0], cpu_session(plain.path).run(None, {"x": x})[0])


def test_topological_sort_orders_producers_first():
    model = _graph_with_large_values()
    nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    topological_sort(model.graph)
    onnx.checker.check_model(model)
    assert [n.name for n in model.graph.node] == ["scale_up", "scale_up_more", "scale_down", "times_100", "inorm", "head"]


def test_qdq_rules_flag_what_tensorrt_rejects():
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp_u8"], ["xq"], name="q_act"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp_u8"], ["xd"], name="dq_act"),
        helper.make_node("QuantizeLinear", ["w", "ws", "wzp"], ["wq"], name="q_w", axis=1),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="dq_w", axis=1),
        helper.make_node("DequantizeLinear", ["b32", "bs"], ["bd"], name="dq_bias"),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], name="conv"),
    ]
    inits = [
        w,
        _const("s", 0.1),
        numpy_helper.from_array(np.array(128, np.uint8), "zp_u8"),
        _const("ws", [0.1, 0.1, 0.1]),
        numpy_helper.from_array(np.zeros(3, np.int8), "wzp"),
        numpy_helper.from_array(np.zeros(2, np.int32), "b32"),
        _const("bs", [0.01, 0.01]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    problems, n_q, per_channel = check_qdq_for_tensorrt(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    text = "\n".join(problems)
    assert "zero point of type UINT8" in text
    assert "int32 (bias) DequantizeLinear" in text
    assert "per-channel weight axis 1 for Conv" in text
    assert n_q == 2 and per_channel == 1


def _conv_chain(size: int = 32):
    """image -> Conv(3->8) -> Exp -> Conv(8->8) -> Relu -> Conv(8->1): two layers past the image-reading one, the
    first reading a long-tailed (log-normal) activation, as after an unnormalised residual sum."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Exp", ["c0"], ["r0"], name="exp0"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="mid", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["logits"], name="head"),
    ]
    inits = [_const("w0", rng.normal(size=(8, 3, 3, 3)) / 3), _const("b0", np.zeros(8)), _const("w1", rng.normal(size=(8, 8, 3, 3)) / 8),
             _const("b1", np.zeros(8)), _const("w2", rng.normal(size=(1, 8, 1, 1))), _const("b2", [0.0])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, size, size])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _activation_scales(path):
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_entropy_calibration_is_not_minmax_in_disguise(tmp_path, sample_dir):
    """quantize_static's own entropy calibrator (128 bins for 128 levels) can only pick the full range, i.e. MinMax's
    scales; with TensorRT's 2048-bin histogram the KL search clips the long tails."""
    from lightseg_edge.export.images import calibration_set
    from lightseg_edge.export.int8 import quantize_int8
    from lightseg_edge.types import PreprocessConfig

    src = tmp_path / "chain.onnx"
    onnx.save(_conv_chain(), str(src))
    pre = PreprocessConfig(size=(32, 32))
    images = calibration_set(str(sample_dir), 4)
    scales = {}
    for method in ("minmax", "entropy"):
        res = quantize_int8(src, tmp_path / f"{method}.onnx", images, pre, method=method, progress=False)
        assert res.calibration["method"] == method
        scales[method] = _activation_scales(res.path)
    assert set(scales["minmax"]) == set(scales["entropy"]) == {"r0", "r1"}  # the image-reading stem stays FP32
    assert all(scales["entropy"][t] < scales["minmax"][t] for t in scales["minmax"])
