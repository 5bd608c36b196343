"""lightseg-bench end to end: real measurements (tiny iteration counts), every output file parsed."""

from __future__ import annotations

import csv
import json
import types

import pytest

from lightseg_edge._optional import is_available
from lightseg_edge.bench import matrix, runner
from lightseg_edge.cli.bench import main


def _outputs(tmp_path, stem="r"):
    paths = {k: tmp_path / f"{stem}.{ext}" for k, ext in (("json", "json"), ("csv", "csv"), ("markdown", "md"), ("plot", "png"))}
    return paths, [a for k, p in paths.items() for a in (f"--{k}", str(p))]


def _check_files(paths):
    report = json.loads(paths["json"].read_text())
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == len(report["results"])
    claims = list(csv.DictReader(paths["csv"].with_name(paths["csv"].stem + ".claims.csv").open()))
    assert len(claims) == len(report["claims"])
    assert "| model | runtime |" in paths["markdown"].read_text()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report


def test_model_with_random_weights(tmp_path, capsys):
    paths, flags = _outputs(tmp_path)
    assert main(["--model", "ucmnet", "--weights", "random", "--iters", "3", "--warmup", "1", "--threads", "1"] + flags) == 0
    out = capsys.readouterr().out
    assert "ucmnet  pytorch" in out and "paper claims vs measured" in out and "49,932" in out
    report = _check_files(paths)
    (row,) = report["results"]
    assert row["status"] == "ok" and row["weights"] == "random:0" and row["threads"] == 1
    assert row["latency"]["n"] == 3 and row["e2e"]["n"] == 3 and row["e2e_image_hw"] == [512, 512]
    assert row["memory"]["runs"] == 3 and row["memory"]["inference_peak_delta_mb"] is not None
    assert row["params"] == 46188 and row["accuracy"] is None and "random weights" in row["accuracy_note"]
    assert row["process"]["torch_imported"] is True and row["machine"]["loadavg_before"] is not None
    assert row["env"]["onnxruntime"] and report["environment"]["schema"] == "lightseg-environment/1"
    assert {c["claim"] for c in report["claims"]} == {"params", "gmacs", "memory_mb"}


def _shipped(name):
    from lightseg_edge.models._weights import has_pretrained

    return has_pretrained(name)


@pytest.mark.skipif(not _shipped("ucmnet"), reason="no shipped ucmnet weights in this checkout")
def test_model_with_shipped_weights_reports_accuracy(sample_dir, tmp_path, capsys):
    out = tmp_path / "acc.json"
    assert main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "val", "--iters", "2", "--warmup", "1", "--threads", "1",
                 "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"data: {sample_dir.resolve()} (folder layout), split val: 2 images" in err
    assert "[1/1] ucmnet pytorch fp32 (batch 1)  elapsed " in err
    assert "accuracy ucmnet pytorch fp32: 100%" in err  # the worker's scoring step, shown by the parent as a bar
    (row,) = json.loads(out.read_text())["results"]
    acc = row["accuracy"]
    assert row["weights"] == "pretrained" and row["size_bytes"] > 0
    assert acc["images"] == 2 and acc["split"] == "val" and 0.0 <= acc["mdice"] <= 1.0 and acc["resolution"] == [256, 256]
    assert acc["reference"] == "pytorch fp32" and acc["delta_mdice"] == 0.0  # this row is its own reference
    assert row["e2e_image_hw"] == [192, 192]  # --data images (the sample's size) are the end-to-end inputs


@pytest.mark.skipif(not _shipped("ucmnet"), reason="no shipped ucmnet weights in this checkout")
def test_quiet_shows_no_progress(sample_dir, capsys):
    assert main(["--model", "ucmnet", "--data", str(sample_dir), "--max-images", "1", "--iters", "2", "--warmup", "1", "--threads", "1",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "ucmnet  pytorch" in captured.out
    assert not any(t in captured.err for t in ("data:", "[1/1]", "accuracy", "%|")), captured.err


@pytest.mark.skipif(not _shipped("ucmnet"), reason="no shipped ucmnet weights in this checkout")
def test_tta_rows_measure_the_augmented_predictor(sample_dir, tmp_path, capsys):
    from lightseg_edge.bench.accuracy import evaluate, select_samples
    from lightseg_edge.runtimes import load_predictor

    paths, flags = _outputs(tmp_path)
    assert main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "val", "--tta", "flips", "--iters", "2", "--warmup", "1",
                 "--threads", "1"] + flags) == 0
    out = capsys.readouterr().out
    assert "test-time augmentation 'flips': 4 network runs per image, all in its latency" in out
    report = _check_files(paths)
    (row,) = report["results"]
    assert row["tta"] == "flips" and report["settings"]["tta"] == "flips"
    assert [r["tta"] for r in csv.DictReader(paths["csv"].open())] == ["flips"]
    samples = select_samples(str(sample_dir), "val")
    with load_predictor("ucmnet", runtime="pytorch", tta="flips") as flips, load_predictor("ucmnet", runtime="pytorch") as plain:
        expected, single = evaluate(flips, samples).mdice, evaluate(plain, samples).mdice
    assert row["accuracy"]["mdice"] == pytest.approx(expected, abs=1e-6) and expected != pytest.approx(single, abs=1e-6)


def test_onnx_of_an_export(ucmnet_export, tmp_path, capsys):
    paths, flags = _outputs(tmp_path)
    code = main(["--onnx", str(ucmnet_export / "model.onnx"), "--batch", "1,2", "--iters", "3", "--warmup", "1", "--threads", "1"] + flags)
    assert code == 0
    report = _check_files(paths)
    b1, b2 = report["results"]
    assert (b1["status"], b1["runtime"], b1["precision"], b1["model"]) == ("ok", "onnxruntime", "fp32", "ucmnet")
    assert b1["process"]["torch_imported"] is False  # an ONNX Runtime process, as deployed
    assert b1["size_bytes"] == (ucmnet_export / "model.onnx").stat().st_size
    assert b2["status"] == "skipped" and "fixed batch of 1" in b2["reason"]
    assert "skipped" in capsys.readouterr().out


def test_all_on_a_reduced_matrix(ucmnet_export, tmp_path, monkeypatch, capsys):
    # Reduced matrix: one model, its export made once by the fixture, jobs in this process (isolation is covered above).
    monkeypatch.setattr("lightseg_edge.models.list_models", lambda pattern="*": ["ucmnet"])
    # The fixture export holds seed-0 random weights: the PyTorch row must use the same ones, shipped weights or not.
    monkeypatch.setattr(matrix, "resolve_weights", lambda name, weights: matrix.Weights("random:0", "random:0", False, "random weights"))
    man = json.loads((ucmnet_export / "manifest.json").read_text())
    fake_export = types.SimpleNamespace(output=ucmnet_export, artifacts={k: ucmnet_export / a["path"] for k, a in man["artifacts"].items()})
    monkeypatch.setattr(matrix, "export_model", lambda *a, **k: fake_export)
    real_run_jobs = runner.run_jobs
    monkeypatch.setattr(runner, "run_jobs", lambda jobs, **kw: real_run_jobs(jobs, **dict(kw, isolate=False)))
    paths, flags = _outputs(tmp_path)
    assert main(["--all", "--runtime", "pytorch,onnxruntime,tensorrt", "--precision", "fp32,int8", "--iters", "2", "--warmup", "1",
                 "--threads", "1"] + flags) == 0
    report = _check_files(paths)
    got = [(r["runtime"], r["precision"], r["status"]) for r in report["results"]]
    trt = "ok" if is_available("tensorrt") else "skipped"
    assert got == [("pytorch", "fp32", "ok"), ("onnxruntime", "fp32", "ok"), ("onnxruntime", "int8", "ok"), ("tensorrt", "fp32,int8", trt)][: 3 + (trt == "skipped")]
    assert {r["weights"] for r in report["results"]} == {"random:0"}
    assert [c["model"] for c in report["claims"]] == ["ucmnet"] * 3
    out = capsys.readouterr().out
    assert "TensorRT is not installed" in out or trt == "ok"


@pytest.mark.skipif(is_available("tensorrt"), reason="TensorRT is installed here")
def test_engine_without_tensorrt_is_a_skipped_row(tmp_path, capsys):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 128)
    assert main(["--engine", str(plan), "--iters", "1", "--json", str(tmp_path / "e.json")]) == 1  # nothing could be measured
    (row,) = json.loads((tmp_path / "e.json").read_text())["results"]
    assert row["status"] == "skipped" and row["runtime"] == "tensorrt" and "tensorrt" in row["reason"].lower()
    assert "skipped" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--onnx", "x.onnx", "--weights", "random"], "--weights goes with --model"),
    (["--model", "ucmnett"], "unknown model"),
    (["--model", "ucmnet", "--batch", "0"], "--batch"),
    (["--model", "ucmnet", "--precision", "fp64"], "--precision"),
    (["--onnx", "missing.onnx"], "file not found"),
    (["--model", "ucmnet", "--max-images", "3"], "needs --data"),
])
def test_user_errors_exit_2_with_a_message(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks (--batch, --precision)
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_iters_and_min_time_are_exclusive():
    with pytest.raises(SystemExit) as exc:
        main(["--model", "ucmnet", "--iters", "3", "--min-time", "1"])
    assert exc.value.code == 2


def test_a_killed_run_keeps_the_rows_it_measured(tmp_path):
    """SIGTERM after the first job (as `timeout` sends): exit 130, the partial JSON holds that job's row, no temp files."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "lightseg_edge.cli.bench", "--model", "ucmnet", "--runtime", "pytorch,onnxruntime", "--precision", "fp32",
           "--iters", "3", "--warmup", "1", "--threads", "1", "--json", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert out.exists(), err
    report = json.loads(out.read_text())
    # the partial JSON appears only after the first of two jobs; the second needs seconds (a fresh process), so the
    # signal always lands inside it
    assert proc.returncode == 130 and "interrupted" in err
    assert "1 job(s) not run yet" in report["settings"]["partial"]
    assert any(r["status"] == "ok" for r in report["results"])
    assert not list(tmp_path.glob("*lightseg*")), "temporary exports left behind"
