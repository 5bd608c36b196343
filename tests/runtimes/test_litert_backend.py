"""LiteRTPredictor on real conversions of the shipped UCM-Net: agreement with ONNX Runtime, errors, no torch.

The .tflite files come from the tflite export target (built once per session, shared with
tests/export/test_litert_target.py through the session's base temp folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")  # to build the files under test
pytest.importorskip("onnxruntime")

from lightseg_edge.errors import InvalidInputError, PredictorClosedError  # noqa: E402
from lightseg_edge.runtimes.litert_backend import LiteRTPredictor  # noqa: E402
from lightseg_edge.types import InputSpec, Precision, PreprocessConfig, Runtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "export"))
from test_litert_target import FP32_MIN_DICE, INT8_MIN_DICE, SIZE, mask_dice, shared_build  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_dir):
    return shared_build(tmp_path_factory, sample_dir)


@pytest.fixture(scope="module")
def pre(built) -> PreprocessConfig:
    d = built["preprocess"]
    return PreprocessConfig(size=tuple(d["size"]), mode=d["mode"], mean=tuple(d["mean"]), std=tuple(d["std"]))


@pytest.fixture(scope="module")
def images(sample_dir):
    from lightseg_edge.data.io import read_image

    return [read_image(p) for p in sorted((sample_dir / "images").iterdir())]


@pytest.fixture(scope="module")
def ort_masks(built, pre, images):
    from lightseg_edge.runtimes.onnxruntime_backend import OnnxRuntimePredictor

    with OnnxRuntimePredictor(built["folder"] / "model.onnx", pre, device="cpu", threads=1) as p:
        return p.predict_batch(images)


@pytest.fixture(scope="module")
def fp32(built, pre):
    p = LiteRTPredictor(built["folder"] / "model.fp32.tflite", pre, threads=1)
    yield p
    p.close()


@pytest.fixture(scope="module")
def int8_io_file(built, sample_dir, pre, tmp_path_factory) -> Path:
    """AEQ's plain static_wi8_ai8 (int8 input and output tensors), to exercise the adapter's (de)quantisation."""
    from ai_edge_quantizer import quantizer, recipe

    from lightseg_edge.data.layouts import list_samples
    from lightseg_edge.export.images import load_inputs
    from lightseg_edge.export.targets.litert import _quiet

    calib = load_inputs(list_samples(sample_dir, split="train"), pre)
    with _quiet(False):
        q = quantizer.Quantizer(str(built["folder"] / "model.fp32.tflite"), recipe.static_wi8_ai8())
        stats = q.calibrate({"serving_default": [{"args_0": calib[i:i + 1]} for i in range(len(calib))]}, num_threads=1)
        model = q.quantize(stats, enable_progress_report=False).quantized_model
    path = tmp_path_factory.mktemp("int8io") / "model.int8io.tflite"
    path.write_bytes(bytes(model))
    return path


def test_registry_row_resolves_to_this_class():
    from lightseg_edge.runtimes.registry import get_runtime

    spec = get_runtime("tflite")
    assert spec.runtime is Runtime.LITERT and spec.available()
    assert spec.predictor_class() is LiteRTPredictor


def test_description(fp32, built):
    assert fp32.runtime is Runtime.LITERT and fp32.device == "cpu" and fp32.precision is Precision.FP32
    assert fp32.input_spec.shape == (1, 3, SIZE, SIZE) and fp32.static_batch_size == 1
    assert fp32.threads == 1 and not fp32.quantized_io
    assert "model.fp32.tflite" in repr(fp32)


def test_infer_returns_logits(fp32, pre, images):
    from lightseg_edge.data.transforms import preprocess_batch

    out = fp32.infer(preprocess_batch(images[:1], pre))
    assert out.shape == (1, 1, SIZE, SIZE) and out.dtype == np.float32 and np.isfinite(out).all()


def test_fp32_masks_match_onnxruntime(fp32, images, ort_masks):
    masks = fp32.predict_batch(images)  # 8 images through a static batch of 1: chunked
    assert [m.shape for m in masks] == [im.shape[:2] for im in images]
    dice = [mask_dice(a, b) for a, b in zip(masks, ort_masks)]
    assert min(dice) >= FP32_MIN_DICE, dice


def test_int8_masks_close_to_onnxruntime(built, pre, images, ort_masks):
    with LiteRTPredictor(built["folder"] / "model.int8.tflite", pre, precision="int8", threads=1) as p:
        assert not p.quantized_io  # the target keeps float32 I/O
        dice = [mask_dice(a, b) for a, b in zip(p.predict_batch(images), ort_masks)]
    print(f"\nLiteRTPredictor int8 vs ORT fp32: mean Dice {np.mean(dice):.4f}, min {np.min(dice):.4f}")
    assert np.mean(dice) >= INT8_MIN_DICE, dice


def test_quantized_io_model_is_quantized_and_dequantized(int8_io_file, built, pre, images):
    with LiteRTPredictor(int8_io_file, pre, precision="int8", threads=1) as q, \
            LiteRTPredictor(built["folder"] / "model.fp32.tflite", pre, threads=1) as f:
        assert q.quantized_io
        dice = [mask_dice(a, b) for a, b in zip(q.predict_batch(images), f.predict_batch(images))]
    # A full-integer model with int8 I/O agrees with fp32 at ~0.95 here; a wrong scale or zero point in the adapter's
    # (de)quantisation gives empty or full masks instead.
    assert np.mean(dice) >= 0.90, dice


def test_input_spec_from_manifest_is_checked(built, pre):
    path = built["folder"] / "model.fp32.tflite"
    ok = LiteRTPredictor(path, pre, input_spec=InputSpec("input", (1, 3, SIZE, SIZE), "float32", "logits"))
    assert ok.input_spec.name == "input"  # the manifest's (ONNX) names are kept; only the shape must agree
    ok.close()
    with pytest.raises(InvalidInputError, match=r"model\.fp32\.tflite: the manifest/option says input shape") as info:
        LiteRTPredictor(path, pre, input_spec=InputSpec("input", (1, 3, 2 * SIZE, SIZE)))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content,match", [
    (None, r"TFLite file not found"),
    (b"", r"not a TFLite flatbuffer \(empty\)"),
    (b"\x08\x00\x00\x00ONNXgarbage", r"not a TFLite flatbuffer"),
    ("truncated", r"LiteRT cannot load this model"),
])
def test_bad_files_give_one_line_errors(built, pre, tmp_path, content, match):
    path = tmp_path / "model.tflite"
    if content == "truncated":
        path.write_bytes((built["folder"] / "model.fp32.tflite").read_bytes()[:2000])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=match) as info:
        LiteRTPredictor(path, pre)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_options(built, pre):
    path = built["folder"] / "model.fp32.tflite"
    with pytest.raises(InvalidInputError, match=r"device 'cuda' is not supported by the litert runtime"):
        LiteRTPredictor(path, pre, device="cuda")
    for bad in (0, -1, True, 1.5, 10 ** 6):
        with pytest.raises(InvalidInputError, match=r"threads="):
            LiteRTPredictor(path, pre, threads=bad)
    with pytest.raises(InvalidInputError, match=r"preprocessing resizes to \(128, 128\)"):
        LiteRTPredictor(path, PreprocessConfig(size=(128, 128), mode=pre.mode))


def test_bad_batches(fp32):
    with pytest.raises(InvalidInputError, match=r"expected shape \[1, 3, 256, 256\], got \[1, 3, 128, 128\]"):
        fp32.infer(np.zeros((1, 3, 128, 128), np.float32))
    with pytest.raises(InvalidInputError, match=r"fixed batch of 1, got 2"):
        fp32.infer(np.zeros((2, 3, SIZE, SIZE), np.float32))
    with pytest.raises(InvalidInputError, match=r"did you forget preprocess"):
        fp32.infer(np.zeros((1, 3, SIZE, SIZE), np.uint8))


def test_closed(built, pre):
    p = LiteRTPredictor(built["folder"] / "model.fp32.tflite", pre)
    p.close()
    p.close()
    with pytest.raises(PredictorClosedError):
        p.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))


def test_runs_without_torch(built, sample_dir, tmp_path):
    """A device image with numpy + ai-edge-litert only: importing torch fails, and nothing imports it."""
    from test_no_torch import _run

    _run("""
        from lightseg_edge.data.io import read_image
        from lightseg_edge.runtimes.litert_backend import LiteRTPredictor
        from lightseg_edge.types import PreprocessConfig
        pre = PreprocessConfig(size=(%d, %d), mode=%r)
        with LiteRTPredictor(sys.argv[1], pre, threads=1) as p:
            mask = p.predict(read_image(sys.argv[2]))
        assert mask.ndim == 2 and 0 < mask.mean() < 1, mask.mean()
    """ % (SIZE, SIZE, built["preprocess"]["mode"]), tmp_path,
         (built["folder"] / "model.fp32.tflite", min((sample_dir / "images").iterdir())))


def test_compare_puts_a_tflite_file_beside_its_onnx(built, sample_dir, tmp_path, capsys):
    """lightseg-compare across artifact kinds: the bare .tflite (no manifest: --model gives its preprocessing) against
    the ONNX it was converted beside, on the sample's real images, with a gate."""
    import json

    from lightseg_edge.cli.compare import main

    out = tmp_path / "cmp.json"
    argv = [str(built["folder"] / "model.onnx"), str(built["folder"] / "model.fp32.tflite"), "--model", "ucmnet", "--data",
            str(sample_dir), "--split", "all", "--min-agreement", "0.999", "--json", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert [s["runtime"] for s in (report["a"], report["b"])] == ["onnxruntime", "litert"]
    assert report["compared"] == "logits" and report["data"]["images"] == 8
    assert report["summary"]["agreement_dice"] >= 0.999 and report["passed"]
