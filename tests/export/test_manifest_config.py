"""The manifest contract (atomic write, strict read) and config validation; no torch needed."""

from __future__ import annotations

import json

import pytest

from lightseg_edge.errors import ExportConfigError, ManifestError
from lightseg_edge.export.config import ExportConfig, check_img_size, parse_dynamic_batch, validate
from lightseg_edge.manifest import FORMAT, read_manifest, sha256_file, verify_artifacts, write_manifest


def _manifest(**over):
    m = {
        "format": FORMAT,
        "model": "ucmnet",
        "created": "2026-01-01T00:00:00+00:00",
        "weights": {"source": "random", "sha256": None},
        "input": {"name": "input", "shape": [1, 3, 256, 256], "dtype": "float32", "output_name": "logits"},
        "preprocess": {"size": [256, 256], "mode": "minmax", "mean": [0, 0, 0], "std": [1, 1, 1]},
        "output": "logits",
        "opset": 17,
        "artifacts": {"fp32": {"path": "model.onnx", "sha256": None}},
        "parity": {},
        "calibration": None,
        "accuracy": {},
        "tensorrt": None,
        "tools": {},
        "steps": [],
    }
    m.update(over)
    return m


def test_round_trip_and_verification(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    m = _manifest(artifacts={"fp32": {"path": "model.onnx", "sha256": sha256_file(tmp_path / "model.onnx")}})
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    assert read_manifest(tmp_path / "manifest.json") == m
    assert verify_artifacts(tmp_path, m) == []
    (tmp_path / "model.onnx").write_bytes(b"changed")
    assert "does not match the manifest's" in verify_artifacts(tmp_path, m)[0]
    (tmp_path / "model.onnx").unlink()
    assert "is missing" in verify_artifacts(tmp_path, m)[0]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"no export manifest here"),
        ("{not json", r"cannot read the manifest"),
        ("[]", r"expected a JSON object"),
        (json.dumps(_manifest(format="other/1")), r"not a lightseg export manifest"),
        (json.dumps({k: v for k, v in _manifest().items() if k != "artifacts"}), r"missing key 'artifacts'"),
        (json.dumps(_manifest(artifacts={"fp16": {"path": "m.onnx"}})), r"at least the 'fp32' model"),
        (json.dumps(_manifest(artifacts={"fp32": {"path": "../model.onnx"}})), r"relative to the folder"),
        (json.dumps(_manifest(artifacts={"fp32": {"path": "model.onnx"}, "tflite": {"path": "x"}})), r"unknown artifact kind 'tflite'"),
    ],
)
def test_bad_manifests_raise_manifest_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_write_refuses_an_invalid_manifest(tmp_path):
    with pytest.raises(ManifestError, match="missing keys"):
        write_manifest(tmp_path, {"format": FORMAT})
    assert list(tmp_path.iterdir()) == []


def test_importing_export_loads_nothing_heavy():
    """The manifest is read on devices with only the standard library; the package top loads nothing either."""
    import subprocess
    import sys

    heavy = "('torch', 'numpy', 'onnx', 'onnxruntime', 'tensorrt')"
    for stmt in ("import lightseg_edge.manifest", "from lightseg_edge.export import ExportConfig; ExportConfig(model='x')"):
        code = f"import sys; {stmt}; bad = [k for k in {heavy} if k in sys.modules]; assert not bad, bad"
        subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, r"nothing to export"),
        ({"model": "ucmnet", "opset": 16}, r"--opset 16 is not supported; expected 17\.\.20"),
        ({"model": "ucmnet", "opset": 21}, r"--opset 21 is not supported"),
        ({"model": "ucmnet", "batch": 0}, r"--batch must be a positive integer, got 0"),
        ({"model": "ucmnet", "batch": 2, "dynamic_batch": (1, 2, 4)}, r"exclusive"),
        ({"model": "ucmnet", "dynamic_batch": (4, 2, 8)}, r"MIN <= OPT <= MAX"),
        ({"model": "ucmnet", "simplifier": "polygraphy"}, r"--simplifier 'polygraphy' is unknown"),
        ({"model": "ucmnet", "int8": True}, r"--int8 needs --calib-data"),
        ({"model": "ucmnet", "calib_data": "."}, r"did you mean to add --int8"),
        ({"model": "ucmnet", "int8": True, "calib_data": "/nonexistent/calib"}, r"--calib-data /nonexistent/calib: folder not found"),
        ({"model": "ucmnet", "int8": True, "calib_data": ".", "calib_images": 0}, r"--calib-images must be a positive integer"),
        ({"model": "ucmnet", "int8": True, "calib_data": ".", "int8_method": "trt"}, r"--int8-method 'trt' is unknown"),
        ({"model": "ucmnet", "int8": True, "calib_data": ".", "int8_method": "modelopt", "calib_method": "percentile"},
         r"percentile is not offered by ModelOpt"),
        ({"model": "ucmnet", "int8": True, "calib_data": ".", "int8_keep": ""}, r"--int8-keep '': expected auto, none"),
        ({"model": "ucmnet", "fp16": True, "min_agreement": 1.5}, r"--min-agreement must be a number from 0 to 1"),
        ({"model": "ucmnet", "workspace_mb": -1}, r"--workspace must be a positive integer"),
        ({"model": "ucmnet", "data": "/nonexistent/data"}, r"--data /nonexistent/data: folder not found"),
        ({"from_onnx": "/nonexistent/model.onnx"}, r"--from-onnx /nonexistent/model.onnx: file not found"),
        ({"from_onnx": __file__, "weights": "random"}, r"--weights has no effect with --from-onnx"),
        ({"from_onnx": __file__, "img_size": 256}, r"--img-size has no effect with --from-onnx"),
    ],
)
def test_validate_rejects_contradictions(kwargs, message):
    with pytest.raises(ExportConfigError, match=message):
        validate(ExportConfig(**kwargs))


def test_validate_accepts_a_full_config(tmp_path):
    validate(ExportConfig(model="ucmnet", fp16=True, int8=True, calib_data=str(tmp_path), dynamic_batch=(1, 8, 32), opset=18))


def test_parse_dynamic_batch_and_stride():
    assert parse_dynamic_batch("1, 8,32") == (1, 8, 32)
    with pytest.raises(ExportConfigError, match="three integers"):
        parse_dynamic_batch("1,x,3")
    check_img_size(256, "m", 32)
    with pytest.raises(ExportConfigError, match="use 224 or 256"):
        check_img_size(250, "m", 32)
    with pytest.raises(ExportConfigError, match=r"use 32$"):
        check_img_size(16, "m", 32)
