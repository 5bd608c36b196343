"""FP16 ONNX of a model with InstanceNormalization imports on TensorRT 8.5 and 8.6: its scale and bias are initializers.

The PyTorch exporter gives InstanceNormalization's ``scale`` and ``B`` as Constant nodes; the FP16 converter turns
them into FP16 and, for a node kept in FP32, casts them back (Constant(fp16) -> Cast(fp32)). The TensorRT 8.5
importer and 8.6's default plugin path require initializers there, so ``convert_fp16`` folds those pairs into FP32
initializers and makes the remaining parameter Constants initializers, without changing a single output value.
"""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import small_config

onnx = pytest.importorskip("onnx")
from onnx import TensorProto  # noqa: E402

MODEL = "ucmnet"  # 26 InstanceNormalization and 25 channels-first layer norms, 46k parameters: a cheap export


@pytest.fixture(scope="module")
def ucmnet_fp16(fitted_weights, sample_dir, tmp_path_factory):
    """(folder) of an FP32 + FP16 ONNX export of ucmnet at its default size on the sample images."""
    from lightseg_edge.export import export

    weights = fitted_weights(MODEL)
    out = tmp_path_factory.mktemp("fp16_inorm") / "out"
    export(small_config(sample_dir, out, model=MODEL, weights=None if weights is None else str(weights), fp16=True))
    return out


def _norm_params(model):
    """[(node, input index, initializer or None)] for every normalisation parameter input."""
    from lightseg_edge.export.fp16 import PARAMETER_INPUTS

    inits = {i.name: i for i in model.graph.initializer}
    return [
        (n, i, inits.get(n.input[i]))
        for n in model.graph.node
        for i in PARAMETER_INPUTS.get(n.op_type, ())
        if i < len(n.input) and n.input[i]
    ]


def _constant_casts(model):
    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Cast" and n.input[0] in consts]


def test_fp16_instancenorm_parameters_are_initializers_and_preflight_86_ok(ucmnet_fp16):
    from lightseg_edge.export.trt_preflight import preflight

    path = ucmnet_fp16 / "model.fp16.onnx"
    m = onnx.load(str(path))
    params = _norm_params(m)
    inorm = [(n, i, init) for n, i, init in params if n.op_type == "InstanceNormalization"]
    assert len({n.name for n, _, _ in inorm}) == 26
    assert [(n.name, i) for n, i, init in params if init is None] == []  # every scale/B/bias is an initializer
    assert _constant_casts(m) == []  # no Constant(fp16) -> Cast(fp32) left anywhere
    for n, _, init in params:  # FP32 parameters for an FP32 node, FP16 ones for an FP16 node
        assert {init.data_type} <= {TensorProto.FLOAT, TensorProto.FLOAT16}, n.name

    report = preflight(path)
    assert report.result("8.6").status == "ok", report.result("8.6").summary()
    assert report.result("10.x").status == "ok"
    assert report.result("8.5").status == "ok", report.result("8.5").summary()  # the deploy form has no LayerNormalization


def test_folding_is_bit_identical_with_every_normalisation_in_fp32(ucmnet_fp16, sample_dir, tmp_path, monkeypatch):
    """Without check images every normalisation stays FP32: all 26 InstanceNorms read folded FP32 initializers, and
    the outputs on the sample images equal those of the same conversion with the folding switched off, bit for bit."""
    from lightseg_edge import get_model_config
    from lightseg_edge.data.layouts import list_samples
    from lightseg_edge.export import fp16
    from lightseg_edge.export.images import load_inputs
    from lightseg_edge.export.onnxrun import cpu_session
    from lightseg_edge.export.trt_preflight import preflight
    from lightseg_edge.types import PreprocessConfig

    src = ucmnet_fp16 / "model.onnx"
    folded = fp16.convert_fp16(src, tmp_path / "folded.onnx", None)
    with monkeypatch.context() as mp:
        mp.setattr(fp16, "fold_constant_casts", lambda graph: 0)
        mp.setattr(fp16, "parameters_as_initializers", lambda graph: 0)
        plain = fp16.convert_fp16(src, tmp_path / "plain.onnx", None)

    m = onnx.load(str(folded.path))
    inorm = [(n, init) for n, _, init in _norm_params(m) if n.op_type == "InstanceNormalization"]
    assert len(inorm) == 52 and all(init is not None and init.data_type == TensorProto.FLOAT for _, init in inorm)
    assert _constant_casts(m) == [] and _constant_casts(onnx.load(str(plain.path)))  # the converter alone leaves them
    assert folded.casts < plain.casts
    assert preflight(plain.path).result("8.6").status == "fail"  # what the folding fixes
    assert preflight(folded.path).result("8.6").status == "ok"

    a, b = cpu_session(folded.path), cpu_session(plain.path)
    inp = a.get_inputs()[0]
    pre = get_model_config(MODEL).preprocess
    cfg = PreprocessConfig(size=(inp.shape[2], inp.shape[3]), mode=pre.mode, mean=pre.mean, std=pre.std)
    x = load_inputs(list_samples(sample_dir, split="val") + list_samples(sample_dir, split="test"), cfg)
    for i in range(len(x)):
        ya, yb = a.run(None, {inp.name: x[i : i + 1]})[0], b.run(None, {inp.name: x[i : i + 1]})[0]
        assert np.isfinite(ya).all() and np.array_equal(ya, yb)
