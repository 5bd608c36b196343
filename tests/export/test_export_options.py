"""Export options: dynamic batch, simplifiers, --from-onnx on the target, the CLI's step table and defaults."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from export_helpers import small_config

from lightseg_edge.errors import ExportConfigError


def test_dynamic_batch_graph_runs_batches_of_any_size(sample_dir, tmp_path):
    from lightseg_edge.export import export
    from lightseg_edge.export.onnxrun import cpu_session

    out = tmp_path / "dyn"
    res = export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, dynamic_batch=(1, 2, 4), fp16=True))
    m = json.loads((out / "manifest.json").read_text())
    assert m["input"]["shape"] == [None, 3, 128, 128]
    assert m["batch"] == {"dynamic": True, "min": 1, "opt": 2, "max": 4}
    assert list(res.parity.batch_sizes) == [2]  # the two held-out images went through as one batch
    for name in ("model.onnx", "model.fp16.onnx"):
        sess = cpu_session(out / name)
        for n in (1, 3):
            y = sess.run(None, {"input": np.random.rand(n, 3, 128, 128).astype(np.float32)})[0]
            assert y.shape == (n, 1, 128, 128)
    assert "--dynamic-batch 1,2,4" in res.target_command


@pytest.mark.parametrize("simplifier", ["onnxslim", "none"])
def test_simplifier_choice_is_recorded(sample_dir, tmp_path, simplifier):
    from lightseg_edge.export import export

    out = tmp_path / simplifier
    res = export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, simplifier=simplifier))
    m = json.loads((out / "manifest.json").read_text())
    assert m["artifacts"]["fp32"]["simplifier"] == simplifier
    assert res.parity.passed


@pytest.mark.parametrize("simplifier", ["onnxsim", "onnxslim"])
def test_simplified_graph_keeps_gelu_fusable_for_onnx_runtime(tmp_path, simplifier):
    """UCM-Net's ten exact GELUs each feed a 1x1 conv; folding their 0.5 into it would leave Div/Erf/Add/Mul, which
    ONNX Runtime no longer fuses into its Gelu kernel."""
    import onnx
    import onnxruntime as ort
    import torch

    from lightseg_edge.export.onnx_export import export_onnx, input_spec
    from lightseg_edge.export.simplify import simplify_onnx
    from lightseg_edge.models import create_model

    torch.manual_seed(0)
    raw = export_onnx(create_model("ucmnet").deploy(), tmp_path / "raw.onnx", input_spec(1, (128, 128), False))
    simplified, used = simplify_onnx(raw, tmp_path / "model.onnx", simplifier)
    assert used == simplifier
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(simplified), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("Gelu") == 10 and "Erf" not in ops


def test_onnxsim_failure_falls_back_to_onnxslim(sample_dir, tmp_path, monkeypatch, caplog):
    from lightseg_edge.export import export, simplify

    def broken(model):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setitem(simplify._TOOLS, "onnxsim", broken)
    caplog.set_level(logging.INFO, logger="lightseg_edge")
    out = tmp_path / "fallback"
    export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, simplifier="onnxsim"))
    assert json.loads((out / "manifest.json").read_text())["artifacts"]["fp32"]["simplifier"] == "onnxslim"
    assert "simulated onnxsim crash" in caplog.text
    assert f"held-out data: {sample_dir.resolve()} (folder layout), split val: 2 images" in caplog.text


def test_from_onnx_reuses_the_folder_and_prints_the_engine_command(sample_dir, tmp_path):
    """What runs on the Jetson: the FP16 variant is reused (sha256 checked), only the engine step remains."""
    from lightseg_edge.export import export
    from lightseg_edge.manifest import read_manifest, verify_artifacts

    out = tmp_path / "exp"
    first = export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, fp16=True))
    fp16_bytes = (out / "model.fp16.onnx").read_bytes()
    res = export(small_config(sample_dir, None, from_onnx=str(out / "model.onnx"), fp16=True))
    steps = {s.name: s for s in res.steps}
    assert steps["fp16"].status == "skipped" and "reusing model.fp16.onnx" in steps["fp16"].output
    assert steps["tensorrt"].status == "skipped"
    assert (out / "model.fp16.onnx").read_bytes() == fp16_bytes
    m = read_manifest(out)
    assert verify_artifacts(out, m) == [] and m["model"] == "ucmnet" and m["parity"]["max_abs"] == first.parity.max_abs
    assert [s["name"] for s in m["export_steps"]][:3] == ["model", "onnx", "simplify"]
    assert res.target_command == f"lightseg-export --from-onnx {out / 'model.onnx'} --fp16"


def test_from_onnx_with_a_changed_variant_makes_it_again(sample_dir, tmp_path):
    from lightseg_edge.export import export

    out = tmp_path / "exp"
    export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, fp16=True))
    (out / "model.fp16.onnx").write_bytes(b"tampered")
    res = export(small_config(sample_dir, None, from_onnx=str(out / "model.onnx"), fp16=True))
    assert {s.name: s.status for s in res.steps}["fp16"] == "ok"
    assert (out / "model.fp16.onnx").read_bytes() != b"tampered"


def test_from_onnx_of_a_dynamic_graph_needs_a_profile(sample_dir, tmp_path):
    from lightseg_edge.export import export

    out = tmp_path / "exp"
    export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, dynamic_batch=(1, 2, 4)))
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.onnx").write_bytes((out / "model.onnx").read_bytes())  # no manifest beside it
    with pytest.raises(ExportConfigError, match=r"has a dynamic batch: pass --dynamic-batch MIN,OPT,MAX"):
        export(small_config(sample_dir, None, from_onnx=str(lone / "model.onnx")))
    with pytest.raises(ExportConfigError, match=r"preprocessing is unknown.*pass --model NAME"):
        export(small_config(sample_dir, None, from_onnx=str(lone / "model.onnx"), dynamic_batch=(1, 2, 4), fp16=True))


def test_cli_prints_step_table_accuracy_and_target_command(sample_dir, tmp_path, capsys):
    from lightseg_edge.cli.export import main

    out = tmp_path / "cli"
    rc = main(["--model", "ucmnet", "--weights", "random", "--fp16", "--img-size", "128", "--data", str(sample_dir), "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    for step in ("model", "onnx", "simplify", "deploy-check", "parity", "accuracy-fp32", "fp16", "accuracy-fp16", "tensorrt", "manifest"):
        assert any(line.startswith(step + " ") for line in text.splitlines()), f"step {step} missing from the table:\n{text}"
    assert "skipped" in text and f"lightseg-export --from-onnx {out / 'model.onnx'} --fp16" in text
    assert "fp16 " in text.split("accuracy on ")[1] and "onnxruntime" in text.split("accuracy on ")[1]
    m = json.loads((out / "manifest.json").read_text())
    assert m["weights"] == {"source": "random", "sha256": None, "seed": 0}
    assert [s["name"] for s in m["steps"]][-1] == "tensorrt"


def test_cli_errors_exit_2_with_a_message(capsys, tmp_path):
    from lightseg_edge.cli.export import main

    assert main(["--model", "ucmnet", "--weights", "random", "--calib-images", "10"]) == 2
    assert "error: --calib-images is only used for INT8" in capsys.readouterr().err
    assert main(["--model", "ucmnet", "--weights", "random", "--dynamic-batch", "1,8"]) == 2
    assert "error: --dynamic-batch expects MIN,OPT,MAX" in capsys.readouterr().err
    assert main(["--from-onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: file not found" in capsys.readouterr().err


def test_default_output_folder_name():
    from lightseg_edge.export.config import ExportConfig, default_output

    assert default_output(ExportConfig(model="ucmnet"), "ucmnet", 256).as_posix() == "exports/ucmnet-256-fp32"
    assert (
        default_output(ExportConfig(model="ucmnet", fp16=True, int8=True, calib_data="x"), "ucmnet", 256).as_posix()
        == "exports/ucmnet-256-fp16-int8"
    )


def test_held_out_images_default_to_the_calibration_dataset(sample_dir, tmp_path, monkeypatch):
    """--calib-data naming a dataset root with a val split is where the accuracy checks look when --data is not given;
    a plain folder of images has no held-out split and is passed over."""
    from lightseg_edge.export.images import SAMPLE_DIR, default_image_root

    monkeypatch.delenv("LIGHTSEG_ISIC2018", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data/isic2018 here
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted((sample_dir / "images").iterdir())[:2]:
        (flat / p.name).write_bytes(p.read_bytes())
    assert default_image_root(str(sample_dir)) == str(sample_dir)
    assert default_image_root(str(flat)) == str(SAMPLE_DIR) == default_image_root()
    monkeypatch.setenv("LIGHTSEG_ISIC2018", str(flat))
    assert default_image_root(str(sample_dir)) == str(flat)
