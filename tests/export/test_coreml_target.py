"""The Core ML export target (conversion + static package check) and the Core ML predictor's platform guard.

coremltools converts and saves on Linux but cannot run predictions there, so these tests check the saved packages
through coremltools' own spec loader and the weight blobs on disk, never by running them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ct = pytest.importorskip("coremltools")

from lightseg_edge.errors import BackendUnavailableError, ExportConfigError, InvalidInputError  # noqa: E402
from lightseg_edge.export.targets import TargetJob  # noqa: E402
from lightseg_edge.export.targets.coreml import TARGET, check_package  # noqa: E402
from lightseg_edge.runtimes.coreml_backend import CoreMLPredictor  # noqa: E402
from lightseg_edge.types import InputSpec, PreprocessConfig, Runtime  # noqa: E402

SPEC = InputSpec(name="input", shape=(1, 3, 256, 256), output_name="logits")


def _job(stage: Path, model, precisions=("fp32", "fp16"), spec: InputSpec = SPEC) -> TargetJob:
    return TargetJob(onnx_fp32=stage / "model.onnx", stage=stage, precisions=precisions, preprocess=PreprocessConfig(),
                     input_spec=spec, model_name="ucmnet", model=model)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """ucmnet (random weights) converted once at both precisions: (stage folder, {precision: BuiltArtifact})."""
    from lightseg_edge.models import create_model

    stage = tmp_path_factory.mktemp("coreml")
    model = create_model("ucmnet").eval()
    arts = TARGET.build(_job(stage, model.deploy(model.form_for(Runtime.COREML)), precisions=("fp32", "fp16", "int8")))
    return stage, {a.precision: a for a in arts}


def test_target_row():
    assert TARGET.name == "coreml" and TARGET.runtime is Runtime.COREML
    assert TARGET.precisions == ("fp32", "fp16") and TARGET.needs_torch_model
    reason = TARGET.runnable()
    if sys.platform == "darwin":
        assert reason is None
    else:
        assert "macOS" in reason and "\n" not in reason


def test_artifacts_and_manifest_fields(built):
    stage, arts = built
    assert sorted(arts) == ["fp16", "fp32"]  # int8 was asked for and is not a Core ML precision here
    for precision, art in arts.items():
        assert art.key == f"coreml-{precision}" and art.path == f"model.{precision}.mlpackage"
        assert (stage / art.path).is_dir() and (stage / art.path / "Manifest.json").is_file()
        extra = art.extra
        assert extra["coremltools"] == ct.__version__ and extra["minimum_deployment_target"] == "iOS16"
        assert extra["compute_precision"] == ("FLOAT16" if precision == "fp16" else "FLOAT32")
        assert extra["check"]["weight_precision"] == precision


def test_packages_parse_with_coremltools_spec_loader(built):
    stage, arts = built
    for art in arts.values():
        spec = ct.utils.load_spec(str(stage / art.path))  # coremltools' own reader, no compilation
        assert spec.WhichOneof("Type") == "mlProgram"
        (inp,), (out,) = spec.description.input, spec.description.output
        assert inp.name == "input" and list(inp.type.multiArrayType.shape) == [1, 3, 256, 256]
        assert out.name == "logits" and list(out.type.multiArrayType.shape) == [1, 1, 256, 256]
        float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
        assert inp.type.multiArrayType.dataType == float32 and out.type.multiArrayType.dataType == float32


def test_fp16_package_stores_fp16_weights(built):
    stage, arts = built
    checks = {p: a.extra["check"] for p, a in arts.items()}
    assert set(checks["fp16"]["weight_elements"]) == {"FLOAT16"}
    assert set(checks["fp32"]["weight_elements"]) == {"FLOAT32"}
    assert checks["fp16"]["weight_elements"]["FLOAT16"] == checks["fp32"]["weight_elements"]["FLOAT32"] > 40_000
    # the weight blobs on disk: half the bytes (plus per-blob headers)
    blob = {p: (stage / a.path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size for p, a in arts.items()}
    assert blob["fp16"] < 0.6 * blob["fp32"]
    for p, a in arts.items():
        size = sum(f.stat().st_size for f in (stage / a.path).rglob("*") if f.is_file())
        assert checks[p]["size_bytes"] == size
    assert checks["fp16"]["size_bytes"] < checks["fp32"]["size_bytes"]


def test_check_package_rejects_a_mismatch_in_one_line(built):
    stage, arts = built
    path = stage / arts["fp32"].path
    for wrong in (InputSpec(name="image", shape=(1, 3, 256, 256)), InputSpec(shape=(1, 3, 192, 192)),
                  InputSpec(output_name="mask")):
        with pytest.raises(InvalidInputError) as err:
            check_package(path, wrong)
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidInputError, match="not an .mlpackage"):
        check_package(stage, SPEC)


def test_no_torch_model_is_a_config_error(tmp_path):
    with pytest.raises(ExportConfigError, match="--model NAME"):
        TARGET.build(_job(tmp_path, None))


def test_dynamic_batch_is_a_config_error(tmp_path):
    with pytest.raises(ExportConfigError, match="static input shape"):
        TARGET.build(_job(tmp_path, object(), spec=InputSpec(shape=(None, 3, 256, 256))))


@pytest.mark.skipif(sys.platform == "darwin", reason="the Linux/Windows guard; on macOS the package would load")
def test_predictor_refuses_off_macos_at_once(built, tmp_path):
    stage, arts = built
    for path in (stage / arts["fp16"].path, tmp_path / "missing.mlpackage"):  # the guard needs neither file nor coremltools
        with pytest.raises(BackendUnavailableError) as err:
            CoreMLPredictor(path, PreprocessConfig())
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and "macOS" in msg


def test_registry_row_points_at_the_predictor():
    from lightseg_edge.runtimes.registry import get_runtime

    spec = get_runtime("coreml")
    assert spec.predictor_class() is CoreMLPredictor and spec.artifact_prefix == "coreml"
