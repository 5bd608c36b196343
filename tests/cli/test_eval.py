"""lightseg-eval on the real sample images: means, the per-image Dice tail, worst-case overlays, and errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lightseg_edge.cli import eval as eval_cli


@pytest.fixture(scope="module")
def evaluated(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    code = eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "all", "--out", str(out),
                          "--overlays", "worst:3", "--threads", "1"])
    assert code == 0
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    return out, json.loads((out / "metrics.json").read_text())["metrics"], rows


def test_tail_matches_the_per_image_scores(evaluated):
    _, metrics, rows = evaluated
    dice = np.array([float(r["dice"]) for r in rows])
    assert metrics["images"] == len(rows) == 8  # --split all: every image of the collection
    assert metrics["dice_p5"] <= metrics["dice_p10"] <= metrics["dice_median"]
    for key, q in (("dice_p5", 5), ("dice_p10", 10), ("dice_median", 50)):
        assert metrics[key] == pytest.approx(np.percentile(dice, q), abs=1e-4)  # the CSV rounds to 4 digits
    assert metrics["dice_below_0_5"] == int((dice < 0.5).sum())
    assert metrics["mdice"] == pytest.approx(dice.mean(), abs=1e-4)


def test_worst_overlays_are_the_lowest_scores(evaluated):
    out, _, rows = evaluated
    saved = sorted((out / "overlays").glob("*.png"))
    assert len(saved) == 3 and all(p.name.startswith("worst_") for p in saved)
    lowest = {r["case_id"] for r in sorted(rows, key=lambda r: float(r["dice"]))[:3]}
    assert {p.name.split("_dice")[0][len("worst_"):] for p in saved} == lowest


def test_prints_the_tail(sample_dir, capsys):
    assert eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "test", "--max-images", "2", "--threads", "1"]) == 0
    assert "per-image Dice: p5" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["worst:0", "middle", "best:x"])
def test_bad_overlay_spec_exits_2(sample_dir, spec, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--overlays", spec])
    assert exc.value.code == 2
    assert "--overlays" in capsys.readouterr().err


def test_overlays_need_out(sample_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--overlays", "worst"])
    assert exc.value.code == 2 and "needs --out" in capsys.readouterr().err
