"""lightseg-compare on the real sample images: the shipped UCM-Net (PyTorch) against its fp32 and fp16 ONNX export,
against EGE-UNet (another model), and against itself; the CI gates' exit codes; the reports; and bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from reliability_helpers import assert_one_line_error, run_main  # noqa: E402
from runtime_helpers import export_onnx, make_fp16, write_manifest  # noqa: E402

from lightseg_edge.bench.compare import AbsHistogram, disagreement  # noqa: E402
from lightseg_edge.cli.compare import main  # noqa: E402
from lightseg_edge.data.io import read_image, read_mask  # noqa: E402
from lightseg_edge.metrics import Confusion, dice  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """The shipped UCM-Net exported like lightseg-export does: fp32 and fp16 ONNX + manifest (a few seconds). The
    session fixture of tests/runtimes is not visible from here, so this builds the same folder with its helpers."""
    pytest.importorskip("onnxruntime")
    from lightseg_edge import create_model

    model = create_model("ucmnet", pretrained=True).deploy()
    folder = tmp_path_factory.mktemp("ucmnet_export")
    export_onnx(model, folder / "model.onnx")
    make_fp16(folder / "model.onnx", folder / "model.fp16.onnx")
    write_manifest(folder, "ucmnet", model.cfg.preprocess, {"fp32": {"path": "model.onnx"}, "fp16": {"path": "model.fp16.onnx"}})
    return folder


def _compare(argv, tmp_path: Path, capsys, code: int = 0):
    """Run lightseg-compare with a --json report; (report, outcome)."""
    report = tmp_path / f"report{len(list(tmp_path.glob('report*.json')))}.json"
    outcome = run_main(main, [*argv, "--json", report, "--no-progress", "--device", "cpu"], capsys)
    assert outcome.code == code, outcome.err[-2000:]
    return json.loads(report.read_text()), outcome


@pytest.fixture(scope="module")
def fp32(export_dir, sample_dir, tmp_path_factory):
    """PyTorch vs the fp32 ONNX on all eight images, with both gates, overlays and Markdown."""
    tmp = tmp_path_factory.mktemp("cmp32")
    argv = ["ucmnet", str(export_dir), "--precision-b", "fp32", "--data", str(sample_dir), "--split", "all", "--worst", "2",
            "--out", str(tmp / "overlays"), "--markdown", str(tmp / "report.md"), "--min-agreement", "0.999", "--max-delta", "0.001",
            "--json", str(tmp / "report.json"), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    return json.loads((tmp / "report.json").read_text()), tmp


def test_fp32_onnx_matches_pytorch(fp32):
    report, _ = fp32
    s = report["summary"]
    assert report["compared"] == "logits" and report["quantity"] == "|dlogit|"  # same preprocessing on both sides
    assert (report["a"]["source"], report["a"]["runtime"], report["a"]["precision"]) == ("ucmnet", "pytorch", "fp32")
    assert report["b"]["runtime"] == "onnxruntime" and report["b"]["precision"] == "fp32" and report["b"]["source"].endswith("model.onnx")
    assert report["data"]["images"] == len(report["images"]) == 8 and report["data"]["ground_truth"]
    # Kernel and graph differences only: the export's own parity bound (1e-3 + 1e-3 * max|logit|), nearly all far below
    assert 0 < s["max_abs"] < 1e-3 + 1e-3 * s["ref_max_abs"] and s["p99_abs"] < 1e-3 and s["p50_abs"] <= s["p99_abs"] <= s["max_abs"]
    assert s["agreement_dice"] > 0.999 and s["min_image_dice"] > 0.99
    assert abs(s["delta"]) <= 0.001 and 0.5 < s["mdice_a"] < 1
    assert s["max_abs"] == max(r["max_abs"] for r in report["images"])
    assert s["disagree"] == s["disagree_boundary"] + s["disagree_elsewhere"] == sum(r["disagree"] for r in report["images"])
    assert report["passed"] and [g["flag"] for g in report["gates"]] == ["--min-agreement", "--max-delta"]


def test_per_image_figures_are_the_predictors_own(fp32, export_dir, sample_dir):
    """The worst image's Dice values, recomputed from each predictor's predict() and the ground-truth file."""
    from lightseg_edge.runtimes import load_predictor

    report, _ = fp32
    record = next(r for r in report["images"] if r["case_id"] == report["worst"][0])
    image, truth = read_image(record["image"]), read_mask(sample_dir / "masks" / f"{record['case_id']}_segmentation.png")
    with load_predictor("ucmnet", device="cpu") as a, load_predictor(export_dir, precision="fp32", device="cpu") as b:
        mask_a, mask_b = a.predict(image), b.predict(image)
    assert record["dice"] == pytest.approx(dice(Confusion.of(mask_b, mask_a)), abs=1e-12)
    assert record["dice_a"] == pytest.approx(dice(Confusion.of(mask_a, truth)), abs=1e-12)
    assert record["dice_b"] == pytest.approx(dice(Confusion.of(mask_b, truth)), abs=1e-12)
    assert record["delta"] == pytest.approx(record["dice_b"] - record["dice_a"])


def test_worst_overlays_and_markdown(fp32):
    report, tmp = fp32
    saved = sorted((tmp / "overlays").glob("*.png"))
    assert [p.name.split("_dice")[0] for p in saved] == [f"worst{k:02d}_{case}" for k, case in enumerate(report["worst"], start=1)]
    assert report["overlays"] == [str(p) for p in saved]
    by_case = {r["case_id"]: r for r in report["images"]}
    worst_dice = [by_case[c]["dice"] for c in report["worst"]]
    rest = [r["dice"] for r in report["images"] if r["case_id"] not in report["worst"]]
    assert worst_dice == sorted(worst_dice) and worst_dice[-1] <= min(rest)
    for path, case in zip(saved, report["worst"]):
        image, drawn = read_image(by_case[case]["image"]), read_image(path)
        assert drawn.shape == image.shape and (drawn != image).any()
    md = (tmp / "report.md").read_text()
    assert "| A-vs-B mask Dice (dataset) |" in md and "model.onnx" in md and "## Worst 2 image(s)" in md


def test_fp16_onnx_drifts_more_but_only_at_the_outlines(fp32, export_dir, sample_dir, tmp_path, capsys):
    report, outcome = _compare(["ucmnet", export_dir, "--precision-b", "fp16", "--data", sample_dir, "--split", "all"], tmp_path, capsys)
    s, s32 = report["summary"], fp32[0]["summary"]
    assert report["b"]["precision"] == "fp16" and report["b"]["source"].endswith("model.fp16.onnx")
    assert s["max_abs"] > 5 * s32["max_abs"] and s["p99_abs"] > s32["p99_abs"] and s["max_abs"] < 0.5
    assert 0.99 < s["agreement_dice"] <= 1.0 and abs(s["delta"]) < 0.01
    assert s["disagree_elsewhere"] <= s["disagree_boundary"]  # fp16 rounding flips pixels whose logit is near 0: outlines
    assert f"B: {export_dir / 'model.fp16.onnx'} (onnxruntime, fp16, cpu; input 256x256 minmax)" in outcome.out
    assert f"data: {sample_dir.resolve()} (folder layout), split all: 8 images" in outcome.out


def test_different_models_fail_the_gates(sample_dir, tmp_path, capsys):
    argv = ["ucmnet", "egeunet", "--data", sample_dir, "--worst", "1"]  # default split: val (two images)
    report, outcome = _compare([*argv, "--min-agreement", "0.99", "--max-delta", "1"], tmp_path, capsys, code=1)
    s = report["summary"]
    assert report["data"]["split"] == "val" and report["data"]["images"] == 2
    assert report["compared"] == "probabilities"  # UCM-Net min-max vs EGE-UNet raw input: no shared logits
    assert "probabilities at each image's own size" in outcome.out
    assert s["agreement_dice"] < 0.99 and s["disagree"] > 0 and s["max_abs"] > 0.1
    assert [g["passed"] for g in report["gates"]] == [False, True] and not report["passed"]
    line = outcome.err.strip().splitlines()[-1]
    assert line.startswith("gate failed:") and "--min-agreement" in line and "--max-delta" not in line and "Traceback" not in outcome.err
    report2, outcome = _compare([*argv, "--min-agreement", "0.5", "--max-delta", "0.001"], tmp_path, capsys, code=1)
    assert abs(report2["summary"]["delta"]) > 0.001 and report2["summary"]["delta"] == pytest.approx(s["delta"])
    assert "--max-delta" in outcome.err.strip().splitlines()[-1] and "--min-agreement" not in outcome.err
    assert "worst 1 image(s)" in outcome.out


@pytest.fixture
def odd_images(sample_dir, tmp_path):
    """Three sample images resized to 160x224 (HxW), in a plain folder (no masks, no layout)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    for path in sorted((sample_dir / "images").iterdir())[:3]:
        cv2.imwrite(str(folder / f"{path.stem}.png"), cv2.resize(cv2.imread(str(path)), (224, 160)))
    return folder


def test_identical_sources_on_a_plain_image_folder(export_dir, odd_images, tmp_path, capsys):
    out = tmp_path / "ov"
    report, outcome = _compare([export_dir, export_dir, "--data", odd_images, "--images", "2", "--out", out, "--worst", "1",
                                "--min-agreement", "1"], tmp_path, capsys)
    s = report["summary"]
    assert report["data"]["layout"] == "images" and report["data"]["images"] == 2 and not report["data"]["ground_truth"]
    assert s["max_abs"] == s["p50_abs"] == s["p99_abs"] == 0.0 and s["agreement_dice"] == 1.0 and s["disagree"] == 0
    assert s["mdice_a"] is None and s["delta"] is None and all(r["dice_a"] is None for r in report["images"])
    assert "no ground truth" in outcome.out and "split all: 2 of 3 images" in outcome.out
    (overlay,) = out.glob("*.png")
    assert read_image(overlay).shape == (160, 224, 3)


def test_onnx_sources_never_import_torch(export_dir, odd_images, tmp_path):
    """The firmware rule holds for the comparison too: two ONNX sides run where torch cannot be imported."""
    script = tmp_path / "no_torch.py"
    script.write_text(textwrap.dedent("""
        import sys
        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, _NoTorch())
        from lightseg_edge.cli.compare import main
        code = main(sys.argv[1:])
        assert code == 0, code
        assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        print("NO-TORCH-OK")
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script), str(export_dir), str(export_dir), "--precision-a", "fp32", "--precision-b", "fp16",
                          "--data", str(odd_images), "--images", "2", "--no-progress", "--out", str(tmp_path / "ov")],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300, check=False)
    assert res.returncode == 0 and "NO-TORCH-OK" in res.stdout, res.stderr[-3000:]
    assert "compared" in res.stdout and "|dlogit|" in res.stdout


@pytest.fixture
def bad_arg_paths(tmp_path, sample_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    return {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "file": str(tmp_path / "file"),
            "json": str(tmp_path / "r.json"), "nodir": str(tmp_path / "nodir" / "r.json"), "images": str(sample_dir / "images")}


@pytest.mark.parametrize("extra, named", [
    (["--images", "0"], "--images"),
    (["--threshold", "1.5"], "--threshold"),
    (["--min-agreement", "2"], "--min-agreement"),
    (["--min-agreement", "nan"], "--min-agreement"),
    (["--max-delta", "-1"], "--max-delta"),
    (["--worst", "-1"], "--worst"),
    (["--split", "bogus"], "--split"),
    (["--precision-b", "fp8"], "--precision-b"),
    (["--runtime-a", "tpu"], "--runtime-a"),
    (["--data", "{missing}"], "--data"),
    (["--data", "{empty}"], "{empty}"),
    (["--out", "{file}"], "--out"),
    (["--json", "{nodir}"], "--json"),
    (["--json", "{json}", "--markdown", "{json}"], "--markdown"),
    (["--model", "ucmnet"], "--model"),  # neither source is a file
    (["--data", "{images}", "--split", "test"], "--split"),  # a plain image folder has no splits
    (["--data", "{images}", "--max-delta", "0.1"], "--max-delta"),  # no ground truth there
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_arguments_exit_2_with_one_line(extra, named, bad_arg_paths, sample_dir, capsys):
    argv = ["ucmnet", "ucmnet", "--data", sample_dir, "--no-progress", *[a.format(**bad_arg_paths) for a in extra]]
    assert_one_line_error(run_main(main, argv, capsys), named.format(**bad_arg_paths))


def test_a_missing_source_is_named(sample_dir, capsys):
    outcome = run_main(main, ["nowhere/model.onnx", "ucmnet", "--data", sample_dir, "--no-progress"], capsys)
    assert "error: A: nowhere/model.onnx: no such file" in assert_one_line_error(outcome, "nowhere/model.onnx")


def test_disagreement_near_the_outline_and_elsewhere():
    a = np.zeros((64, 64), np.uint8)
    cv2.circle(a, (30, 30), 12, 1, -1)
    b = np.roll(a, 2, axis=1)  # the same lesion, 2 px to the right: every differing pixel is near an outline
    total, near, far = disagreement(a, b, 3)
    assert total > 0 and near == total and far == 0
    b[50:60, 50:60] = 1  # a region only B sees, 10x10: only its 2x2 centre is more than 3 px from its outline
    total2, near2, far2 = disagreement(a, b, 3)
    assert total2 == total + 100 and far2 == 2 * 2 and near2 == total2 - far2
    assert disagreement(a, a, 3) == (0, 0, 0)


def test_histogram_percentiles_follow_numpy():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.zeros(3000), np.abs(rng.normal(scale=1e-4, size=50_000)), rng.exponential(size=2000)])
    hist = AbsHistogram()
    for chunk in np.array_split(rng.permutation(values), 7):
        hist.add(chunk)
    for q in (0.01, 0.5, 0.9, 0.99, 0.999):
        assert hist.quantile(q) == pytest.approx(np.percentile(values, 100 * q), rel=0.025, abs=1e-12)
    assert hist.quantile(1.0) == values.max() and hist.quantile(0.05) == 0.0
