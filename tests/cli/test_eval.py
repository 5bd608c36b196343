"""lightseg-eval on the real sample images: means, the per-image Dice tail, worst-case overlays, and errors."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from lightseg_edge.cli import eval as eval_cli
from lightseg_edge.data.overlay import GT_COLOR, PRED_COLOR


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


def test_prints_the_tail_and_no_progress_when_asked(sample_dir, capsys):
    assert eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "train", "--max-images", "2", "--threads", "1",
                          "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "per-image Dice: p5" in captured.out
    assert f"data: {sample_dir.resolve()} (folder layout), split train: 2 of 4 images" in captured.out
    assert "%|" not in captured.err and "eval" not in captured.err


@pytest.fixture
def odd_sized(sample_dir, tmp_path):
    """Two sample cases resized to 160x224 (HxW): neither the network's 256x256 nor square."""
    root = tmp_path / "odd"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for case in ("ISIC_0000004", "ISIC_0000016"):
        image = cv2.imread(str(sample_dir / "images" / f"{case}.jpg"))
        mask = cv2.imread(str(sample_dir / "masks" / f"{case}_segmentation.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / "images" / f"{case}.png"), cv2.resize(image, (224, 160)))
        cv2.imwrite(str(root / "masks" / f"{case}_segmentation.png"), cv2.resize(mask, (224, 160), interpolation=cv2.INTER_NEAREST))
    return root


def _solid_block(image_bgr: np.ndarray, rgb, side: int = 6) -> bool:
    """A filled side x side square of exactly this colour (a legend swatch; a contour line is thinner)."""
    hit = np.all(image_bgr == np.array(rgb[::-1], np.uint8), axis=-1).astype(np.uint8)
    return bool(cv2.erode(hit, np.ones((side, side), np.uint8), borderValue=0).any())


def test_overlays_at_the_image_size_with_a_legend(odd_sized, tmp_path, capsys):
    out = tmp_path / "ev"
    assert eval_cli.main(["--model", "ucmnet", "--data", str(odd_sized), "--split", "all", "--out", str(out), "--overlays", "1",
                          "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert f"data: {odd_sized.resolve()} (folder layout), split all: 2 images" in captured.out
    assert "model: ucmnet at 256x256, weights " in captured.out
    assert "eval: 100%" in captured.err and "overlays: 100%" in captured.err  # the bars, on stderr (stdout keeps results)
    dice = {r["case_id"]: float(r["dice"]) for r in csv.DictReader((out / "per_image.csv").open())}
    saved = sorted(p.name for p in (out / "overlays").glob("*.png"))
    worst, best = sorted(dice, key=dice.get)
    assert [n.split("_dice")[0] for n in saved] == [f"best_{best}", f"worst_{worst}"]  # the case id and ...
    for name in saved:  # ... its Dice (the CSV rounds to 4 digits, the name to 3)
        assert float(name.split("_dice")[1][:-4]) == pytest.approx(dice[name.split("_", 1)[1].split("_dice")[0]], abs=6e-4)
    for name in saved:
        img = cv2.imread(str(out / "overlays" / name))
        assert img.shape == (160, 224, 3)  # the image's own size, not the network's 256x256
        legend, rest = img[:60, :110], img.copy()
        rest[:60, :110] = 0
        assert _solid_block(legend, PRED_COLOR) and _solid_block(legend, GT_COLOR)  # the two swatches
        labels = img[8:50, 24:90]  # right of the swatches, inside the dimmed box: bright only where the white text is
        assert (labels.min(axis=-1) >= 200).sum() > 20
        assert np.all(rest == PRED_COLOR[::-1], axis=-1).any()  # the predicted outline, outside the legend


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


def _report(sample_dir, out, *flags) -> dict:
    """metrics.json of lightseg-eval on every sample image with ``flags``."""
    assert eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--split", "all", *flags, "--out", str(out),
                          "--threads", "1", "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_shift_is_applied_and_recorded(evaluated, sample_dir, tmp_path, capsys):
    _, plain, _ = evaluated
    report = _report(sample_dir, tmp_path, "--shift", "round-field")
    assert "shift: round-field (a dermoscope's round field of view" in capsys.readouterr().out
    assert report["shift"] == "round-field" and report["metrics"]["images"] == plain["images"]
    assert report["metrics"]["mdice"] != plain["mdice"]  # the same images, seen through another dermoscope


def test_flip_tta_is_recorded_and_scores_as_the_predictor_path(evaluated, sample_dir, tmp_path, capsys):
    from lightseg_edge.bench.accuracy import evaluate, select_samples
    from lightseg_edge.runtimes import load_predictor

    _, plain, _ = evaluated
    report = _report(sample_dir, tmp_path, "--tta", "flips")
    assert ", TTA flips)" in capsys.readouterr().out
    assert report["tta"] == "flips" and report["metrics"]["mdice"] != plain["mdice"]
    # The same four views through the runtime layer's numpy path (a predictor's infer): the same score.
    with load_predictor("ucmnet", device="cpu", tta="flips") as p:
        via_predictor = evaluate(p, select_samples(str(sample_dir), None))
    assert via_predictor.mdice == pytest.approx(report["metrics"]["mdice"], abs=1e-3)


@pytest.mark.parametrize("argv, message", [(["--shift", "fog"], "invalid choice: 'fog'"), (["--tta", "d4"], "invalid choice: 'd4'"),
                                           (["--shift", "dark", "--out", "o", "--overlays", "worst"], "not with --shift")])
def test_bad_shift_use_exits_2(sample_dir, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_cli.main(["--model", "ucmnet", "--data", str(sample_dir)] + [str(tmp_path / a) if a == "o" else a for a in argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_lightseg_eval_process_keeps_the_memory_it_frees(sample_dir, tmp_path, evaluated):
    """As a command of its own (not a caller's main()), lightseg-eval keeps freed memory (train/allocator.py) and
    measures the same as in-process."""
    import platform
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lightseg_edge.cli.eval", "--model", "ucmnet", "--data", str(sample_dir), "--split", "all",
           "--out", str(tmp_path), "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if platform.libc_ver()[0] == "glibc":
        assert "memory: freed blocks stay in the process" in done.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == evaluated[1]
