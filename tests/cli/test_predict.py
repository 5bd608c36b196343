"""lightseg-predict on the real sample images: masks, overlays, video, and errors."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from runtime_helpers import MODEL, centred_model, read_samples

from lightseg_edge.cli.predict import main
from lightseg_edge.data.io import read_image


@pytest.fixture(scope="module")
def checkpoint(sample_dir, tmp_path_factory):
    """A trainer-format checkpoint of a model whose masks cover part of each image (see runtime_helpers)."""
    import torch

    torch.set_num_threads(1)
    model = centred_model(MODEL, read_samples(sample_dir))
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"format": "lightseg-ckpt/1", "model": model.state_dict(), "config": {"model": MODEL},
                "preprocess": model.cfg.preprocess.to_dict()}, str(path))
    return path


def near_boundary(mask: np.ndarray, radius: int) -> np.ndarray:
    k = np.ones((3, 3), np.uint8)
    # Outside the image counts as background: findContours traces a region touching the border along the border.
    edge = cv2.dilate(mask, k) - cv2.erode(mask, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.dilate(edge, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0


def test_folder_masks_and_overlays(checkpoint, sample_dir, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main([str(checkpoint), str(sample_dir / "images"), "--out", str(out), "--overlay", "--device", "cpu", "--batch-size", "3"]) == 0
    images = sorted((sample_dir / "images").iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{p.stem}_mask.png" for p in images] + [f"{p.stem}_overlay.png" for p in images])
    from lightseg_edge.runtimes import load_predictor

    with load_predictor(checkpoint, device="cpu") as p:
        for f in images:
            rgb = read_image(f)
            mask = cv2.imread(str(out / f"{f.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
            assert mask.shape == rgb.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255} and 0 < mask.mean() < 255
            np.testing.assert_array_equal(mask // 255, p.predict(rgb))
            overlay = read_image(out / f"{f.stem}_overlay.png")
            changed = (overlay != rgb).any(axis=2)
            assert changed.any()
            assert not (changed & ~near_boundary(mask // 255, 1)).any(), f"{f.name}: overlay changed pixels away from the contour"
    assert "wrote 16 file(s)" in capsys.readouterr().out


def test_single_images_threshold_and_name_collisions(checkpoint, sample_dir, tmp_path):
    img = min((sample_dir / "images").iterdir())
    other = tmp_path / "copy" / img.name
    other.parent.mkdir()
    other.write_bytes(img.read_bytes())
    out = tmp_path / "pred"
    assert main([str(checkpoint), str(img), str(other), "--out", str(out), "--threshold", "0", "--device", "cpu"]) == 0
    masks = sorted(out.glob("*_mask.png"))
    assert [m.name for m in masks] == [f"{img.stem}_mask.png", f"copy_{img.stem}_mask.png"]
    assert all((cv2.imread(str(m), cv2.IMREAD_UNCHANGED) == 255).all() for m in masks)  # threshold 0: all lesion
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_tta_masks_are_the_flip_averaging_predictors(checkpoint, sample_dir, tmp_path):
    from lightseg_edge.runtimes import load_predictor

    img = min((sample_dir / "images").iterdir())
    assert main([str(checkpoint), str(img), "--out", str(tmp_path / "plain"), "--device", "cpu"]) == 0
    assert main([str(checkpoint), str(img), "--out", str(tmp_path / "tta"), "--device", "cpu", "--tta", "flips"]) == 0
    written = cv2.imread(str(tmp_path / "tta" / f"{img.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    with load_predictor(checkpoint, device="cpu", tta="flips") as p:
        np.testing.assert_array_equal(written, 255 * p.predict(read_image(img)))
    assert (written != cv2.imread(str(tmp_path / "plain" / f"{img.stem}_mask.png"), cv2.IMREAD_UNCHANGED)).any()


def test_video_prints_per_frame_latency(checkpoint, sample_dir, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    frames = read_samples(sample_dir, 3)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (192, 192))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "pred"
    assert main([str(checkpoint), str(video), "--out", str(out), "--overlay", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    for i in range(3):
        assert f"clip frame {i}: " in text and " ms" in text
    assert "clip: 3 frames, mean" in text and "FPS" in text
    assert sorted(p.name for p in (out / "clip").glob("*_mask.png")) == ["000000_mask.png", "000001_mask.png", "000002_mask.png"]
    assert len(list((out / "clip").glob("*_overlay.png"))) == 3


@pytest.mark.parametrize("args,message", [
    (["{ckpt}", "missing.jpg"], "missing.jpg: no such file or folder"),
    (["{ckpt}", "{txt}"], "unsupported input type '.txt'"),
    (["{ckpt}", "{empty}"], "no images in this folder"),
    (["nope.onnx", "{img}"], "nope.onnx: no such file or folder"),
    (["{ckpt}", "{img}", "--runtime", "onnxruntime"], "runs on the pytorch runtime, not onnxruntime"),
])
def test_errors_exit_2_with_a_message(checkpoint, sample_dir, tmp_path, capsys, args, message):
    import re

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    img = min((sample_dir / "images").iterdir())
    argv = [a.format(ckpt=checkpoint, txt=tmp_path / "notes.txt", empty=tmp_path / "empty", img=img) for a in args]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


@pytest.mark.parametrize("batch_size", ["1", "8"])
def test_a_bad_image_in_a_folder_is_skipped_and_reported(checkpoint, sample_dir, tmp_path, capsys, batch_size):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((sample_dir / "images").iterdir())[:3]
    for f in good:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:100])
    out = tmp_path / "pred"
    code = main([str(checkpoint), str(folder), "--out", str(out), "--device", "cpu", "--batch-size", batch_size, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}_mask.png" for f in good)  # every good image written
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and any("broken.jpg" in line for line in failed) and any("truncated.png" in line for line in failed)
    assert "error: 2 of 5 image(s) failed" in captured.err
