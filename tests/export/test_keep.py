"""--int8-keep / --fp16-keep: the parser, the search (export.keep.decide), the Q/DQ surgery and the export wiring."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lightseg_edge.errors import ExportConfigError
from lightseg_edge.export.keep import MAX_KEPT_FRACTION, KeepGate, KeepMode, KeepSpec, decide

LAYERS = [f"conv{i}" for i in range(12)]


@pytest.mark.parametrize("text, mode, count, names", [
    ("auto", KeepMode.AUTO, 0, ()), ("none", KeepMode.NONE, 0, ()), ("3", KeepMode.COUNT, 3, ()), ("0", KeepMode.NONE, 0, ()),
    ("a, b", KeepMode.NAMES, 0, ("a", "b")),
])
def test_parse(text, mode, count, names):
    spec = KeepSpec.parse(text, "--int8-keep")
    assert (spec.mode, spec.count, spec.names) == (mode, count, names)


def test_parse_rejects_an_empty_list():
    with pytest.raises(ExportConfigError, match="--fp16-keep"):
        KeepSpec.parse(" , ", "--fp16-keep")


def _model(costs):
    """A variant's agreement: 1 minus the cost of every layer not kept (the layers' costs add up)."""
    calls = []

    def measure(kept):
        calls.append(kept)
        lost = sum(c for name, c in costs.items() if name not in kept)
        return SimpleNamespace(agreement_dice=1.0 - lost, delta_mdice=-lost / 4)

    return measure, calls


def test_auto_keeps_the_costliest_layers_until_the_gate_is_met():
    costs = dict.fromkeys(LAYERS, 0.0005)
    costs.update(conv7=0.006, conv2=0.004, conv9=0.002)  # 0.0175 lost in all: 0.9825
    measure, calls = _model(costs)
    d = decide(KeepSpec(KeepMode.AUTO), LAYERS, measure, KeepGate(0.002, 0.99), "--int8-keep")
    assert [t.kept[0] for t in d.ranking[:3]] == ["conv7", "conv2", "conv9"]
    assert d.kept == ("conv7", "conv2") and d.met is True  # 0.9825 -> 0.9885 -> 0.9925
    assert [len(t.kept) for t in d.trials] == [0, 1, 2] and len(calls) == 1 + len(LAYERS) + 2


def test_auto_tries_nothing_more_when_the_reduced_model_already_passes():
    measure, calls = _model(dict.fromkeys(LAYERS, 0.0001))
    d = decide(KeepSpec(KeepMode.AUTO), LAYERS, measure, KeepGate(), "--int8-keep")
    assert d.kept == () and d.met is True and calls == [()] and d.ranking == ()


def test_auto_stops_at_its_cap_and_keeps_the_best_variant_tried(caplog):
    measure, _ = _model(dict.fromkeys(LAYERS, 0.01))  # every layer costs the same: the gate needs 11 of 12
    d = decide(KeepSpec(KeepMode.AUTO), LAYERS, measure, KeepGate(0.002, 0.99), "--int8-keep")
    assert d.met is False and len(d.kept) == int(np.ceil(MAX_KEPT_FRACTION * len(LAYERS)))
    assert "no variant met the gate" in caplog.text


def test_count_keeps_the_n_costliest_and_names_keep_exactly_those():
    costs = dict.fromkeys(LAYERS, 0.001)
    costs.update(conv3=0.01)
    measure, _ = _model(costs)
    assert decide(KeepSpec(KeepMode.COUNT, count=1), LAYERS, measure, KeepGate(), "--int8-keep").kept == ("conv3",)
    never, calls = _model({})
    d = decide(KeepSpec(KeepMode.NAMES, names=("conv5",)), LAYERS, never, KeepGate(), "--int8-keep")
    assert d.kept == ("conv5",) and calls == [] and d.met is None
    with pytest.raises(ExportConfigError, match="no layer named 'nope'"):
        decide(KeepSpec(KeepMode.NAMES, names=("nope",)), LAYERS, never, KeepGate(), "--int8-keep")


# --------------------------------------------------------------------------------------------- the Q/DQ surgery
@pytest.fixture(scope="module")
def qdq(tmp_path_factory, sample_dir):
    """UCM-Net (shipped weights) at 128x128: FP32 ONNX and its Q/DQ INT8, calibrated on the sample images."""
    from lightseg_edge import create_model
    from lightseg_edge.export.images import calibration_set
    from lightseg_edge.export.int8 import quantize_int8
    from lightseg_edge.export.onnx_export import export_onnx, input_spec
    from lightseg_edge.types import PreprocessConfig

    folder = tmp_path_factory.mktemp("keep")
    model = create_model("ucmnet", pretrained=True).eval().deploy()
    base = model.cfg.preprocess
    pre = PreprocessConfig(size=(128, 128), mode=base.mode, mean=base.mean, std=base.std)
    export_onnx(model, folder / "model.onnx", input_spec(1, (128, 128), dynamic=False))
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", calibration_set(str(sample_dir), 4), pre, progress=False)
    return folder


def _run(path, x):
    from lightseg_edge.export.onnxrun import cpu_session

    return cpu_session(path).run(None, {"input": x})[0]


def test_keep_float_unquantises_exactly_the_named_layers(qdq):
    import onnx

    from lightseg_edge.export.int8 import check_qdq_for_tensorrt, keep_float, quantized_layers

    layers = quantized_layers(qdq / "model.int8.onnx")
    assert len(layers) > 20
    keep_float(qdq / "model.int8.onnx", qdq / "kept.onnx", layers[:2])
    assert quantized_layers(qdq / "kept.onnx") == layers[2:]
    problems, n_q, _ = check_qdq_for_tensorrt(onnx.load(str(qdq / "kept.onnx")))
    before = check_qdq_for_tensorrt(onnx.load(str(qdq / "model.int8.onnx")))[1]
    assert problems == [] and 0 < n_q < before


def test_channel_statistics_stay_fp32(qdq):
    """The deploy form's LayerNorm means are MatMuls of a constant (1 x C) row: reductions, left out of INT8."""
    import onnx

    from lightseg_edge.export.int8 import float_layers, quantized_layers, statistics_layers

    fp32 = onnx.load(str(qdq / "model.onnx"))
    stats = statistics_layers(fp32)
    assert len(stats) == 2 * 25 and set(stats) <= set(float_layers(fp32))  # UCM-Net: 25 LayerNorms, mean and variance
    int8 = onnx.load(str(qdq / "model.int8.onnx"))
    dq_out = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    matmuls = [n for n in int8.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == len(stats) and not any(set(n.input) & dq_out for n in matmuls)
    assert not set(stats) & set(quantized_layers(qdq / "model.int8.onnx"))


def test_keep_float_of_every_layer_is_the_fp32_model(qdq):
    from lightseg_edge.export.int8 import keep_float, quantized_layers

    x = np.random.default_rng(0).normal(size=(1, 3, 128, 128)).astype(np.float32)
    keep_float(qdq / "model.int8.onnx", qdq / "all.onnx", quantized_layers(qdq / "model.int8.onnx"))
    fp32, int8, kept = _run(qdq / "model.onnx", x), _run(qdq / "model.int8.onnx", x), _run(qdq / "all.onnx", x)
    assert np.abs(int8 - fp32).max() > 1e-2  # INT8 really differs
    assert np.abs(kept - fp32).max() < 1e-3  # and with every layer kept, nothing of it is left


# --------------------------------------------------------------------------------------------- the export
def test_export_keeps_what_the_flags_ask_and_records_it(sample_dir, tmp_path):
    from export_helpers import small_config

    from lightseg_edge.export import export
    from lightseg_edge.export.int8 import quantized_layers

    cfg = small_config(sample_dir, tmp_path / "out", model="ucmnet", img_size=128, fp16=True, int8=True, calib_data=str(sample_dir),
                       int8_keep="2", fp16_keep="1", formats=("onnx",))
    res = export(cfg)
    man = json.loads(res.manifest.read_text())
    keep8, keep16 = man["artifacts"]["int8"]["keep"], man["artifacts"]["fp16"]["keep"]
    assert keep8["spec"] == "2" and len(keep8["kept"]) == 2 and len(keep8["ranking"]) == keep8["candidates"] > 20
    assert keep8["kept"] == [r["layer"] for r in keep8["ranking"][:2]]
    assert not set(keep8["kept"]) & set(quantized_layers(res.artifacts["int8"]))
    assert len(keep16["kept"]) == 1
    kept16 = [k for k in man["artifacts"]["fp16"]["overflow_check"]["kept_fp32"] if k["reason"] == "--fp16-keep"]
    assert [k["node"] for k in kept16] == keep16["kept"]
    assert {"int8-keep", "fp16-keep"} <= {s["name"] for s in man["steps"]}


def test_export_rejects_a_layer_it_cannot_keep(sample_dir, tmp_path):
    from export_helpers import small_config

    from lightseg_edge.export import export

    cfg = small_config(sample_dir, tmp_path / "out", model="ucmnet", img_size=128, int8=True, calib_data=str(sample_dir),
                       int8_keep="/no/such/Conv", formats=("onnx",))
    with pytest.raises(ExportConfigError, match="no layer named '/no/such/Conv'"):
        export(cfg)
    assert not (tmp_path / "out").exists()
