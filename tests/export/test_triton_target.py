"""The Triton target on a real export: a model repository whose configs Triton's own ModelConfig protobuf reads, an
ensemble wired consistently, an ONNX model described as its graph is, the repository listed in the manifest, and
the Python-backend pre/post-processing chained with ONNX Runtime giving the very masks of ``load_predictor``.

No tritonserver runs here (its onnxruntime backend is not installed); the Python-backend code is run directly: its
maths as plain functions and its ``TritonPythonModel`` glue against a stand-in ``triton_python_backend_utils``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from export_helpers import small_config

pytest.importorskip("tritonclient.grpc")
ort = pytest.importorskip("onnxruntime")

from google.protobuf import json_format, text_format  # noqa: E402  (after the skip: tritonclient brings protobuf)
from tritonclient.grpc import model_config_pb2  # noqa: E402

MODEL = "ucmnet"
SIZE = 128


@pytest.fixture(scope="module")
def exported(sample_dir, tmp_path_factory):
    from lightseg_edge.export import export

    out = tmp_path_factory.mktemp("triton") / MODEL
    export(small_config(sample_dir, out, model=MODEL, img_size=SIZE, fp16=True, formats=("onnx", "triton")))
    return out


@pytest.fixture(scope="module")
def repo(exported):
    return exported / "triton-fp16"


@pytest.fixture(scope="module")
def images(sample_dir):
    from lightseg_edge.data.io import read_image

    full = [read_image(p) for p in sorted((sample_dir / "images").iterdir())]
    assert len(full) == 8
    return full + [np.ascontiguousarray(full[0][:150, :97]), np.ascontiguousarray(full[1][3:, :])]  # odd sizes too


def _configs(repo: Path):
    return {p.parent.name: text_format.Parse(p.read_text(), model_config_pb2.ModelConfig()) for p in sorted(repo.glob("*/config.pbtxt"))}


def _params(cfg) -> dict:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_row_and_not_scored(exported):
    from lightseg_edge.export.targets import FORMATS, get_target
    from lightseg_edge.manifest import read_manifest
    from lightseg_edge.types import Runtime

    target = get_target("triton")
    assert "triton" in FORMATS and target.runtime is Runtime.ONNXRUNTIME and not target.needs_torch_model
    assert "tritonserver" in target.runnable()
    man = read_manifest(exported)
    assert "tritonserver" in man["accuracy"]["not_scored"]["triton-fp16"]
    assert "triton-fp16" not in man["accuracy"]["variants"]
    steps = {s["name"]: s for s in man["steps"]}
    assert steps["triton"]["status"] == "ok" and steps["accuracy-triton-fp16"]["status"] == "skipped"


def test_layout_and_every_config_parses(repo):
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", MODEL, f"{MODEL}_onnx", f"{MODEL}_postprocess", f"{MODEL}_preprocess"]
    configs = _configs(repo)
    assert set(configs) == {MODEL, f"{MODEL}_onnx", f"{MODEL}_postprocess", f"{MODEL}_preprocess"}
    for name, cfg in configs.items():
        assert cfg.name == name and (repo / name / "1").is_dir()
    assert configs[MODEL].platform == "ensemble" and configs[f"{MODEL}_onnx"].platform == "onnxruntime_onnx"
    for name in (f"{MODEL}_preprocess", f"{MODEL}_postprocess"):
        assert configs[name].backend == "python" and (repo / name / "1" / "model.py").is_file()
    assert (repo / f"{MODEL}_onnx" / "1" / "model.onnx").is_file()
    ens = configs[MODEL]
    dt = model_config_pb2.DataType
    assert [(t.name, t.data_type, list(t.dims)) for t in ens.input] == [("IMAGE", dt.Value("TYPE_UINT8"), [-1, -1, 3])]
    assert [(t.name, t.data_type, list(t.dims)) for t in ens.output] == [
        ("MASK", dt.Value("TYPE_UINT8"), [-1, -1]), ("PROBABILITY", dt.Value("TYPE_FP32"), [-1, -1])]
    onnx_cfg = configs[f"{MODEL}_onnx"]
    assert onnx_cfg.max_batch_size == 0 and not onnx_cfg.HasField("dynamic_batching")  # a static-batch export
    assert [g.kind for g in onnx_cfg.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]


def test_ensemble_steps_reference_models_and_tensors_consistently(repo):
    from lightseg_edge.export.targets.triton import check_repository

    configs = _configs(repo)
    ens = configs[MODEL]
    produced = {t.name: (t.data_type, list(t.dims)) for t in ens.input}
    for step in ens.ensemble_scheduling.step:
        sub = configs[step.model_name]  # KeyError: a step naming a model that is not there
        ins, outs = {t.name: t for t in sub.input}, {t.name: t for t in sub.output}
        assert set(step.input_map) == set(ins), step.model_name  # every input fed, no unknown key
        for key, tensor in step.input_map.items():
            dtype, dims = produced[tensor]  # produced before it is consumed
            assert dtype == ins[key].data_type and len(dims) == len(ins[key].dims), (step.model_name, key)
            assert all(a == b or -1 in (a, b) for a, b in zip(dims, ins[key].dims)), (step.model_name, key, dims)
        for key, tensor in step.output_map.items():
            assert key in outs and tensor not in produced
            produced[tensor] = (outs[key].data_type, list(outs[key].dims))
    for out in ens.output:
        assert produced[out.name] == (out.data_type, list(out.dims))
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [f"{MODEL}_preprocess", f"{MODEL}_onnx", f"{MODEL}_postprocess"]
    assert set(check_repository(repo)) == set(configs)


def test_onnx_model_is_the_fp16_variant_described_as_its_graph(exported, repo):
    import onnx

    from lightseg_edge.manifest import read_manifest, sha256_file

    path = repo / f"{MODEL}_onnx" / "1" / "model.onnx"
    man = read_manifest(exported)
    assert sha256_file(path) == man["artifacts"]["fp16"]["sha256"] == man["artifacts"]["triton-fp16"]["onnx_sha256"]
    graph = onnx.load(str(path)).graph
    cfg = _configs(repo)[f"{MODEL}_onnx"]
    types_ = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}
    for spec, tensor in ((cfg.input[0], graph.input[0]), (cfg.output[0], graph.output[0])):
        assert spec.name == tensor.name
        assert model_config_pb2.DataType.Name(spec.data_type) == types_[tensor.type.tensor_type.elem_type]
        assert list(spec.dims) == [d.dim_value for d in tensor.type.tensor_type.shape.dim]
    assert list(cfg.input[0].dims) == [1, 3, SIZE, SIZE]
    pre = _params(_configs(repo)[f"{MODEL}_preprocess"])
    assert (pre["height"], pre["width"], pre["mode"], pre["batch"]) == (str(SIZE), str(SIZE), man["preprocess"]["mode"], "1")


def test_manifest_lists_the_repository_with_valid_sha256(exported, repo):
    from lightseg_edge.manifest import read_manifest, verify_artifacts

    man = read_manifest(exported)
    entry = man["artifacts"]["triton-fp16"]
    assert entry["path"] == f"triton-fp16/{MODEL}/config.pbtxt" and entry["precision"] == "fp16"
    listed = {entry["path"]} | {c["path"] for c in entry["companions"]}
    on_disk = {p.relative_to(exported).as_posix() for p in repo.rglob("*") if p.is_file()}
    assert listed == on_disk
    assert verify_artifacts(exported, man) == []
    # a changed file of the repository is caught
    model_py = repo / f"{MODEL}_postprocess" / "1" / "model.py"
    original = model_py.read_bytes()
    try:
        model_py.write_bytes(original + b"\n# edited\n")
        assert any("model.py" in p for p in verify_artifacts(exported, man))
    finally:
        model_py.write_bytes(original)


def test_python_backend_pipeline_gives_the_predictor_masks(exported, repo, images):
    from lightseg_edge.runtimes import load_predictor

    pre_py, post_py = repo / f"{MODEL}_preprocess" / "1" / "model.py", repo / f"{MODEL}_postprocess" / "1" / "model.py"
    for src in (pre_py, post_py):  # self-contained: Triton's Python backend has no lightseg_edge
        text = src.read_text()
        assert "import lightseg_edge" not in text and "from lightseg_edge" not in text
    pre_mod, post_mod = _load(pre_py, "triton_pre_model"), _load(post_py, "triton_post_model")
    configs = _configs(repo)
    cfg = pre_mod.config_from(_params(configs[f"{MODEL}_preprocess"]))
    threshold = float(_params(configs[f"{MODEL}_postprocess"])["threshold"])
    session = ort.InferenceSession(str(repo / f"{MODEL}_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_cfg = configs[f"{MODEL}_onnx"]
    predictor = load_predictor(exported, runtime="onnxruntime")
    assert predictor.precision.value == "fp16"  # the export's headline, the variant the repository holds
    for i, image in enumerate(images):
        x, size = pre_mod.preprocess(image, cfg)
        assert x.dtype == np.float32 and x.shape == (1, 3, SIZE, SIZE) and size.dtype == np.int32
        (logits,) = session.run([onnx_cfg.output[0].name], {onnx_cfg.input[0].name: x})
        mask, proba = post_mod.postprocess(logits, size, threshold)
        want = predictor.predict(image)
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert np.array_equal(mask, want), f"image {i}: {int((mask != want).sum())} pixels differ"
        assert np.array_equal(proba, predictor.predict_proba(image)), f"image {i}"
        assert np.array_equal(post_mod.postprocess(logits, size, threshold, probability=False)[0], want)
    predictor.close()


class _FakeTensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _FakeRequest:
    def __init__(self, **tensors):
        self.tensors = {k: _FakeTensor(k, v) for k, v in tensors.items()}

    def requested_output_names(self):
        return []


def _fake_pb_utils():
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = _FakeTensor
    pb.TritonError = lambda msg: ("error", msg)
    pb.InferenceResponse = lambda output_tensors, error=None: types.SimpleNamespace(
        outputs={t.name(): t.as_numpy() for t in output_tensors}, error=error)
    pb.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return pb


def test_triton_python_model_classes_with_a_stand_in_backend(exported, repo, images, monkeypatch):
    from lightseg_edge.runtimes import load_predictor

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    configs = _configs(repo)

    def args(name):
        return {"model_config": json.dumps(json_format.MessageToDict(configs[name], preserving_proto_field_name=True))}

    pre = _load(repo / f"{MODEL}_preprocess" / "1" / "model.py", "triton_pre_glue").TritonPythonModel()
    post = _load(repo / f"{MODEL}_postprocess" / "1" / "model.py", "triton_post_glue").TritonPythonModel()
    pre.initialize(args(f"{MODEL}_preprocess"))
    post.initialize(args(f"{MODEL}_postprocess"))
    session = ort.InferenceSession(str(repo / f"{MODEL}_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    predictor = load_predictor(exported, runtime="onnxruntime")
    bad = np.zeros((4, 4), np.uint8)
    out = pre.execute([_FakeRequest(IMAGE=images[0]), _FakeRequest(IMAGE=bad), _FakeRequest(IMAGE=images[-1])])
    assert out[1].error is not None and "HxWx3" in out[1].error[1]  # one bad image fails its own request only
    for image, res in ((images[0], out[0]), (images[-1], out[2])):
        assert res.error is None
        (logits,) = session.run(None, {"input": res.outputs["INPUT"]})
        (done,) = post.execute([_FakeRequest(LOGITS=logits, IMAGE_SIZE=res.outputs["IMAGE_SIZE"])])
        assert done.error is None and np.array_equal(done.outputs["MASK"], predictor.predict(image))
        assert done.outputs["PROBABILITY"].shape == image.shape[:2]
    predictor.close()


def test_dynamic_batch_cpu_and_tensorrt_settings(exported, tmp_path):
    import onnx

    from lightseg_edge.export.targets.triton import check_repository, write_repository
    from lightseg_edge.manifest import read_deploy_manifest

    model = onnx.load(str(exported / "model.onnx"))
    for tensor in (model.graph.input[0], model.graph.output[0]):
        tensor.type.tensor_type.shape.dim[0].dim_param = "N"  # a dynamic-batch graph
    dyn = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dyn))
    pre = read_deploy_manifest(exported).preprocess
    files = write_repository(tmp_path / "repo", MODEL, dyn, pre, "fp16", kind="KIND_CPU", tensorrt=True, max_batch=16)
    assert f"{MODEL}_onnx/1/model.onnx" in files
    configs = check_repository(tmp_path / "repo")
    cfg = configs[f"{MODEL}_onnx"]
    assert cfg.max_batch_size == 16 and cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert list(cfg.input[0].dims) == [3, SIZE, SIZE] and list(cfg.output[0].dims) == [1, SIZE, SIZE]
    assert [g.kind for g in cfg.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16" and acc.parameters["trt_engine_cache_enable"] == "true"
    # the per-image models hand one image (batch 1) to the batching ONNX model
    assert list(configs[f"{MODEL}_preprocess"].output[0].dims) == [1, 3, SIZE, SIZE]


def test_a_broken_config_or_wiring_is_an_export_error(repo, tmp_path):
    import shutil

    from lightseg_edge.errors import ExportError
    from lightseg_edge.export.targets.triton import check_repository, parse_config

    with pytest.raises(ExportError, match="not a valid Triton model config"):
        parse_config('name: "x" max_batch_size: "many"', tmp_path / "config.pbtxt")
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    ens = copy / MODEL / "config.pbtxt"
    ens.write_text(ens.read_text().replace('value: "logits"', 'value: "logit"', 1))
    with pytest.raises(ExportError, match="logit"):
        check_repository(copy)


def test_from_onnx_in_place_at_another_precision_keeps_both_repositories(sample_dir, tmp_path):
    from lightseg_edge.export import export
    from lightseg_edge.manifest import read_manifest, verify_artifacts

    out = tmp_path / "inplace"
    export(small_config(sample_dir, out, model=MODEL, img_size=SIZE, formats=("onnx", "triton")))
    # on the target: the folder's own model.onnx, no --model (the name comes from the ONNX metadata)
    export(small_config(sample_dir, None, from_onnx=str(out / "model.onnx"), fp16=True, formats=("onnx", "triton")))
    man = read_manifest(out)
    assert {"triton-fp32", "triton-fp16"} <= set(man["artifacts"]) and verify_artifacts(out, man) == []
    assert man["artifacts"]["triton-fp16"]["ensemble"] == MODEL and (out / "triton-fp32" / MODEL / "config.pbtxt").is_file()


def test_re_export_without_triton_removes_the_stale_repository(sample_dir, tmp_path):
    """A Triton repository the new manifest no longer lists is not carried over (its files would sit unverified beside
    the new export); a file of the user's own inside it is kept."""
    from lightseg_edge.export import export
    from lightseg_edge.manifest import read_manifest

    out = tmp_path / "again"
    export(small_config(sample_dir, out, model=MODEL, img_size=SIZE, formats=("onnx", "triton")))
    (out / "triton-fp32" / "my-notes.txt").write_text("kept")
    export(small_config(sample_dir, out, model=MODEL, img_size=SIZE, formats=("onnx",)))
    assert "triton-fp32" not in read_manifest(out)["artifacts"]
    left = sorted(p.relative_to(out).as_posix() for p in (out / "triton-fp32").rglob("*"))
    assert left == ["triton-fp32/my-notes.txt"]
    (out / "triton-fp32" / "my-notes.txt").unlink()
    export(small_config(sample_dir, out, model=MODEL, img_size=SIZE, formats=("onnx", "triton")))
    export(small_config(sample_dir, out, model=MODEL, img_size=SIZE, formats=("onnx",)))
    assert not (out / "triton-fp32").exists()
