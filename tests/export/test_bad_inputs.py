"""Bad input: a clear error naming the value and what was expected, and nothing half-written on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from export_helpers import small_config

from lightseg_edge.errors import ExportConfigError, ExportError, LightsegError, UnknownModelError


def _export(cfg):
    from lightseg_edge.export import export

    return export(cfg)


def _files(folder: Path):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_unknown_model_suggests_the_close_name(sample_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnknownModelError, match=r"unknown model 'ucmnt'.*Did you mean 'ucmnet'"):
        _export(small_config(sample_dir, out, model="ucmnt", weights="random"))
    assert not out.exists()


def test_missing_pretrained_weights_suggest_weights_flag(sample_dir, tmp_path, monkeypatch):
    import lightseg_edge.models._weights as w

    monkeypatch.setattr(w, "WEIGHTS_DIR", tmp_path / "no-weights-here")
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"step 'model'.*no shipped pretrained weights.*--weights CKPT.*--weights random"):
        _export(small_config(sample_dir, out, model="ucmnet"))
    assert not out.exists()


def test_unreadable_weights_file(sample_dir, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(os.urandom(2048))  # any bytes: whichever way torch's reader fails, the message says the same
    out = tmp_path / "out"
    with pytest.raises(
        ExportError, match=r"garbage\.pt: cannot read weights: not a tensors-only PyTorch file .*expected a lightseg-train checkpoint"
    ):
        _export(small_config(sample_dir, out, model="ucmnet", weights=str(bad)))
    assert not out.exists()


def test_weights_of_another_model_are_rejected_with_counts(sample_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    from lightseg_edge import create_model, list_models

    other = next(n for n in list_models() if n != "ucmnet")
    path = tmp_path / f"{other}.safetensors"
    save_file({k: v.contiguous() for k, v in create_model(other).state_dict().items()}, str(path))
    first = next(iter(create_model("ucmnet").state_dict()))
    torch.save({"model": {first: torch.zeros(1)}}, str(tmp_path / "tiny.pt"))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=rf"{other}\.safetensors: weights do not fit model 'ucmnet': \d+ missing keys"):
        _export(small_config(sample_dir, out, model="ucmnet", weights=str(path)))
    with pytest.raises(
        ExportError, match=rf"tiny\.pt: weights do not fit model 'ucmnet':.*1 shape mismatches \(e\.g\. {first}: file \(1,\)"
    ):
        _export(small_config(sample_dir, out, model="ucmnet", weights=str(tmp_path / "tiny.pt")))
    assert not out.exists()


def test_missing_weights_file(sample_dir, tmp_path):
    with pytest.raises(ExportConfigError, match=r"--weights .*nope\.pt: file not found"):
        _export(small_config(sample_dir, tmp_path / "out", model="ucmnet", weights=str(tmp_path / "nope.pt")))


@pytest.mark.parametrize("content", ["empty", "no-images"])
def test_calibration_folder_without_images(sample_dir, tmp_path, content):
    calib = tmp_path / "calib"
    calib.mkdir()
    if content == "no-images":
        (calib / "README.txt").write_text("not an image")
        (calib / "sub").mkdir()
    out = tmp_path / "out"
    with pytest.raises(LightsegError, match=rf"--calib-data {calib}: no images found \(expected \.jpg"):
        _export(small_config(sample_dir, out, model="ucmnet", weights="random", int8=True, calib_data=str(calib)))
    assert not out.exists()


def test_calibration_root_without_a_training_split(sample_dir, tmp_path):
    import shutil

    root = tmp_path / "valonly"
    shutil.copytree(sample_dir, root)
    (root / "split.csv").write_text("case_id,split\n" + "".join(f"{p.stem},val\n" for p in (root / "images").iterdir()))
    with pytest.raises(LightsegError, match=r"no training images to calibrate on"):
        _export(small_config(sample_dir, tmp_path / "out", model="ucmnet", weights="random", int8=True, calib_data=str(root)))
    assert not (tmp_path / "out").exists()


def test_int8_without_calibration_data(sample_dir, tmp_path):
    with pytest.raises(ExportConfigError, match=r"--int8 needs --calib-data DIR"):
        _export(small_config(sample_dir, tmp_path / "out", model="ucmnet", weights="random", int8=True))


def test_image_size_not_a_multiple_of_the_stride(sample_dir, tmp_path):
    from lightseg_edge import get_model_config

    stride = get_model_config("ucmnet").stride
    size = stride * 4 + 8
    with pytest.raises(
        ExportConfigError, match=rf"--img-size {size} is not a multiple of ucmnet's stride {stride}; use {stride * 4} or {stride * 5}"
    ):
        _export(small_config(sample_dir, tmp_path / "out", model="ucmnet", weights="random", img_size=size))
    assert not (tmp_path / "out").exists()


def test_output_folder_not_writable(sample_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ExportConfigError, match=r"--output .*a-file/sub: cannot write to this folder"):
        _export(small_config(sample_dir, blocker / "sub", model="ucmnet", weights="random"))
    with pytest.raises(ExportConfigError, match=r"--output .*a-file: exists and is not a folder"):
        _export(small_config(sample_dir, blocker, model="ucmnet", weights="random"))
    assert blocker.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_output_folder_read_only(sample_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ExportConfigError, match=r"cannot write to this folder"):
            _export(small_config(sample_dir, ro / "out", model="ucmnet", weights="random"))
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_from_onnx_file(tmp_path, kind, sample_dir):
    folder = tmp_path / "exp"
    folder.mkdir()
    bad = folder / "model.onnx"
    if kind == "garbage":
        bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    else:  # a real ONNX file cut in half, as an interrupted copy leaves it
        from lightseg_edge.export import export

        export(small_config(sample_dir, tmp_path / "good", model="ucmnet", weights="random", img_size=128, engine="off"))
        data = (tmp_path / "good" / "model.onnx").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    before = _files(folder)
    with pytest.raises(ExportError, match=rf"{bad}"):
        _export(small_config(sample_dir, folder, from_onnx=str(bad), fp16=True, output=None))
    assert _files(folder) == before


def test_failed_step_leaves_previous_export_intact(sample_dir, tmp_path, monkeypatch):
    """A failure after some files were made leaves the folder exactly as it was, old manifest included."""
    from lightseg_edge.export import export
    from lightseg_edge.export import parity as parity_mod
    from lightseg_edge.manifest import read_manifest, verify_artifacts

    out = tmp_path / "out"
    export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*a, **k):
        raise RuntimeError("simulated ONNX Runtime crash")

    monkeypatch.setattr(parity_mod, "run_onnx", broken)
    with pytest.raises(ExportError, match=r"step 'parity' failed: simulated ONNX Runtime crash"):
        export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, fp16=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert verify_artifacts(out, read_manifest(out)) == []


def test_interrupted_commit_never_leaves_a_stale_manifest(sample_dir, tmp_path, monkeypatch):
    """If the commit fails (the disk fills while the new manifest is written), the folder is exactly as it was."""
    from lightseg_edge.export import export, pipeline
    from lightseg_edge.manifest import read_manifest, verify_artifacts

    out = tmp_path / "out"
    export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def flaky(src, dst):
        if Path(dst).name == "manifest.json":  # the new manifest, written last into the staging folder
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(pipeline.os, "replace", flaky)
    with pytest.raises(ExportError, match=r"step 'manifest' failed: .*No space left on device"):
        export(small_config(sample_dir, out, model="ucmnet", weights="random", img_size=128, fp16=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert verify_artifacts(out, read_manifest(out)) == []
    assert not [p for p in tmp_path.rglob(".*")]  # no staging folder beside it, no temporary file in it
