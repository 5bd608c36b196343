"""load_predictor: every kind of source, the runtime it picks, and the error for each way it can go wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import MODEL, write_manifest

from lightseg_edge.errors import (
    BackendUnavailableError,
    CheckpointError,
    EngineError,
    InvalidInputError,
    ManifestError,
    UnknownModelError,
)
from lightseg_edge.runtimes import load_predictor
from lightseg_edge.types import PreprocessConfig, Runtime


@pytest.fixture()
def folder_copy(export_dir, tmp_path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(export_dir, dst)
    return dst


# -- export folders -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variants, headline", [(("fp32",), "fp32"), (("fp32", "fp16"), "fp16"), (("fp32", "fp16", "int8"), "int8")])
def test_export_folder_runs_its_headline_precision_by_default(folder_copy, sample_images, variants, headline):
    """A folder exported with --fp16 (named ...-fp16) runs its fp16 graph unless told otherwise, as its engine would."""
    man = json.loads((folder_copy / "manifest.json").read_text())
    man["artifacts"] = {k: v for k, v in man["artifacts"].items() if k in variants}
    (folder_copy / "manifest.json").write_text(json.dumps(man))
    with load_predictor(folder_copy, device="cpu") as p:
        assert p.runtime is Runtime.ONNXRUNTIME and p.precision.value == headline
        assert Path(p.source).name == {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}[headline]
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]


@pytest.mark.parametrize("precision,file", [("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx")])
def test_precision_picks_the_artifact(export_dir, precision, file):
    with load_predictor(export_dir, precision=precision, device="cpu") as p:
        assert Path(p.source).name == file and p.precision.value == precision


def test_missing_precision_lists_what_exists(folder_copy):
    man = json.loads((folder_copy / "manifest.json").read_text())
    del man["artifacts"]["int8"]
    (folder_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match=r"no int8 ONNX Runtime artifact in this export; available: fp32, fp16"):
        load_predictor(folder_copy, precision="int8")


def test_tensorrt_on_a_folder_without_engine(export_dir):
    with pytest.raises(ManifestError, match="has no TensorRT engine"):
        load_predictor(export_dir, runtime="tensorrt")


def test_truncated_artifact_is_caught_by_its_sha256(folder_copy):
    data = (folder_copy / "model.onnx").read_bytes()
    (folder_copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ManifestError, match=r"model.onnx: sha256 .* does not match the manifest"):
        load_predictor(folder_copy, precision="fp32")


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("input"), r"missing key 'input'"),
    (lambda m: m.update(format="something-else/3"), r"unsupported manifest format 'something-else/3'"),
    (lambda m: m.update(format="lightseg-export/9"), r"written by a newer lightseg-edge"),
    (lambda m: m["artifacts"]["fp32"].update(path="../model.onnx"), r"must be relative to the export folder"),
    (lambda m: m.update(artifacts={}), r"'artifacts' is empty"),
    (lambda m: m["preprocess"].update(mode="bogus"), r"invalid 'input' or 'preprocess' entry"),
])
def test_bad_manifest(folder_copy, edit, message):
    man = json.loads((folder_copy / "manifest.json").read_text())
    edit(man)
    (folder_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match=message):
        load_predictor(folder_copy)


def test_unreadable_manifest(folder_copy):
    (folder_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_predictor(folder_copy)


def test_folder_without_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json here"):
        load_predictor(tmp_path)


def test_pytorch_runtime_on_a_folder_uses_the_exported_weights(export_dir, sample_images):
    with load_predictor(export_dir, runtime="pytorch", device="cpu") as pt, load_predictor(export_dir, precision="fp32", device="cpu") as ort_p:
        assert pt.runtime is Runtime.PYTORCH
        np.testing.assert_allclose(pt.predict_proba(sample_images[0]), ort_p.predict_proba(sample_images[0]), atol=1e-4)


# -- .onnx files --------------------------------------------------------------------------------------------------
def test_onnx_with_manifest_beside_uses_its_preprocessing(folder_copy):
    man = json.loads((folder_copy / "manifest.json").read_text())
    man["preprocess"]["mode"] = "scale"
    (folder_copy / "manifest.json").write_text(json.dumps(man))
    with load_predictor(folder_copy / "model.fp16.onnx") as p:
        assert p.preprocess_config.mode == "scale" and p.precision.value == "fp16"


def test_bare_onnx_needs_preprocessing(onnx_file):
    with pytest.raises(InvalidInputError, match=r"no manifest.json beside this file.*preprocess=PreprocessConfig"):
        load_predictor(onnx_file)


def test_bare_onnx_with_preprocess_dict_or_model_name(onnx_file, model, sample_images):
    with load_predictor(onnx_file, preprocess={"size": [256, 256], "mode": "minmax"}) as p:
        assert p.preprocess_config == PreprocessConfig(size=(256, 256), mode="minmax")
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]
    with load_predictor(onnx_file, model=MODEL) as p:
        assert p.preprocess_config == model.cfg.preprocess


def test_preprocessing_that_contradicts_the_graph(onnx_file):
    with pytest.raises(InvalidInputError, match=r"preprocessing resizes to \(128, 128\) but the model input is \(256, 256\)"):
        load_predictor(onnx_file, preprocess=PreprocessConfig(size=(128, 128)))


def test_input_spec_that_contradicts_the_graph(onnx_file):
    spec = {"name": "images", "shape": [None, 3, 256, 256]}
    with pytest.raises(InvalidInputError, match=r"names the input 'images' but the graph's input is 'input'"):
        load_predictor(onnx_file, preprocess=PreprocessConfig(), input_spec=spec)


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(InvalidInputError, match="ONNX Runtime cannot load this model"):
        load_predictor(bad, preprocess=PreprocessConfig())


def test_onnx_on_the_wrong_runtime(onnx_file):
    with pytest.raises(InvalidInputError, match=r"a .onnx file runs on the onnxruntime runtime, not pytorch"):
        load_predictor(onnx_file, runtime="pytorch")


# -- ONNX Runtime options -----------------------------------------------------------------------------------------
def test_missing_provider_lists_the_available_ones(onnx_file):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(BackendUnavailableError, match=r"'CUDAExecutionProvider' is not available .*available: .*CPUExecutionProvider"):
        load_predictor(onnx_file, preprocess=PreprocessConfig(), device="cuda")
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        load_predictor(onnx_file, preprocess=PreprocessConfig(), providers=["tensorrt", "cpu"])


def test_ort_session_options(onnx_file, sample_images):
    with load_predictor(onnx_file, preprocess=PreprocessConfig(), threads=1, graph_optimization_level="basic") as p:
        assert p.providers == ["CPUExecutionProvider"]
        assert p.session.get_session_options().intra_op_num_threads == 1
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]
    with pytest.raises(InvalidInputError, match="graph_optimization_level 'fast'"):
        load_predictor(onnx_file, preprocess=PreprocessConfig(), graph_optimization_level="fast")


def test_fixed_batch_onnx(model, tmp_path, sample_images):
    from runtime_helpers import export_onnx

    path = export_onnx(model, tmp_path / "b2.onnx", batch=2)
    with load_predictor(path, preprocess=model.cfg.preprocess) as p:
        assert p.static_batch_size == 2 and p.input_spec.shape[0] == 2
        masks = p.predict_batch(sample_images[:3])  # 2 + 1 padded
        assert [m.shape for m in masks] == [im.shape[:2] for im in sample_images[:3]]
        with pytest.raises(InvalidInputError, match="fixed batch of 2"):
            p.infer(np.zeros((1, 3, 256, 256), np.float32))


# -- checkpoints, safetensors, model names, model objects ---------------------------------------------------------
def test_trainer_checkpoint(checkpoint, model, sample_images):
    with load_predictor(checkpoint, device="cpu") as p:
        assert p.runtime is Runtime.PYTORCH and p.preprocess_config == model.cfg.preprocess
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]


def test_bare_state_dict_needs_the_model_name(model, tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), str(path))
    with pytest.raises(CheckpointError, match="pass model=NAME"):
        load_predictor(path)
    with load_predictor(path, model=MODEL, device="cpu") as p:
        assert p.runtime is Runtime.PYTORCH


def test_checkpoint_for_another_model(model, tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), str(path))
    other = next(n for n in __import__("lightseg_edge").list_models() if n != MODEL)
    with pytest.raises(CheckpointError, match="do not fit model"):
        load_predictor(path, model=other)


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_predictor(path)


def test_safetensors(model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    named, anonymous = tmp_path / "named.safetensors", tmp_path / "anon.safetensors"
    save_file(state, str(named), metadata={"model": MODEL})
    save_file(state, str(anonymous))
    with load_predictor(named, device="cpu") as p:
        assert p.runtime is Runtime.PYTORCH
    with pytest.raises(CheckpointError, match="do not name their model; pass model=NAME"):
        load_predictor(anonymous)
    with load_predictor(anonymous, model=MODEL, device="cpu") as p:
        assert p.runtime is Runtime.PYTORCH


def test_registry_name_without_shipped_weights():
    from lightseg_edge.models import list_models
    from lightseg_edge.models._weights import has_pretrained

    unshipped = [name for name in list_models() if not has_pretrained(name)]
    if not unshipped:
        pytest.skip("every registry model ships weights")
    with pytest.raises(CheckpointError, match="has no shipped pretrained weights yet"):
        load_predictor(unshipped[0])


def test_registry_name_with_shipped_weights(model, tmp_path, monkeypatch, sample_images):
    from safetensors.torch import save_file

    from lightseg_edge.models import _weights

    path = tmp_path / f"{MODEL}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    monkeypatch.setattr(_weights, "pretrained_path", lambda name: path)
    with load_predictor(MODEL, device="cpu") as p, load_predictor(model, device="cpu") as ref:
        assert p.source == MODEL
        np.testing.assert_array_equal(p.predict(sample_images[0]), ref.predict(sample_images[0]))


def test_unknown_model_name_suggests():
    with pytest.raises(UnknownModelError, match=r"Did you mean 'ucmnet'"):
        load_predictor("ucmnett")


def test_model_object(model, sample_images):
    with load_predictor(model, device="cpu") as p:
        assert p.runtime is Runtime.PYTORCH
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]
    with pytest.raises(InvalidInputError, match="runs on the pytorch runtime, not onnxruntime"):
        load_predictor(model, runtime="onnxruntime")


def test_pytorch_device_and_precision_errors(checkpoint):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="sees no CUDA device"):
            load_predictor(checkpoint, device="cuda")
    with pytest.raises(BackendUnavailableError, match=r"precision='fp16' \(autocast\) needs a CUDA device"):
        load_predictor(checkpoint, device="cpu", precision="fp16")
    with pytest.raises(BackendUnavailableError, match="no INT8 mode"):
        load_predictor(checkpoint, device="cpu", precision="int8")


# -- general argument errors --------------------------------------------------------------------------------------
def test_missing_file():
    with pytest.raises(InvalidInputError, match=r"nope/model.onnx: no such file or folder"):
        load_predictor("nope/model.onnx")


def test_unknown_runtime_and_option(export_dir):
    with pytest.raises(InvalidInputError, match="unknown runtime 'paddle'; expected auto or one of pytorch, onnxruntime"):
        load_predictor(export_dir, runtime="paddle")
    with pytest.raises(ManifestError, match="has no OpenVINO artifact .*lightseg-export --formats openvino"):
        load_predictor(export_dir, runtime="openvino")
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) cuda_graph for the onnxruntime runtime"):
        load_predictor(export_dir, cuda_graph=True)
    with pytest.raises(InvalidInputError, match="precision 'fp8'"):
        load_predictor(export_dir, precision="fp8")


def test_unrecognised_file_type(tmp_path):
    f = tmp_path / "model.tf"
    f.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=r"unrecognised model file type '.tf'; expected an export folder or one of .pt, "):
        load_predictor(f)


# -- TensorRT files (the checks that run before TensorRT is needed) -----------------------------------------------
def test_truncated_engine_in_an_export_folder(folder_copy):
    engine = folder_copy / "model.fp16.plan"
    engine.write_bytes(b"\x00" * 4096)
    write_manifest(folder_copy, MODEL, PreprocessConfig(), {
        "fp32": {"path": "model.onnx"}, "engine": {"path": "model.fp16.plan", "precision": "fp16"}},
        tensorrt={"version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"})
    engine.write_bytes(b"\x00" * 1000)  # cut short after the manifest recorded its sha256
    with pytest.raises(EngineError, match=r"model.fp16.plan: sha256 .*1000 bytes.* truncated or corrupted"):
        load_predictor(folder_copy, runtime="tensorrt")


def test_empty_engine_file(tmp_path):
    f = tmp_path / "model.plan"
    f.write_bytes(b"")
    with pytest.raises(EngineError, match="the engine file is empty"):
        load_predictor(f, preprocess=PreprocessConfig())


def test_engine_without_preprocessing(tmp_path):
    f = tmp_path / "model.engine"
    f.write_bytes(b"\x00" * 64)
    with pytest.raises(InvalidInputError, match="preprocess=PreprocessConfig"):
        load_predictor(f)


def test_auto_uses_onnxruntime_when_tensorrt_is_not_installed(folder_copy):
    from lightseg_edge._optional import is_available

    if is_available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    (folder_copy / "model.fp16.plan").write_bytes(b"\x00" * 256)
    write_manifest(folder_copy, MODEL, PreprocessConfig(), {
        "fp32": {"path": "model.onnx"}, "engine": {"path": "model.fp16.plan", "precision": "fp16"}})
    with load_predictor(folder_copy) as p:
        assert p.runtime is Runtime.ONNXRUNTIME and Path(p.source).name == "model.onnx"


@pytest.mark.slow
def test_folder_written_by_the_export_pipeline(checkpoint, sample_dir, sample_images, tmp_path):
    """The export <-> runtime contract end to end: lightseg-export's folder loads for every ONNX precision."""
    try:
        from lightseg_edge.export import ExportConfig, export
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"export pipeline not available: {exc}")
    cfg = ExportConfig(model=MODEL, weights=str(checkpoint), fp16=True, int8=True, calib_data=str(sample_dir), calib_images=4,
                       data=str(sample_dir), parity_images=2, eval_images=2, fp16_check_images=2, dynamic_batch=(1, 2, 4),
                       output=str(tmp_path / "exp"), engine="off", progress=False, simplifier="onnxslim")
    export(cfg)
    with load_predictor(tmp_path / "exp", device="cpu") as ref:
        want = ref.predict(sample_images[0])
    # Pixel agreement with the fp32 ONNX. No INT8 floor here: on the random-weight fixture model the pipeline's INT8
    # (4 calibration images) agrees on ~55% of pixels, i.e. near chance; INT8 agreement is test_agreement's job.
    for precision, floor in (("fp32", 1.0), ("fp16", 0.99), ("int8", 0.0)):
        with load_predictor(tmp_path / "exp", precision=precision, device="cpu") as p:
            assert p.precision.value == precision
            got = p.predict(sample_images[0])
            assert got.shape == want.shape and (got == want).mean() >= floor


@pytest.mark.parametrize("runtime", ["auto", "onnxruntime", "pytorch"])
def test_a_bad_tta_is_refused_before_the_model_loads(export_dir, runtime):
    # The folder would load; the error is about tta alone, whichever runtime was asked for.
    with pytest.raises(InvalidInputError, match=r"^tta='mirror': expected one of none, flips$"):
        load_predictor(export_dir, runtime=runtime, tta="mirror")
