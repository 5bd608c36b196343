"""What the page offers and runs, without Gradio: the model menu, the predictor cache and DemoState's actions."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from lightseg_edge.data.io import read_image
from lightseg_edge.demo.analysis import dice
from lightseg_edge.demo.app import DemoState
from lightseg_edge.demo.sources import PredictorCache, SourceOption, discover, option_for
from lightseg_edge.errors import DataError, InvalidInputError, LightsegError, UnknownModelError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from runtime_helpers import export_onnx, make_fp16, write_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class FakePredictor:
    def __init__(self, key):
        self.key = key
        self.closed = False

    def close(self):
        self.closed = True


def test_cache_loads_once_per_key_and_closes_all():
    loads = []

    def loader(source, runtime, device, precision):
        loads.append((source, runtime, device, precision))
        return FakePredictor((source, runtime, precision))

    cache = PredictorCache(device="cpu", loader=loader)
    p1, _ = cache.get("m", "onnxruntime", "fp32")
    p2, again = cache.get("m", "onnxruntime", "fp32")
    p3, _ = cache.get("m", "onnxruntime", "fp16")
    assert p1 is p2 and p3 is not p1 and again == 0.0
    assert loads == [("m", "onnxruntime", "cpu", "fp32"), ("m", "onnxruntime", "cpu", "fp16")]
    assert len(cache) == 2 and ("m", "onnxruntime", "fp16") in cache
    cache.close()
    cache.close()  # idempotent
    assert p1.closed and p3.closed
    with pytest.raises(LightsegError, match="shutting down"):
        cache.get("m", "onnxruntime", "fp32")


def test_registry_menu():
    pytest.importorskip("torch")
    options = discover(device="cpu")
    labels = [o.label for o in options]
    assert {"ucmnet", "lmsaunet", "egeunet"} <= set(labels)
    from lightseg_edge.models._weights import has_pretrained

    assert all(has_pretrained(name) for name in labels)
    assert all(o.runtimes == (("pytorch", ("fp32",)),) for o in options)  # fp16 autocast needs CUDA
    with pytest.raises(UnknownModelError):
        option_for("no_such_model")


def test_file_and_folder_menu(tmp_path):
    pytest.importorskip("onnxruntime")
    from lightseg_edge.types import PreprocessConfig

    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("model.onnx", "model.fp16.onnx"):
        (folder / name).write_bytes(b"not checked until loaded")
    write_manifest(folder, "ucmnet", PreprocessConfig(size=(256, 256), mode="minmax"),
                   {"fp32": {"path": "model.onnx"}, "fp16": {"path": "model.fp16.onnx"}})
    opt = option_for(str(folder), device="cpu")
    assert opt.source == str(folder) and opt.label == f"ucmnet ({folder})"
    assert opt.runtime_names == ["onnxruntime"] and opt.precisions("onnxruntime") == ["fp32", "fp16"]
    assert opt.precisions("tensorrt") == []
    fp16 = option_for(str(folder / "model.fp16.onnx"), device="cpu")
    assert fp16.runtimes == (("onnxruntime", ("fp16",)),)  # the manifest beside it says which variant it is
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        option_for(str(tmp_path / "missing.onnx"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="unrecognised model file type"):
        option_for(str(tmp_path / "weights.bin"))
    twice = discover([str(folder), str(folder)], device="cpu")
    assert [o.label for o in twice] == [opt.label, f"{opt.label} #2"]


@pytest.fixture
def state():
    options = [SourceOption("m", "m", (("onnxruntime", ("fp32", "fp16")),)), SourceOption("n", "n", (("pytorch", ("fp32",)),))]
    return DemoState(options, PredictorCache(loader=lambda *a, **k: pytest.fail("nothing may load here")))


def test_choices_are_checked_before_anything_loads(state):
    assert state.check_choice("m", "onnxruntime", "fp16").source == "m"
    with pytest.raises(InvalidInputError, match="unknown model 'x'; choose one of: m, n"):
        state.check_choice("x", "onnxruntime", "fp32")
    with pytest.raises(InvalidInputError, match="runtime 'tensorrt' is not available here"):
        state.check_choice("m", "tensorrt", "fp16")
    with pytest.raises(InvalidInputError, match="precision 'int8' is not available here; choose one of: fp32, fp16"):
        state.check_choice("m", "onnxruntime", "int8")


def test_upload_refusals_name_the_users_file(state, tmp_path, sample_dir):
    with pytest.raises(InvalidInputError, match="no image"):
        state.read_upload(None)
    upload = tmp_path / "gradio" / "0123abcd"
    upload.mkdir(parents=True)
    bad = upload / "mole.jpg"
    bad.write_text("hello")
    with pytest.raises(DataError) as err:
        state.read_upload(str(bad))
    assert str(err.value).startswith("image refused: mole.jpg: not a readable image") and str(upload) not in str(err.value)
    small = DemoState(state.options.values(), max_pixels=1000)
    big = shutil.copy(sample_dir / "images" / "ISIC_0000000.jpg", upload / "big.jpg")
    with pytest.raises(DataError, match=r"image refused: big\.jpg: .*192x192 = 36,864 pixels, over the 1,000-pixel limit"):
        small.read_upload(big)
    assert state.read_upload(big).shape == (192, 192, 3)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A real export folder of the shipped UCM-Net: fp32 and fp16 ONNX + manifest (a few seconds)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from lightseg_edge import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_model("ucmnet", pretrained=True).deploy()
        folder = tmp_path_factory.mktemp("ucmnet_export")
        export_onnx(model, folder / "model.onnx")
        make_fp16(folder / "model.onnx", folder / "model.fp16.onnx")
    finally:
        torch.set_num_threads(before)
    write_manifest(folder, "ucmnet", model.cfg.preprocess, {"fp32": {"path": "model.onnx"}, "fp16": {"path": "model.fp16.onnx"}})
    return folder


def test_segment_and_compare_two_precisions(export_dir, sample_dir):
    from lightseg_edge.runtimes import load_predictor

    path = sample_dir / "images" / "ISIC_0000016.jpg"
    options = discover([str(export_dir)], device="cpu")
    label = options[0].label
    state = DemoState(options, PredictorCache(device="cpu"))
    try:
        overlay, proba_rgb, text, details = state.segment(str(path), label, "onnxruntime", "fp32", 0.5)
        image = read_image(path)
        with load_predictor(export_dir, runtime="onnxruntime", precision="fp32", device="cpu") as p:
            want32 = p.predict(image)
        with load_predictor(export_dir, runtime="onnxruntime", precision="fp16", device="cpu") as p:
            want16 = p.predict(image)
        assert details["lesion_pixels"] == int(want32.sum()) and f"{int(want32.sum()):,} px" in text
        assert overlay.shape == image.shape and proba_rgb.shape == image.shape
        assert details["model_load_s"] > 0  # the first use loaded it ...
        assert state.segment(str(path), label, "onnxruntime", "fp32", 0.5)[3]["model_load_s"] == 0  # ... then cached

        a, b, agree, text, details = state.compare(str(path), (label, "onnxruntime", "fp32"), (label, "onnxruntime", "fp16"), 0.5)
        assert details["a"]["lesion_pixels"] == int(want32.sum()) and details["b"]["lesion_pixels"] == int(want16.sum())
        assert details["dice"] == pytest.approx(dice(want32, want16), abs=1e-6) and details["dice"] > 0.98
        assert f"Agreement Dice (A vs B): **{details['dice']:.4f}**" in text
        assert a.shape == b.shape == agree.shape == image.shape
        cached = list(state.cache._items.values())
    finally:
        state.cache.close()
    assert len(cached) == 2 and all(p.closed for p in cached)


def test_upload_widget_hands_over_the_file_undecoded(monkeypatch, tmp_path):
    """The page's image input passes the file on untouched (read_image checks it), and saves inline webcam shots."""
    import base64

    import cv2
    import numpy as np

    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'lightseg-edge[demo]')")
    from gradio.data_classes import ImageData

    from lightseg_edge.demo.app import _upload_widget, import_gradio

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    widget = _upload_widget(import_gradio(), render=False)
    assert widget.get_block_name() == "image"
    assert widget.preprocess(None) is None
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    assert widget.preprocess(ImageData(path=str(junk), orig_name="notes.png")) == str(junk)  # no PIL decode, no error
    ok, buf = cv2.imencode(".png", np.full((5, 7, 3), 9, np.uint8))
    shot = widget.preprocess(ImageData(url="data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()))
    assert Path(shot).parent == tmp_path
    assert read_image(shot).shape == (5, 7, 3)
    assert not list((ROOT / "lightseg_edge" / "demo").glob("*.pyi"))  # Gradio wrote no stub into the package
