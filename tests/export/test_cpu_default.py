"""The export's CPU default: the artifacts that keep FP32's accuracy are timed interleaved with each thread count,
the fastest is recorded in the manifest, and ``load_predictor(folder)`` runs it on a CPU unless told otherwise.
Which one wins is the measurement's business; these tests check what is timed, what is recorded and what is loaded."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from export_helpers import export_size, small_config

MODEL = "ucmnet"


def test_candidates_keep_fp32_accuracy_and_span_the_thread_counts(tmp_path):
    from lightseg_edge.export.cpu_default import candidates
    from lightseg_edge.types import Runtime

    def res(runtime, agree, worst=1.0):
        return SimpleNamespace(runtime=runtime, agreement_dice=agree, worst_agreement=worst)

    results = {"fp32": res("onnxruntime", 1.0), "int8": res("onnxruntime", 0.99), "openvino-fp32": res("openvino", 0.9995),
               "openvino-bf16": res("openvino", 0.9999)}  # a scored setting without an artifact of its own
    artifacts = {k: {"path": f"{k}.file", "precision": k.rsplit("-", 1)[-1]} for k in ("fp32", "int8", "openvino-fp32")}
    got = candidates(results, artifacts, {k: tmp_path / v["path"] for k, v in artifacts.items()}, cores=3)
    assert {(c.key, c.threads, c.options) for c in got} == {
        *((k, t, ()) for k in ("fp32", "openvino-fp32") for t in (1, 2, 3)),
        *(("fp32", t, (("graph_optimization_level", "extended"),)) for t in (1, 2, 3)),  # ONNX Runtime without NCHWc
    }
    assert all(c.path.parent == tmp_path for c in got) and {c.runtime for c in got} == {Runtime.ONNXRUNTIME, Runtime.OPENVINO}


def test_interleaved_rounds_alternate_the_order():
    from lightseg_edge.bench.timing import interleaved_rounds

    order = []
    per = interleaved_rounds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3, iters=1)
    assert order == ["a", "b", "b", "a", "a", "b"] and {k: len(v) for k, v in per.items()} == {"a": 3, "b": 3}


@pytest.fixture(scope="module")
def exported(sample_dir, tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    from lightseg_edge.export import export

    out = tmp_path_factory.mktemp("cpu-default") / MODEL
    export(small_config(sample_dir, out, model=MODEL, img_size=export_size(MODEL), formats=("onnx", "openvino"), cpu_default=True))
    return out


def test_manifest_records_the_fastest_candidate_measured(exported):
    from lightseg_edge.manifest import CpuChoice, read_deploy_manifest

    man = read_deploy_manifest(exported)
    rec = man.raw["cpu_default"]
    threads = range(1, rec["cores"] + 1)
    assert set(rec["timings_ms"]) == {f"{k}@{t}{o}" for t in threads
                                      for k, o in (("fp32", ""), ("fp32", ",graph_optimization_level=extended"), ("openvino-fp32", ""))}
    best = min(rec["timings_ms"], key=rec["timings_ms"].get)
    options = "".join(f",{k}={v}" for k, v in rec["options"].items())
    assert best == f"{rec['artifact']}@{rec['threads']}{options}"
    assert man.cpu_default == CpuChoice(rec["artifact"], rec["threads"], tuple(rec["options"].items()))
    assert rec["runtime"] == ("onnxruntime" if rec["artifact"] == "fp32" else "openvino")


def test_load_predictor_follows_it_and_options_override_it(exported, monkeypatch):
    from lightseg_edge.manifest import read_deploy_manifest
    from lightseg_edge.runtimes import load_predictor, loader

    seen = []
    original = loader._file_predictor
    monkeypatch.setattr(loader, "_file_predictor", lambda *a, **kw: seen.append(a[6]) or original(*a, **kw))
    choice = read_deploy_manifest(exported).cpu_default
    with load_predictor(exported) as p:
        assert p.runtime.value == ("onnxruntime" if choice.artifact == "fp32" else "openvino") and p.precision.value == "fp32"
    assert seen[-1] == dict(choice.options, threads=choice.threads)
    with load_predictor(exported, threads=1, runtime="onnxruntime") as p:
        assert p.runtime.value == "onnxruntime"
    assert seen[-1]["threads"] == 1 and "graph_optimization_level" not in seen[-1]
    with load_predictor(exported, precision="fp32", device="cpu") as p:  # an explicit precision keeps the old rule
        assert p.runtime.value == "onnxruntime"


def test_no_cpu_default_records_none(sample_dir, tmp_path):
    from lightseg_edge.export import export
    from lightseg_edge.manifest import read_deploy_manifest
    from lightseg_edge.runtimes import load_predictor

    out = tmp_path / "none"
    export(small_config(sample_dir, out, model=MODEL, img_size=export_size(MODEL)))
    man = read_deploy_manifest(out)
    assert man.raw["cpu_default"] is None and man.cpu_default is None
    with load_predictor(out) as p:
        assert p.runtime.value == "onnxruntime"


def test_in_place_export_times_the_folder_s_own_files(sample_dir, tmp_path):
    """--from-onnx in place: the FP32 model is the folder's own file (not in the staging folder) and is a candidate."""
    from lightseg_edge.export import export
    from lightseg_edge.manifest import read_deploy_manifest

    out = tmp_path / "inplace"
    export(small_config(sample_dir, out, model=MODEL, img_size=export_size(MODEL)))
    export(small_config(sample_dir, None, from_onnx=str(out / "model.onnx"), fp16=True, cpu_default=True))
    rec = read_deploy_manifest(out).raw["cpu_default"]
    assert rec is not None and any(k.startswith("fp32@") for k in rec["timings_ms"])


def test_a_recorded_setting_is_applied_and_an_unreadable_one_ignored(exported, tmp_path, monkeypatch):
    """The settings recorded with the choice reach the predictor; a cpu_default this version cannot apply (an option
    its runtime does not take) is ignored, not a failed load."""
    import json
    import shutil

    from lightseg_edge.manifest import read_deploy_manifest
    from lightseg_edge.runtimes import load_predictor, loader

    seen = []
    original = loader._file_predictor
    monkeypatch.setattr(loader, "_file_predictor", lambda *a, **kw: seen.append(a[6]) or original(*a, **kw))
    folder = Path(shutil.copytree(exported, tmp_path / "copy"))
    man = folder / "manifest.json"
    raw = json.loads(man.read_text())
    for options, want in (({"graph_optimization_level": "extended"}, "extended"), ({"no_such_option": 1}, None)):
        raw["cpu_default"].update(artifact="fp32", runtime="onnxruntime", threads=1, options=options)
        man.write_text(json.dumps(raw))
        assert read_deploy_manifest(folder).cpu_default.artifact == "fp32"
        with load_predictor(folder) as p:
            assert p.runtime.value == "onnxruntime"
        assert seen[-1].get("graph_optimization_level") == want and seen[-1].get("threads") == (1 if want else None)
