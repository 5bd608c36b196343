"""The export target table, run end to end on real images: every target's artifacts land in the manifest, each one
loads through ``load_predictor`` from the export folder and agrees with the FP32 ONNX, and one the machine cannot run
is recorded as not scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_helpers import small_config

from lightseg_edge.data.io import read_image
from lightseg_edge.errors import BackendUnavailableError, ExportConfigError
from lightseg_edge.export.targets import BUILTIN_FORMATS, FORMATS, get_target
from lightseg_edge.manifest import read_manifest, verify_artifacts
from lightseg_edge.runtimes import load_predictor
from lightseg_edge.runtimes.registry import RUNTIMES, runtime_for_artifact

TARGETS = [f for f in FORMATS if f not in BUILTIN_FORMATS]


@pytest.mark.parametrize("name", TARGETS)
def test_each_target_row_names_a_registry_runtime(name):
    target = get_target(name)
    spec = RUNTIMES[target.runtime]
    if spec.artifact_prefix != name:  # served or fed by others (a Triton repository, images-in ONNX): no predictor loads it
        assert runtime_for_artifact(f"{name}-fp32") is None and target.runnable() is not None
    else:
        assert target.name == name
    assert set(target.precisions) <= {"fp32", "fp16", "int8"} and "fp32" in target.precisions


def test_unknown_format_and_torch_only_target_from_onnx_are_config_errors(tmp_path):
    from lightseg_edge.export.config import validate

    with pytest.raises(ExportConfigError, match="--formats"):
        validate(small_config(tmp_path, None, model="ucmnet", formats=("onnx", "paddle")))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(ExportConfigError, match="--formats tflite: its converter starts from the PyTorch model"):
        validate(small_config(tmp_path, None, from_onnx=str(onnx), formats=("onnx", "tflite")))


def _mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture(scope="module")
def all_targets(sample_dir, tmp_path_factory):
    pytest.importorskip("openvino")
    pytest.importorskip("litert_torch")
    pytest.importorskip("coremltools")
    from lightseg_edge.export import export

    out = tmp_path_factory.mktemp("targets") / "ucmnet"
    export(small_config(sample_dir, out, model="ucmnet", fp16=True, formats=("onnx", "openvino", "tflite", "coreml")))
    return out


def test_every_artifact_is_listed_and_verified(all_targets):
    man = read_manifest(all_targets)
    assert {"fp32", "fp16", "openvino-fp32", "openvino-fp16", "tflite-fp32", "coreml-fp32", "coreml-fp16"} <= set(man["artifacts"])
    assert verify_artifacts(all_targets, man) == []
    assert man["artifacts"]["openvino-fp32"]["companions"][0]["path"] == "openvino-fp32.bin"
    assert (all_targets / "model.fp16.mlpackage").is_dir()
    acc = man["accuracy"]
    assert {"openvino-fp32", "openvino-fp16", "tflite-fp32"} <= set(acc["variants"])
    assert set(acc["not_scored"]) == {"coreml-fp32", "coreml-fp16"}  # Linux: never a figure for what did not run


@pytest.mark.parametrize("runtime,precision,floor", [("openvino", "fp32", 0.999), ("openvino", "fp16", 0.99), ("litert", "fp32", 0.999)])
def test_target_predictors_from_the_folder_agree_with_onnx_fp32(all_targets, sample_dir, runtime, precision, floor):
    images = [read_image(p) for p in sorted((sample_dir / "images").iterdir())]
    with load_predictor(all_targets, runtime="onnxruntime", precision="fp32") as ref, \
            load_predictor(all_targets, runtime=runtime, precision=precision) as pred:
        assert pred.runtime.value == runtime and pred.precision.value == precision
        dice = [_mask_dice(ref.predict(im), pred.predict(im)) for im in images]
    assert min(dice) >= floor, dice


def test_a_tampered_companion_is_refused(all_targets, tmp_path):
    import shutil

    from lightseg_edge.errors import ManifestError

    copy = tmp_path / "copy"
    shutil.copytree(all_targets, copy)
    with open(copy / "openvino-fp32.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ManifestError, match="openvino-fp32.bin: sha256 .* does not match"):
        load_predictor(copy, runtime="openvino", precision="fp32")
    (copy / "model.fp32.mlpackage" / "Manifest.json").write_text("{}")
    assert any("model.fp32.mlpackage" in p for p in verify_artifacts(copy, json.loads((copy / "manifest.json").read_text())))


def test_core_ml_is_exported_but_not_runnable_here(all_targets):
    import sys

    if sys.platform == "darwin":
        pytest.skip("runs on macOS")
    with pytest.raises(BackendUnavailableError, match="Core ML models run only on macOS"):
        load_predictor(all_targets, runtime="coreml", precision="fp16")


def test_bench_export_dir_has_a_row_per_target_artifact(all_targets, tmp_path):
    from lightseg_edge.cli.bench import main

    out = tmp_path / "r.json"
    assert main(["--export-dir", str(all_targets), "--iters", "2", "--warmup", "1", "--threads", "1",
                 "--json", str(out), "--quiet"]) == 0
    rows = {(r["runtime"], r["precision"]): r for r in json.loads(out.read_text())["results"]}
    for key in ("openvino-fp32", "openvino-fp16", "tflite-fp32"):
        spec = next(s for s in RUNTIMES.values() if s.artifact_prefix and key.startswith(s.artifact_prefix))
        assert rows[(spec.runtime.value, key.rsplit("-", 1)[1])]["status"] == "ok"
    assert rows[("coreml", "fp16")]["status"] == "skipped" and "macOS" in rows[("coreml", "fp16")]["reason"]


def test_a_step_that_cannot_run_here_is_skipped_not_failed():
    from lightseg_edge.export.steps import SKIPPED, StepLog

    def bf16_on_an_old_cpu():
        raise BackendUnavailableError("this CPU has no bf16")

    steps = StepLog()
    assert steps.run("accuracy-openvino-bf16", bf16_on_an_old_cpu, skip_on=(BackendUnavailableError,)) is None
    (rec,) = steps.records
    assert rec.status == SKIPPED and rec.output == "not runnable here: this CPU has no bf16"


def test_dynamic_batch_is_refused_only_by_fixed_batch_targets(tmp_path):
    from lightseg_edge.export.config import validate

    for name in TARGETS:
        cfg = small_config(tmp_path, None, model="ucmnet", dynamic_batch=(1, 4, 8), formats=("onnx", name))
        if get_target(name).static_batch:
            with pytest.raises(ExportConfigError, match=f"--formats {name}: .* static batch"):
                validate(cfg)
        else:
            validate(cfg)  # ONNX-based (triton, embedded): the dynamic batch carries over
    assert {n for n in TARGETS if not get_target(n).static_batch} == {"triton", "embedded"}
