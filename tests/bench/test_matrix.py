"""Which jobs and which pre-decided rows each source produces (nothing is measured here)."""

from __future__ import annotations

import shutil

import pytest

from lightseg_edge._optional import is_available
from lightseg_edge.bench.matrix import BenchOptions, Plan, make_plan, plan_model, resolve_weights
from lightseg_edge.errors import InvalidInputError, LightsegError
from lightseg_edge.models import list_models
from lightseg_edge.models._weights import has_pretrained

NO_TRT = not is_available("tensorrt")


def test_weights_resolution(tmp_path):
    for name in list_models():  # shipped weights when the registry has them, else seeded random weights, said so
        shipped = has_pretrained(name)
        w = resolve_weights(name, None)
        assert (w.value, w.label, w.meaningful) == ((None, "pretrained", True) if shipped else ("random:0", "random:0", False))
        assert shipped or "no shipped weights" in w.note
    assert resolve_weights("ucmnet", "random:7").label == "random:7"
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    assert resolve_weights("ucmnet", str(ckpt)).meaningful
    with pytest.raises(InvalidInputError, match="file not found"):
        resolve_weights("ucmnet", str(tmp_path / "nope.pt"))
    with pytest.raises(InvalidInputError, match="integer seed"):
        resolve_weights("ucmnet", "random:x")


def test_pytorch_int8_and_cpu_fp16_are_skipped_rows_not_jobs():
    plan = Plan()
    plan_model(plan, BenchOptions(precisions=("fp32", "fp16", "int8")), "ucmnet", "random")
    assert [(j.runtime, j.precision) for j in plan.jobs] == [("pytorch", "fp32")]
    reasons = {r.precision: r.reason for r in plan.rows}
    assert "no INT8 mode" in reasons["int8"] and "CUDA" in reasons["fp16"]
    assert plan.models == ["ucmnet"]


@pytest.mark.skipif(not NO_TRT, reason="TensorRT is installed here")
def test_all_without_tensorrt_has_one_skipped_row_per_model(monkeypatch):
    opts = BenchOptions(runtimes=("pytorch", "tensorrt"), models=("ucmnet", "egeunet"))
    plan = make_plan("all", None, opts)
    assert [(j.model, j.precision) for j in plan.jobs] == [("ucmnet", "fp32"), ("egeunet", "fp32")]
    trt = [r for r in plan.rows if r.runtime == "tensorrt"]
    assert [(r.model, r.precision) for r in trt] == [("ucmnet", "fp32,fp16,int8"), ("egeunet", "fp32,fp16,int8")]
    assert all("TensorRT is not installed" in r.reason for r in trt)
    assert not any(r.runtime == "pytorch" and r.precision == "int8" for r in plan.rows)  # impossible by design: left out of --all


def test_img_size_the_model_cannot_take():
    with pytest.raises(LightsegError, match="stride 64"):
        make_plan("model", "ucmnet", BenchOptions(img_size=96), weights="random")
    plan = make_plan("all", None, BenchOptions(img_size=96, runtimes=("pytorch",), precisions=("fp32",), models=("ucmnet", "unet")))
    assert [r.model for r in plan.rows] == ["ucmnet"] and "stride 64" in plan.rows[0].reason
    assert [j.model for j in plan.jobs] == ["unet"]


def test_export_dir_offers_every_artifact_and_pytorch_with_the_same_weights(ucmnet_export):
    plan = make_plan("export-dir", str(ucmnet_export), BenchOptions())
    assert [(j.runtime, j.precision) for j in plan.jobs] == [("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8")]
    assert plan.jobs[0].weights == "random:0" and {j.weights_label for j in plan.jobs} == {"random:0"}
    assert not any(j.accuracy for j in plan.jobs)
    plan = make_plan("export-dir", str(ucmnet_export), BenchOptions(runtimes=("tensorrt",)))
    assert not plan.jobs and "no TensorRT engine" in plan.rows[0].reason


def test_onnx_with_and_without_a_manifest(ucmnet_export, tmp_path):
    plan = make_plan("onnx", str(ucmnet_export / "model.int8.onnx"), BenchOptions())
    job = plan.jobs[0]
    assert (job.model, job.precision, job.weights_label, job.preprocess) == ("ucmnet", "int8", "random:0", None)
    bare = shutil.copy(ucmnet_export / "model.int8.onnx", tmp_path / "other.onnx")
    plan = make_plan("onnx", bare, BenchOptions())
    job = plan.jobs[0]
    assert job.model is None and job.precision == "int8" and job.preprocess["size"] == [256, 256] and not job.accuracy
    with pytest.raises(InvalidInputError, match="one precision"):
        make_plan("onnx", bare, BenchOptions(precisions=("fp32", "int8")))
    with pytest.raises(InvalidInputError, match="fixed at 256x256"):
        make_plan("onnx", str(ucmnet_export / "model.onnx"), BenchOptions(img_size=320))
    with pytest.raises(InvalidInputError, match="onnxruntime only"):
        make_plan("onnx", bare, BenchOptions(runtimes=("tensorrt",)))
