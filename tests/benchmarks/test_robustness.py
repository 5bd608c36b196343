"""benchmarks/robustness.py runs end to end on the committed sample images: every requested shift (and the unshifted
images) per model, the same figures lightseg-eval gives, written as JSON and Markdown."""

import json

import pytest


def test_robustness_script_writes_its_tables(sample_dir, tmp_path, run_script):
    from lightseg_edge.cli import eval as eval_cli

    argv = ["--data", str(sample_dir), "--split", "all", "--models", "ucmnet", "--shifts", "dark,zoom-out", "--threads", "1"]
    assert run_script("robustness", argv + ["--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    shifts = result["models"]["ucmnet"]["shifts"]
    assert list(shifts) == ["none", "dark", "zoom-out"] and all(s["images"] == 8 for s in shifts.values())
    assert eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "all", "--shift", "zoom-out", "--threads", "1",
                          "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["mdice"] == pytest.approx(shifts["zoom-out"]["mdice"])
    text = (tmp_path / "robustness.md").read_text()
    assert "| zoom-out | the lesion at 0.6x" in text and "| worst shift |" in text


def test_unknown_shift_is_refused(sample_dir, tmp_path, run_script, capsys):
    code = run_script("robustness", ["--data", str(sample_dir), "--shifts", "fog", "--out", str(tmp_path)])
    assert "unknown fog" in str(code) and not (tmp_path / "robustness.json").exists()


def test_merge_keeps_the_other_models_measured_alike(sample_dir, tmp_path, run_script):
    base = ["--data", str(sample_dir), "--split", "all", "--shifts", "dark", "--threads", "1", "--out", str(tmp_path)]
    assert run_script("robustness", base + ["--models", "ucmnet"]) == 0
    assert run_script("robustness", base + ["--models", "egeunet", "--merge"]) == 0
    assert set(json.loads((tmp_path / "robustness.json").read_text())["models"]) == {"egeunet", "ucmnet"}
    code = run_script("robustness", base[:4] + ["--shifts", "blur", "--threads", "1", "--out", str(tmp_path), "--models", "egeunet", "--merge"])
    assert "was measured otherwise (data, split, images, shift_notes)" in str(code)
    assert "| dark |" in (tmp_path / "robustness.md").read_text()  # the refused run wrote nothing
