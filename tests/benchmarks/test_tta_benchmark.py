"""benchmarks/tta.py runs end to end on the committed sample images: each model plain and with flip TTA, the same
figures lightseg-eval gives with and without --tta flips, written as JSON and Markdown."""

import json

import pytest


def test_tta_script_matches_lightseg_eval(sample_dir, tmp_path, run_script):
    from lightseg_edge.cli import eval as eval_cli

    argv = ["--data", str(sample_dir), "--splits", "all", "--models", "ucmnet", "--threads", "1", "--out", str(tmp_path)]
    assert run_script("tta", argv) == 0
    runs = json.loads((tmp_path / "tta.json").read_text())["models"]["ucmnet"]["splits"]["all"]
    assert set(runs) == {"none", "flips"} and runs["none"]["images"] == runs["flips"]["images"] == 8
    for tta in ("none", "flips"):
        out = tmp_path / f"eval-{tta}"
        assert eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "all", "--tta", tta, "--threads", "1",
                              "--no-progress", "--out", str(out)]) == 0
        assert json.loads((out / "metrics.json").read_text())["metrics"]["mdice"] == pytest.approx(runs[tta]["mdice"])
    change = runs["flips"]["mdice"] - runs["none"]["mdice"]
    assert f"| `ucmnet` | {runs['none']['mdice']:.4f} | {runs['flips']['mdice']:.4f} | {change:+.4f} |" in (tmp_path / "tta.md").read_text()


def test_unknown_split_is_refused(sample_dir, tmp_path, run_script):
    code = run_script("tta", ["--data", str(sample_dir), "--splits", "holdout", "--out", str(tmp_path)])
    assert "--splits: unknown holdout" in str(code) and not (tmp_path / "tta.json").exists()


def test_merge_keeps_the_other_models(sample_dir, tmp_path, run_script):
    base = ["--data", str(sample_dir), "--splits", "all", "--threads", "1", "--out", str(tmp_path)]
    assert run_script("tta", base + ["--models", "ucmnet"]) == 0
    assert run_script("tta", base + ["--models", "egeunet", "--merge"]) == 0
    assert set(json.loads((tmp_path / "tta.json").read_text())["models"]) == {"egeunet", "ucmnet"}
