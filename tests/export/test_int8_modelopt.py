"""The ModelOpt INT8 route (``export.int8_modelopt``) on a real, trained model: UCM-Net with its shipped ISIC
weights, exported at 128x128 (static batch 1) and calibrated on real ISIC training images.

Checked here: the Q/DQ graph keeps every rule the TensorRT parser enforces (``check_qdq_for_tensorrt``) and ONNX
Runtime runs it; the layer reading the image and any ``keep`` node stay FP32; percentile calibration (which ModelOpt
does not have) is refused up front; ModelOpt's patches to onnxruntime.quantization do not leak into the ONNX Runtime
route; and INT8 masks agree with the FP32 ONNX masks on held-out ISIC 2018 images (skipped without the full data set).

No TensorRT engine is built from the output here (no GPU).
"""

from __future__ import annotations

import dataclasses

import pytest
from export_helpers import export_size, small_config

pytest.importorskip("modelopt.onnx.quantization")
onnx = pytest.importorskip("onnx")

MODEL = "ucmnet"
MIN_AGREEMENT = 0.95
# Measured: 0.977 here (128x128, 32 calibration and 20 val images, minmax); 0.990 (minmax) / 0.991 (entropy) on 100
# ISIC val images at 256x256 with 400 calibration images. A broken conversion (wrong scales, flipped or empty masks)
# falls far below 0.9.
ISIC_CALIB, ISIC_HELDOUT = 32, 20
CALIBRATION_KEYS = {"root", "layout", "split", "images", "available", "seed", "method", "batch", "list_sha256", "preprocess", "quantizer"}


@pytest.fixture(scope="module")
def fp32(sample_dir, tmp_path_factory):
    """(model.onnx, its preprocessing) from a small lightseg-export run."""
    from lightseg_edge import get_model_config
    from lightseg_edge.export import export

    out = tmp_path_factory.mktemp("mo-onnx")
    export(small_config(sample_dir, out, model=MODEL, img_size=export_size(MODEL)))
    size = export_size(MODEL)
    return out / "model.onnx", dataclasses.replace(get_model_config(MODEL).preprocess, size=(size, size))


@pytest.fixture(scope="module")
def quantized(fp32, sample_dir, tmp_path_factory):
    """ModelOpt minmax INT8 of the export, calibrated on the sample's four training images."""
    from lightseg_edge.export.images import calibration_set
    from lightseg_edge.export.int8_modelopt import quantize_int8_modelopt

    src, cfg = fp32
    dst = tmp_path_factory.mktemp("mo-int8") / "model.int8.onnx"
    res = quantize_int8_modelopt(src, dst, calibration_set(str(sample_dir), 4), cfg, progress=False)
    return res, onnx.load(str(dst))


def _dq_fed(model, node_name: str):
    """Inputs of the node ``node_name`` that come out of a DequantizeLinear."""
    produced_by = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [i for i in node.input if i in produced_by and produced_by[i].op_type == "DequantizeLinear"]


def test_output_keeps_the_tensorrt_rules_and_runs_in_onnxruntime(quantized, fp32, sample_dir):
    import numpy as np
    import onnxruntime as ort
    from onnx import numpy_helper

    from lightseg_edge.data.io import read_image
    from lightseg_edge.data.transforms import preprocess
    from lightseg_edge.export.int8 import check_qdq_for_tensorrt

    res, model = quantized
    problems, n_q, per_channel = check_qdq_for_tensorrt(model)
    assert problems == [] and n_q > 0 and per_channel > 0
    assert (res.quantize_linear, res.per_channel_weights) == (n_q, per_channel)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"} | {n.domain for n in model.graph.node}
    # every quantized Conv weight has one scale per output channel (simplify=True folds Constant-node weights first)
    produced_by = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    weight_dq = [produced_by[n.input[1]] for n in model.graph.node
                 if n.op_type == "Conv" and n.input[1] in produced_by and produced_by[n.input[1]].op_type == "DequantizeLinear"]
    assert len(weight_dq) == per_channel
    assert all(numpy_helper.to_array(inits[dq.input[1]]).size > 1 for dq in weight_dq)

    cal = res.calibration
    assert set(cal) == CALIBRATION_KEYS
    assert cal["split"] == "train" and cal["images"] == 4 and cal["method"] == "minmax" and cal["batch"] == 1
    assert len(cal["list_sha256"]) == 64
    q = cal["quantizer"]
    assert q["tool"] == "modelopt.onnx.quantization.quantize" and q["version"] and q["high_precision_dtype"] == "fp32"
    assert q["calibration_method"] == "max" and q["opset"] >= 19  # ModelOpt's minimum opset for Q/DQ

    # FP32 in and out (high_precision_dtype fp32, not ModelOpt's FP16 default), and ONNX Runtime runs it
    src, cfg = fp32
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.type == out.type == "tensor(float)"
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    x = preprocess(read_image(sorted((sample_dir / "images").iterdir())[0]), cfg)[None]
    y = sess.run(None, {inp.name: x})[0]
    assert y.shape == (1, 1, *cfg.size) and np.isfinite(y).all()


def test_the_image_reading_layer_and_the_statistics_stay_fp32(quantized, fp32):
    from lightseg_edge.export.int8 import image_layers, statistics_layers

    res, model = quantized
    source = onnx.load(str(fp32[0]))
    first, stats = image_layers(source), statistics_layers(source)
    assert first and stats and res.calibration["quantizer"]["kept_fp32"] == first + stats
    for name in first + stats:
        assert _dq_fed(model, name) == [], f"{name} must keep FP32 inputs and weights"


def test_keep_leaves_that_node_without_qdq(quantized, fp32, sample_dir, tmp_path):
    from lightseg_edge.export.images import calibration_set
    from lightseg_edge.export.int8 import check_qdq_for_tensorrt
    from lightseg_edge.export.int8_modelopt import quantize_int8_modelopt

    _, model = quantized
    convs = [n.name for n in model.graph.node if n.op_type == "Conv" and _dq_fed(model, n.name)]
    assert len(convs) > 5
    kept = convs[len(convs) // 2]
    src, cfg = fp32
    res = quantize_int8_modelopt(src, tmp_path / "kept.onnx", calibration_set(str(sample_dir), 4), cfg, progress=False, keep=[kept])
    again = onnx.load(str(res.path))
    assert _dq_fed(again, kept) == []
    assert kept in res.calibration["quantizer"]["kept_fp32"]
    assert check_qdq_for_tensorrt(again)[0] == []
    # an exact name, not a pattern: the other convolutions stay quantized
    assert all(_dq_fed(again, c) for c in convs if c != kept)


def test_percentile_and_unknown_nodes_are_config_errors(fp32, sample_dir, tmp_path):
    from lightseg_edge.errors import ExportConfigError
    from lightseg_edge.export.images import calibration_set
    from lightseg_edge.export.int8_modelopt import quantize_int8_modelopt

    src, cfg = fp32
    images = calibration_set(str(sample_dir), 4)
    with pytest.raises(ExportConfigError, match=r"percentile.*not offered by ModelOpt"):
        quantize_int8_modelopt(src, tmp_path / "p.onnx", images, cfg, method="percentile", progress=False)
    with pytest.raises(ExportConfigError, match=r"keep: no node named '/no/such/Conv'"):
        quantize_int8_modelopt(src, tmp_path / "k.onnx", images, cfg, progress=False, keep=["/no/such/Conv"])
    assert not list(tmp_path.iterdir())


def test_onnxruntime_route_is_unaffected_by_modelopt(quantized, fp32, sample_dir, tmp_path):
    """ModelOpt patches onnxruntime.quantization while it runs; without undoing that, quantize_static fails afterwards
    in the same process ('Quantization parameters are not specified for param ...')."""
    from onnxruntime.quantization import calibrate, registry

    from lightseg_edge.export.images import calibration_set
    from lightseg_edge.export.int8 import check_qdq_for_tensorrt, quantize_int8
    from lightseg_edge.export.int8_modelopt import quantize_int8_modelopt

    src, cfg = fp32
    images = calibration_set(str(sample_dir), 4)
    def state():
        return (dict(vars(calibrate.CalibraterBase)), dict(vars(calibrate.MinMaxCalibrater)), dict(vars(calibrate.HistogramCollector)),
                dict(registry.QDQRegistry), calibrate.create_calibrator)

    before = state()
    quantize_int8_modelopt(src, tmp_path / "mo.onnx", images, cfg, method="entropy", progress=False)
    assert state() == before
    res = quantize_int8(src, tmp_path / "ort.onnx", images, cfg, progress=False)
    assert check_qdq_for_tensorrt(onnx.load(str(res.path)))[0] == []


def test_masks_agree_with_fp32_on_isic_val(fp32, isic_root, tmp_path):
    from lightseg_edge.data.io import read_image
    from lightseg_edge.export.images import calibration_set, heldout_set
    from lightseg_edge.export.int8_modelopt import quantize_int8_modelopt
    from lightseg_edge.metrics import Confusion, dice
    from lightseg_edge.runtimes.onnxruntime_backend import OnnxRuntimePredictor

    src, cfg = fp32
    res = quantize_int8_modelopt(src, tmp_path / "model.int8.onnx", calibration_set(str(isic_root), ISIC_CALIB), cfg, progress=False)
    assert res.calibration["images"] == ISIC_CALIB and res.calibration["split"] == "train"
    images = [read_image(s.image) for s in heldout_set(str(isic_root), ISIC_HELDOUT).samples]
    with OnnxRuntimePredictor(src, cfg, threads=1) as p:
        ref = p.predict_batch(images)
    with OnnxRuntimePredictor(res.path, cfg, threads=1, precision="int8") as p:
        masks = p.predict_batch(images)
    assert 0.05 < sum(m.mean() for m in ref) / len(ref) < 0.95, "reference masks are trivial; the comparison would prove nothing"
    agree = Confusion(0, 0, 0, 0)
    for a, b in zip(masks, ref):
        agree = agree + Confusion.of(a, b)
    assert dice(agree) >= MIN_AGREEMENT
