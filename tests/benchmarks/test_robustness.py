"""benchmarks/robustness.py runs end to end on the committed sample images: every requested shift (and the unshifted
images) per model, the same figures lightseg-eval gives, written as JSON and Markdown."""

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "robustness.py"


def _run(argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)] + argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return done.value.code


def test_robustness_script_writes_its_tables(sample_dir, tmp_path, monkeypatch):
    from lightseg_edge.cli import eval as eval_cli

    argv = ["--data", str(sample_dir), "--split", "all", "--models", "ucmnet", "--shifts", "dark,zoom-out", "--threads", "1"]
    assert _run(argv + ["--out", str(tmp_path)], monkeypatch) == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    shifts = result["models"]["ucmnet"]["shifts"]
    assert list(shifts) == ["none", "dark", "zoom-out"] and all(s["images"] == 8 for s in shifts.values())
    assert eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "all", "--shift", "zoom-out", "--threads", "1",
                          "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["mdice"] == pytest.approx(shifts["zoom-out"]["mdice"])
    text = (tmp_path / "robustness.md").read_text()
    assert "| zoom-out | the lesion at 0.6x" in text and "| worst shift |" in text


def test_unknown_shift_is_refused(sample_dir, tmp_path, monkeypatch, capsys):
    code = _run(["--data", str(sample_dir), "--shifts", "fog", "--out", str(tmp_path)], monkeypatch)
    assert "unknown fog" in str(code) and not (tmp_path / "robustness.json").exists()


def test_merge_keeps_the_other_models_measured_alike(sample_dir, tmp_path, monkeypatch):
    base = ["--data", str(sample_dir), "--split", "all", "--shifts", "dark", "--threads", "1", "--out", str(tmp_path)]
    assert _run(base + ["--models", "ucmnet"], monkeypatch) == 0
    assert _run(base + ["--models", "egeunet", "--merge"], monkeypatch) == 0
    assert set(json.loads((tmp_path / "robustness.json").read_text())["models"]) == {"egeunet", "ucmnet"}
    code = _run(base[:4] + ["--shifts", "blur", "--threads", "1", "--out", str(tmp_path), "--models", "egeunet", "--merge"], monkeypatch)
    assert "measured on other data, split, images or shifts" in str(code)
    assert "| dark |" in (tmp_path / "robustness.md").read_text()  # the refused run wrote nothing
