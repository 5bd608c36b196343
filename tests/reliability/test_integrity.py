"""Integrity of what is loaded: every file a manifest names lies inside its folder and matches its sha256.

One table of tampered export folders goes through ``load_predictor`` (the folder and the .onnx file beside the
manifest), ``lightseg-predict`` and ``lightseg-bench --export-dir``: each is refused with one line naming the file.
Both manifest readers see the same good and bad manifests and must agree. Then the image reader: a header that
announces too many pixels is refused before anything is decoded.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
from reliability_helpers import assert_one_line_error, run_main, snapshot, tiny_onnx

from lightseg_edge.errors import DataError, InvalidInputError, ManifestError

HW = (32, 32)
MODEL = "ucmnet"  # a registry name, so lightseg-bench plans the PyTorch row too
ZEROS = "0" * 64


# ---------------------------------------------------------------------------------------------------------------------
# a tiny export folder: a one-node ONNX (1x1 conv) and a manifest written by the real writer
# ---------------------------------------------------------------------------------------------------------------------
def _manifest(folder: Path, weights: Dict) -> Dict:
    from lightseg_edge._hashing import sha256_file

    return {
        "format": "lightseg-export/1", "model": MODEL, "created": "2026-01-01T00:00:00+00:00", "weights": weights,
        "input": {"name": "input", "shape": [None, 3, *HW], "dtype": "float32", "output_name": "logits"},
        "preprocess": {"size": list(HW), "mode": "scale", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "output": "logits", "opset": 17,
        "artifacts": {"fp32": {"path": "model.onnx", "precision": "fp32", "sha256": sha256_file(folder / "model.onnx")}},
        "parity": {}, "calibration": None, "accuracy": {}, "tensorrt": None, "tools": {}, "steps": [],
    }


def _shipped_weights() -> Path:
    from lightseg_edge.models._weights import has_pretrained, pretrained_path

    if not has_pretrained(MODEL):
        pytest.skip(f"{MODEL} ships no weights in this checkout")
    return pretrained_path(MODEL)


def _weights_into(dst: Path) -> None:
    """The shipped weights, or (in a checkout without them) a state dict of the same model saved as safetensors."""
    from lightseg_edge.models._weights import has_pretrained, pretrained_path

    if has_pretrained(MODEL):
        shutil.copy(pretrained_path(MODEL), dst)
        return
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from lightseg_edge.models import create_model

    save_file(create_model(MODEL).state_dict(), str(dst), metadata={"model": MODEL})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A valid folder: model.onnx, the shipped weights as weights.safetensors, manifest.json (written by the writer)."""
    from lightseg_edge._hashing import sha256_file
    from lightseg_edge.manifest import write_manifest

    folder = tmp_path_factory.mktemp("tiny") / "export"
    folder.mkdir()
    tiny_onnx(folder / "model.onnx")
    _weights_into(folder / "weights.safetensors")
    write_manifest(folder, _manifest(folder, {"source": "weights.safetensors", "sha256": sha256_file(folder / "weights.safetensors")}))
    return folder


@pytest.fixture()
def export(template, tmp_path) -> Path:
    """A fresh copy to tamper with; ``outside/`` beside it holds copies of its files (same bytes, same sha256)."""
    dst = tmp_path / "export"
    shutil.copytree(template, dst)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("model.onnx", "weights.safetensors"):
        shutil.copy(template / name, outside / name)
    return dst


def _edit(folder: Path, change: Callable[[Dict], None]) -> None:
    path = folder / "manifest.json"
    man = json.loads(path.read_text())
    change(man)
    path.write_text(json.dumps(man))  # by hand: the writer itself refuses these manifests


def _image(tmp_path: Path) -> Path:
    import cv2

    path = tmp_path / "lesion.png"
    cv2.imwrite(str(path), np.full((40, 48, 3), 120, np.uint8))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# the table: how a folder is tampered with, which runtime meets it, and what the one error line must name
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    tamper: Callable[[Path], None]
    names: Tuple[str, ...]  # fragments the error line must contain
    runtime: str = "onnxruntime"


def _art(**entry) -> Callable[[Path], None]:
    return lambda f: _edit(f, lambda m: m["artifacts"]["fp32"].update(entry))


def _weights(**entry) -> Callable[[Path], None]:
    return lambda f: _edit(f, lambda m: m["weights"].update(entry))


def _symlink(name: str, target_of: Callable[[Path], Path]) -> Callable[[Path], None]:
    def tamper(f: Path) -> None:
        (f / name).unlink()
        os.symlink(target_of(f), f / name)
    return tamper


def _delete(name: str) -> Callable[[Path], None]:
    return lambda f: (f / name).unlink()


def _append(name: str) -> Callable[[Path], None]:
    return lambda f: (f / name).write_bytes((f / name).read_bytes() + b"\0")


CASES = [
    Case("artifact ../", _art(path="../outside/model.onnx"), ("manifest.json", "../outside/model.onnx", "relative to the export folder")),
    Case("artifact absolute", lambda f: _art(path=str(f.parent / "outside" / "model.onnx"))(f), ("manifest.json", "outside/model.onnx")),
    Case("artifact symlink out", _symlink("model.onnx", lambda f: f.parent / "outside" / "model.onnx"), ("manifest.json", "outside the export folder")),
    Case("artifact wrong sha256", _art(sha256=ZEROS), ("model.onnx", "does not match the manifest")),
    Case("artifact changed", _append("model.onnx"), ("model.onnx", "does not match the manifest")),
    Case("artifact null sha256", _art(sha256=None), ("manifest.json", "model.onnx", "sha256")),
    Case("artifact malformed sha256", _art(sha256="abc123"), ("manifest.json", "'abc123'")),
    Case("artifact missing", _delete("model.onnx"), ("model.onnx", "missing")),
    Case("weights absolute outside", lambda f: _weights(source=str(f.parent / "outside" / "weights.safetensors"))(f),
         ("manifest.json", "outside/weights.safetensors", "outside the export folder"), runtime="pytorch"),
    Case("weights ../", _weights(source="../outside/weights.safetensors"), ("manifest.json", "../outside/weights.safetensors"), runtime="pytorch"),
    Case("weights symlink out", _symlink("weights.safetensors", lambda f: f.parent / "outside" / "weights.safetensors"),
         ("manifest.json", "weights.safetensors", "outside the export folder"), runtime="pytorch"),
    Case("weights wrong sha256", _weights(sha256=ZEROS), ("weights.safetensors", "does not match the manifest"), runtime="pytorch"),
    Case("weights null sha256", _weights(sha256=None), ("manifest.json", "weights.safetensors", "sha256"), runtime="pytorch"),
    Case("weights missing", _delete("weights.safetensors"), ("weights.safetensors", "not in the export folder"), runtime="pytorch"),
]
IDS = [c.id for c in CASES]


def test_the_untampered_folder_loads_on_both_runtimes(export, tmp_path):
    """The control: what the table tampers with works as shipped (and an in-folder symlink is fine)."""
    from lightseg_edge.runtimes import load_predictor

    image = np.full((40, 48, 3), 120, np.uint8)
    with load_predictor(export, device="cpu") as p:
        assert p.predict(image).shape == (40, 48)
    (export / "real.onnx").write_bytes((export / "model.onnx").read_bytes())
    _symlink("model.onnx", lambda f: f / "real.onnx")(export)
    with load_predictor(export / "model.onnx", device="cpu") as p:
        assert p.predict(image).shape == (40, 48)
    with load_predictor(export, runtime="pytorch", device="cpu") as p:
        assert p.runtime.value == "pytorch"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_load_predictor_refuses(case, export):
    from lightseg_edge.runtimes import load_predictor

    case.tamper(export)
    sources = [export] + ([export / "model.onnx"] if case.runtime == "onnxruntime" and (export / "model.onnx").exists() else [])
    for source in sources:
        with pytest.raises(ManifestError) as info:
            load_predictor(source, runtime=case.runtime, device="cpu")
        line = str(info.value)
        assert "\n" not in line and all(n in line for n in case.names), line


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lightseg_predict_refuses(case, export, tmp_path, capsys):
    from lightseg_edge.cli.predict import main

    case.tamper(export)
    out = tmp_path / "masks"
    outcome = run_main(main, [export, _image(tmp_path), "--runtime", case.runtime, "--device", "cpu", "--out", out, "--no-progress"], capsys)
    assert_one_line_error(outcome, *case.names)
    assert snapshot(out) == {}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lightseg_bench_export_dir_refuses(case, export, tmp_path, capsys):
    from lightseg_edge.cli.bench import main

    case.tamper(export)
    before = snapshot(export)
    report = tmp_path / "bench.json"
    outcome = run_main(main, ["--export-dir", export, "--runtime", case.runtime, "--iters", 1, "--warmup", 0, "--json", report], capsys)
    assert_one_line_error(outcome, *case.names)
    assert not report.exists() and snapshot(export) == before


def test_a_pipeline_folder_whose_weights_lie_elsewhere_still_benches_onnx(export, tmp_path):
    """lightseg-export records the weights path it was given; bench then leaves PyTorch out instead of failing."""
    from lightseg_edge.bench.matrix import BenchOptions, make_plan

    _weights(source=str(tmp_path / "outside" / "weights.safetensors"))(export)
    plan = make_plan("export-dir", str(export), BenchOptions())
    assert [(j.runtime, j.precision) for j in plan.jobs] == [("onnxruntime", "fp32")]


# ---------------------------------------------------------------------------------------------------------------------
# the two readers agree
# ---------------------------------------------------------------------------------------------------------------------
def _variants(folder: Path) -> List[Tuple[str, Dict]]:
    base = json.loads((folder / "manifest.json").read_text())

    def v(change: Callable[[Dict], None]) -> Dict:
        m = json.loads(json.dumps(base))
        change(m)
        return m

    fp32 = base["artifacts"]["fp32"]
    return [
        ("good", base),
        ("good: null preprocess", v(lambda m: m.update(preprocess=None))),
        ("good: engine listed", v(lambda m: m["artifacts"].update(engine=dict(fp32, precision="fp16")))),
        ("good: random weights", v(lambda m: m.update(weights={"source": "random", "sha256": None, "seed": 0}))),
        ("good: weights elsewhere", v(lambda m: m["weights"].update(source="/train/runs/best.pt"))),  # provenance only
        ("good: uppercase sha256", v(lambda m: m["artifacts"]["fp32"].update(sha256=fp32["sha256"].upper()))),
        ("../ path", v(lambda m: m["artifacts"]["fp32"].update(path="../model.onnx"))),
        ("absolute path", v(lambda m: m["artifacts"]["fp32"].update(path="/etc/passwd"))),
        ("folder itself", v(lambda m: m["artifacts"]["fp32"].update(path="."))),
        ("empty path", v(lambda m: m["artifacts"]["fp32"].update(path=""))),
        ("NUL in path", v(lambda m: m["artifacts"]["fp32"].update(path="model\0.onnx"))),
        ("path not a string", v(lambda m: m["artifacts"]["fp32"].update(path=["model.onnx"]))),
        ("null sha256", v(lambda m: m["artifacts"]["fp32"].update(sha256=None))),
        ("no sha256", v(lambda m: m["artifacts"]["fp32"].pop("sha256"))),
        ("short sha256", v(lambda m: m["artifacts"]["fp32"].update(sha256=fp32["sha256"][:63]))),
        ("sha256 not hex", v(lambda m: m["artifacts"]["fp32"].update(sha256="g" * 64))),
        ("weights sha256 malformed", v(lambda m: m["weights"].update(sha256="nope"))),
        ("weights not an object", v(lambda m: m.update(weights="best.pt"))),
        ("bad precision", v(lambda m: m["artifacts"]["fp32"].update(precision="int4"))),
        ("only fp16", v(lambda m: m.update(artifacts={"fp16": fp32}))),
        ("no artifacts", v(lambda m: m.update(artifacts={}))),
        ("unknown artifact kind", v(lambda m: m["artifacts"].update(tflite=fp32))),
        ("artifact not an object", v(lambda m: m["artifacts"].update(fp32="model.onnx"))),
        ("missing key", v(lambda m: m.pop("parity"))),
        ("newer format", v(lambda m: m.update(format="lightseg-export/2"))),
        ("other format", v(lambda m: m.update(format="onnx"))),
        ("3-D input", v(lambda m: m["input"].update(shape=[3, 32, 32]))),
        ("input size 0", v(lambda m: m["input"].update(shape=[None, 3, 0, 32]))),
        ("input size true", v(lambda m: m["input"].update(shape=[None, 3, True, 32]))),
        ("bad mode", v(lambda m: m["preprocess"].update(mode="bogus"))),
        ("std 0", v(lambda m: m["preprocess"].update(std=[0, 1, 1]))),
        ("size of 3", v(lambda m: m["preprocess"].update(size=[32, 32, 3]))),
        ("model not a string", v(lambda m: m.update(model=7))),
        ("not an object", [base]),
    ]


def _outcome(read: Callable[[Path], object], folder: Path) -> str:
    try:
        read(folder)
    except ManifestError:
        return "refused"
    return "accepted"


def test_both_manifest_readers_accept_and_refuse_the_same_manifests(export, tmp_path):
    from lightseg_edge.manifest import read_manifest
    from lightseg_edge.manifest import read_deploy_manifest

    (export / "elsewhere").symlink_to(tmp_path / "outside" / "model.onnx")
    variants = _variants(export) + [("symlink out", json.loads((export / "manifest.json").read_text()))]
    variants[-1][1]["artifacts"]["fp32"]["path"] = "elsewhere"
    seen = {}
    for name, manifest in variants:
        (export / "manifest.json").write_text(json.dumps(manifest))
        export_reader, deploy_reader = _outcome(read_manifest, export), _outcome(read_deploy_manifest, export)
        assert export_reader == deploy_reader, f"{name}: read_manifest {export_reader}, read_deploy_manifest {deploy_reader}"
        seen[name] = export_reader
    assert [n for n, o in seen.items() if o == "accepted"] == [n for n, _ in variants if n.startswith("good")]


# ---------------------------------------------------------------------------------------------------------------------
# images: the header is checked before anything is decoded
# ---------------------------------------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR announces width x height, with a tiny (incomplete) IDAT and a proper IEND."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def _jpeg_with_size(sample: bytes, width: int, height: int) -> bytes:
    """A real JPEG (from the committed sample) whose frame header (SOF0/SOF2) is rewritten to width x height."""
    data = bytearray(sample)
    i = 2
    while True:
        assert data[i] == 0xFF
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + length


def _encoded(ext: str, hw=(24, 20)) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, np.full((*hw, 3), 99, np.uint8))
    assert ok, ext
    return buf.tobytes()


def _bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encoded(".bmp"))
    struct.pack_into("<ii", data, 18, width, -height)  # top-down rows, as some writers do
    return bytes(data)


def _tiff_with_size(width: int, height: int) -> bytes:
    data = bytearray(_encoded(".tiff"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * k
        tag = struct.unpack_from("<H", data, at)[0]
        if tag in (256, 257):
            struct.pack_into("<HI", data, at + 2, 4, 1)  # LONG, count 1
            struct.pack_into("<I", data, at + 8, width if tag == 256 else height)
    return bytes(data)


def _bigtiff_with_size(width: int, height: int) -> bytes:
    """A big-endian BigTIFF header with one directory: ImageWidth and ImageLength as LONG8."""
    entries = b"".join(struct.pack(">HHQQ", tag, 16, 1, value) for tag, value in ((256, width), (257, height)))
    return b"MM\x00+" + struct.pack(">HHQ", 8, 0, 16) + struct.pack(">Q", 2) + entries + struct.pack(">Q", 0)


def _webp_with_size(width: int, height: int) -> bytes:
    """A WebP with an extended (VP8X) header announcing a width x height canvas."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + _encoded(".webp")[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _sample_jpeg(sample_dir: Path) -> bytes:
    return min((sample_dir / "images").iterdir()).read_bytes()


HUGE = [  # (id, bytes maker, format word in the message)
    ("png", lambda s: _png_header_only(30000, 30000), "PNG"),
    ("jpeg", lambda s: _jpeg_with_size(_sample_jpeg(s), 30000, 30000), "JPEG"),
    ("bmp", lambda s: _bmp_with_size(30000, 30000), "BMP"),
    ("tiff", lambda s: _tiff_with_size(30000, 30000), "TIFF"),
    ("bigtiff", lambda s: _bigtiff_with_size(30000, 30000), "TIFF"),
    ("webp", lambda s: _webp_with_size(30000, 30000), "WebP"),
]


@pytest.fixture()
def no_decode(monkeypatch):
    """cv2.imdecode fails the test if called: the refusal must come from the header alone."""
    import cv2

    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called: the header check ran after decoding")

    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.parametrize("make, fmt", [(m, f) for _, m, f in HUGE], ids=[i for i, _, _ in HUGE])
@pytest.mark.parametrize("reader", ["read_image", "read_mask"])
def test_a_huge_announced_size_is_refused_before_decoding(make, fmt, reader, sample_dir, tmp_path, no_decode):
    from lightseg_edge.data import io

    path = tmp_path / "huge.img"
    path.write_bytes(make(sample_dir))
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        getattr(io, reader)(path)
    assert time.perf_counter() - start < 1.0
    line = str(info.value)
    assert "\n" not in line and str(path) in line and f"{fmt} header announces 30000x30000" in line, line
    assert f"{io.MAX_IMAGE_PIXELS:,}-pixel limit" in line and io.MAX_PIXELS_ENV in line


def test_the_crafted_headers_are_read_as_the_decoder_reads_them(sample_dir):
    """Same makers, small sizes: the parsed size is what OpenCV decodes (so the check guards the real allocation)."""
    import cv2

    from lightseg_edge.data.io import read_header

    for data in (_jpeg_with_size(_sample_jpeg(sample_dir), 192, 192), _bmp_with_size(20, 24), _tiff_with_size(20, 24),
                 _encoded(".webp"), _encoded(".png"), _encoded(".webp", (300, 17))):
        header = read_header("x", data)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert (header.height, header.width) == decoded.shape[:2], header


def test_the_limit_can_be_raised_or_lowered(sample_dir, tmp_path, monkeypatch):
    from lightseg_edge.data import io

    real = min((sample_dir / "images").iterdir())  # 192x192
    assert io.read_image(real).shape == (192, 192, 3)
    with pytest.raises(DataError, match=r"192x192 = 36,864 pixels, over the 36,863-pixel limit"):
        io.read_image(real, max_pixels=192 * 192 - 1)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "36_863")
    with pytest.raises(DataError, match="36,863-pixel limit"):
        io.read_mask(real)
    assert io.read_image(real, max_pixels=192 * 192).shape == (192, 192, 3)  # the keyword wins over the variable
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "lots")
    with pytest.raises(InvalidInputError, match=rf"{io.MAX_PIXELS_ENV}='lots': expected a positive whole number"):
        io.read_image(real)
    monkeypatch.delenv(io.MAX_PIXELS_ENV)
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="100-pixel limit"):
        io.read_image(real)


@pytest.mark.parametrize("data, message", [
    (b"P6\n4 4\n255\n" + bytes(48), r"not a readable image: expected a JPEG, PNG, BMP, TIFF or WebP file"),
    (b"GIF89a" + bytes(32), r"not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + bytes(8) + b"IDAT", r"damaged PNG header \(the first chunk is not IHDR\)"),
    (b"\xff\xd8\xff\xda" + bytes(16) + b"\xff\xd9", r"damaged JPEG header \(the image data starts before any frame header"),
    (b"II*\x00" + struct.pack("<I", 4000), r"damaged TIFF header"),
    (_png_header_only(0, 10), r"announces an empty 0x10 image"),
])
def test_other_formats_and_damaged_headers_are_refused_before_decoding(data, message, tmp_path, no_decode):
    from lightseg_edge.data.io import read_image

    path = tmp_path / "odd.png"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_lightseg_predict_names_the_oversized_file(export, tmp_path, sample_dir, capsys):
    from lightseg_edge.cli.predict import main

    huge = tmp_path / "huge.jpg"
    huge.write_bytes(_jpeg_with_size(_sample_jpeg(sample_dir), 30000, 30000))
    outcome = run_main(main, [export, huge, "--device", "cpu", "--out", tmp_path / "out", "--no-progress"], capsys)
    assert outcome.code != 0 and "huge.jpg" in outcome.err and "30000x30000" in outcome.err and "image 0" not in outcome.err


# ---------------------------------------------------------------------------------------------------------------------
# predictor errors name the file they came from
# ---------------------------------------------------------------------------------------------------------------------
def test_batch_errors_name_the_file_when_given_names_else_the_index(export):
    from lightseg_edge.runtimes import load_predictor

    good, grey = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    with load_predictor(export, device="cpu") as p:
        with pytest.raises(InvalidInputError, match=r"^image 1: expected HxWx3 uint8 RGB, got a single-channel"):
            p.predict_batch([good, grey])
        with pytest.raises(InvalidInputError, match=r"^scans/b\.png: expected HxWx3"):
            p.predict_batch([good, grey], names=["scans/a.png", "scans/b.png"])
        with pytest.raises(InvalidInputError, match=r"^scans/b\.png: expected HxWx3"):
            p.predict_proba(grey, name="scans/b.png")
        with pytest.raises(InvalidInputError, match=r"names= must give one name per image \(2\), got 1 names"):
            p.predict_batch([good, good], names=["a.png"])
        assert p.predict(good, name="a.png").shape == (8, 8)


@pytest.mark.parametrize("sha, loads", [("shipped", True), (ZEROS, False), (None, False)], ids=["same bytes", "other bytes", "no sha256"])
def test_an_export_of_the_shipped_weights_runs_on_pytorch_only_if_they_are_the_same(sha, loads, export):
    from lightseg_edge._hashing import sha256_file
    from lightseg_edge.runtimes import load_predictor

    shipped = _shipped_weights()
    _edit(export, lambda m: m.update(weights={"source": "pretrained", "sha256": sha256_file(shipped) if sha == "shipped" else sha}))
    if loads:
        with load_predictor(export, runtime="pytorch", device="cpu") as p:
            assert p.runtime.value == "pytorch"
        return
    with pytest.raises(ManifestError, match=r"manifest\.json: .*(other shipped weights|sha256)"):
        load_predictor(export, runtime="pytorch", device="cpu")
