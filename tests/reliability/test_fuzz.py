"""Fuzzing the readers of untrusted files: damaged input is a LightsegError, never a crash.

Images (real JPEG/PNG from the committed sample, and BMP/TIFF/WebP encodings of one) cut short, bit-flipped and with
header fields overwritten go into ``read_image`` / ``read_mask``; JSON-ish manifests into both manifest readers, which
must also agree; damaged .safetensors files into the weight loading. Anything but a ``LightsegError`` (IndexError,
struct.error, cv2.error, MemoryError, a library's own exception) fails the test.

Deterministic for CI: ``derandomize=True`` and no example database, so every run draws the same examples. The
budgets keep the whole file well under 30 s on two cores.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightseg_edge.errors import LightsegError, ManifestError

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Small enough that a mutated header announcing a few thousand pixels a side is refused instead of allocated: the
# property (no crash) does not depend on the limit, the run time does.
FUZZ_MAX_PIXELS = 2_000_000


# ---------------------------------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------------------------------
@st.composite
def mutated(draw, seeds: List[bytes], header_bytes: int = 96) -> bytes:
    """A seed file with 1-4 damages: cut short, bit flips, header fields overwritten, bytes inserted or removed."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(("truncate", "flip", "header", "field", "insert", "delete")))
        n = len(data)
        # Positions from byte 4 on: a damaged signature is one refusal ("not a readable image"), covered once below;
        # the interesting damage is in the sizes, offsets and lengths behind it.
        lo = min(4, n - 1)
        at = st.integers(lo, max(lo, min(n, header_bytes) - 1)) if op in ("header", "field") else st.integers(lo, n - 1)
        if op == "truncate":
            data = data[:draw(st.integers(min(16, n - 1), n - 1))]
        elif op == "flip":
            i = draw(at)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "header":  # random bytes where the sizes, offsets and lengths live
            i = draw(at)
            data[i:i + 4] = draw(st.binary(min_size=1, max_size=4))
        elif op == "field":  # an extreme value in a 2/4/8-byte field of the header
            i = draw(at)
            width = draw(st.sampled_from((2, 4, 8)))
            value = draw(st.sampled_from((0, 1, 2 ** (8 * width - 1) - 1, 2 ** (8 * width) - 1, 30000, 65535)))
            data[i:i + width] = value.to_bytes(width, draw(st.sampled_from(("little", "big"))))
        elif op == "insert":
            i = draw(at)
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            i = draw(at)
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------------------
def _image_seeds() -> List[bytes]:
    import cv2

    sample = Path(__file__).resolve().parents[1] / "assets" / "isic_sample"
    jpeg = min((sample / "images").iterdir()).read_bytes()
    png = min((sample / "masks").iterdir()).read_bytes()
    small = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:24, :32]
    others = [cv2.imencode(ext, small)[1].tobytes() for ext in (".bmp", ".tiff", ".webp", ".png")]
    return [jpeg, png] + others


IMAGE_SEEDS = _image_seeds()


def _read_all(path: Path) -> None:
    from lightseg_edge.data.io import read_image, read_mask

    for reader, ndim in ((read_image, 3), (read_mask, 2)):
        try:
            out = reader(path, max_pixels=FUZZ_MAX_PIXELS)
        except LightsegError as exc:
            assert "\n" not in str(exc), str(exc)
            continue
        assert out.dtype == np.uint8 and out.ndim == ndim and out.shape[0] * out.shape[1] <= FUZZ_MAX_PIXELS
        if ndim == 3:
            assert out.shape[2] == 3
        else:
            assert set(np.unique(out)) <= {0, 1}


@settings(FUZZ, max_examples=250)
@given(data=mutated(IMAGE_SEEDS))
def test_damaged_images_are_refused_or_read(data, work):
    path = work / "image.bin"
    path.write_bytes(data)
    _read_all(path)


@settings(FUZZ, max_examples=40)
@given(data=st.binary(max_size=256), prefix=st.sampled_from(
    (b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"RIFF\x00\x00\x00\x00WEBPVP8X")))
def test_random_bytes_behind_a_signature(data, prefix, work):
    path = work / "random.bin"
    path.write_bytes(prefix + data)
    _read_all(path)


# ---------------------------------------------------------------------------------------------------------------------
# manifests: both readers, same verdict, only ManifestError
# ---------------------------------------------------------------------------------------------------------------------
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
PATHS = st.sampled_from(("model.onnx", "./model.onnx", "sub/model.onnx", "../model.onnx", "/etc/passwd", "", ".", "link", "model\n.onnx",
                         "model.onnx/", "a/../model.onnx", "model\x00.onnx", "x" * 300)) | st.text(max_size=20)
SHAS = st.sampled_from((None, "", "0" * 64, "0" * 63, "G" * 64)) | st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=66)
FIELDS = ("format", "model", "created", "weights", "input", "preprocess", "output", "opset", "artifacts", "parity",
          "calibration", "accuracy", "tensorrt", "tools", "steps")


@pytest.fixture(scope="module")
def manifest_folder(work) -> Path:
    """A folder with a model.onnx (any bytes: the readers do not parse it) and a symlink that leads out of it."""
    folder = work / "export"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx")
    (work / "secret.onnx").write_bytes(b"onnx")
    (folder / "link").symlink_to(work / "secret.onnx")
    return folder


def _valid(sha: str) -> dict:
    return {
        "format": "lightseg-export/1", "model": "ucmnet", "created": "2026-01-01T00:00:00+00:00",
        "weights": {"source": "random", "sha256": None, "seed": 0},
        "input": {"name": "input", "shape": [None, 3, 32, 32], "dtype": "float32", "output_name": "logits"},
        "preprocess": {"size": [32, 32], "mode": "scale", "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "output": "logits", "opset": 17, "artifacts": {"fp32": {"path": "model.onnx", "precision": "fp32", "sha256": sha}},
        "parity": {}, "calibration": None, "accuracy": {}, "tensorrt": None, "tools": {}, "steps": [],
    }


@st.composite
def manifests(draw) -> object:
    import hashlib

    m = _valid(hashlib.sha256(b"onnx").hexdigest())
    if draw(st.integers(0, 9)) == 0:
        return draw(JSONISH)  # anything at all
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("replace", "delete", "artifact", "path", "sha", "weights", "section")))
        key = draw(st.sampled_from(FIELDS))
        if op == "replace":
            m[key] = draw(JSONISH)
        elif op == "delete":
            m.pop(key, None)
        elif op == "artifact" and isinstance(m.get("artifacts"), dict):
            m["artifacts"][draw(st.sampled_from(("fp32", "fp16", "int8", "engine", "onnx")))] = draw(
                st.fixed_dictionaries({"path": PATHS, "sha256": SHAS}, optional={"precision": st.sampled_from(("fp16", "int4", None, 3))}))
        elif op == "path" and isinstance(m.get("artifacts"), dict) and isinstance(m["artifacts"].get("fp32"), dict):
            m["artifacts"]["fp32"]["path"] = draw(PATHS)
        elif op == "sha" and isinstance(m.get("artifacts"), dict) and isinstance(m["artifacts"].get("fp32"), dict):
            m["artifacts"]["fp32"]["sha256"] = draw(SHAS)
        elif op == "weights":
            m["weights"] = draw(st.fixed_dictionaries({"source": PATHS | st.none(), "sha256": SHAS}))
        elif op == "section" and isinstance(m.get(key), dict) and m[key]:
            m[key][draw(st.sampled_from(sorted(m[key])))] = draw(JSONISH)
    return m


def _verdict(read, folder: Path) -> str:
    try:
        read(folder)
    except ManifestError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)
        return "refused"
    return "accepted"


@settings(FUZZ, max_examples=300)
@given(manifest=manifests())
def test_manifest_readers_never_crash_and_always_agree(manifest, manifest_folder):
    from lightseg_edge.manifest import read_manifest, verify_artifacts
    from lightseg_edge.manifest import read_deploy_manifest

    (manifest_folder / "manifest.json").write_text(json.dumps(manifest))
    verdicts = (_verdict(read_manifest, manifest_folder), _verdict(read_deploy_manifest, manifest_folder))
    assert verdicts[0] == verdicts[1], verdicts
    if verdicts[0] == "accepted":
        for problem in verify_artifacts(manifest_folder, read_manifest(manifest_folder)):
            assert "\n" not in problem


@settings(FUZZ, max_examples=60)
@given(data=st.binary(max_size=64) | mutated([json.dumps(_valid("0" * 64)).encode()], header_bytes=400))
def test_manifest_files_that_are_not_json(data, manifest_folder):
    from lightseg_edge.manifest import read_manifest
    from lightseg_edge.manifest import read_deploy_manifest

    (manifest_folder / "manifest.json").write_bytes(data)
    assert _verdict(read_manifest, manifest_folder) == _verdict(read_deploy_manifest, manifest_folder)


# ---------------------------------------------------------------------------------------------------------------------
# safetensors weights
# ---------------------------------------------------------------------------------------------------------------------
def _safetensors_seeds() -> List[bytes]:
    from lightseg_edge.models._weights import WEIGHTS_DIR

    seeds = []
    shipped = WEIGHTS_DIR / "ucmnet.safetensors"
    if shipped.is_file():
        seeds.append(shipped.read_bytes())
    try:
        from safetensors.numpy import save
    except ImportError:
        return seeds
    seeds.append(save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16)}, metadata={"model": "ucmnet"}))
    return seeds


_SAME_SIZE = {"F32": ("I32", "U32"), "F16": ("BF16", "I16", "U16"), "I64": ("F64", "U64")}


def _tensor_edit(draw, entry: dict) -> None:
    """One edit of a tensor entry: plausible ones (same byte size: the file stays consistent, the model may not fit)
    and wild ones (sizes and offsets that lie, unknown dtypes, JSON of the wrong type)."""
    field = draw(st.sampled_from(("retype", "reshape", "dtype", "shape", "data_offsets", "all")))
    if field == "retype":
        dtype = entry.get("dtype")
        entry["dtype"] = draw(st.sampled_from(_SAME_SIZE.get(dtype if isinstance(dtype, str) else "", ("U8",))))
    elif field == "reshape":  # the same element count in another shape
        shape = entry.get("shape")
        count = int(np.prod(shape)) if isinstance(shape, list) and all(type(d) is int for d in shape) else 1
        entry["shape"] = draw(st.sampled_from(([count], [1, count], [count, 1], [])))
    elif field == "all":
        entry.clear()
        entry.update(draw(st.dictionaries(st.text(max_size=6), JSONISH, max_size=3)))
    else:
        wild = {
            "dtype": st.sampled_from(("F32", "F16", "BF16", "I64", "BOOL", "F8_E4M3", "C64", "U8", "F64", "Q4", "")),
            "shape": st.lists(st.integers(-2, 2 ** 40), max_size=5),
            "data_offsets": st.lists(st.integers(-1, 2 ** 64 + 1), max_size=3),
        }
        entry[field] = draw(wild[field] | JSONISH)


@st.composite
def damaged_safetensors(draw, seeds: List[bytes]) -> bytes:
    """Bytes-level damage, or a header whose JSON is edited (tensor entries, names, metadata) and re-framed."""
    if draw(st.integers(0, 3)) == 0:
        return draw(mutated(seeds, header_bytes=512))
    seed = draw(st.sampled_from(seeds))
    n = struct.unpack("<Q", seed[:8])[0]
    header, body = json.loads(seed[8:8 + n]), seed[8 + n:]
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(sorted(header)))
        op = draw(st.sampled_from(("edit", "rename", "metadata", "body")))
        if op == "metadata" or name == "__metadata__":
            header["__metadata__"] = draw(st.fixed_dictionaries({}, optional={"model": st.sampled_from(("ucmnet", "unet", "nope", "")) | st.text(max_size=8)})
                                          | JSONISH)
        elif op == "rename":
            header[draw(st.text(max_size=12))] = header.pop(name)
        elif op == "body":
            body = body[:draw(st.integers(0, len(body)))]
        elif isinstance(header[name], dict):
            _tensor_edit(draw, header[name])
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


SAFETENSORS_SEEDS = _safetensors_seeds()


@pytest.fixture(scope="module")
def ucmnet(work):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from lightseg_edge.models import create_model

    return create_model("ucmnet")


@pytest.mark.skipif(not SAFETENSORS_SEEDS, reason="safetensors is not installed and no weights are shipped")
@settings(FUZZ, max_examples=120)
@given(data=damaged_safetensors(SAFETENSORS_SEEDS))
def test_damaged_safetensors_are_refused_or_loaded(data, ucmnet, work):
    from lightseg_edge.models._weights import load_weights, read_state_dict

    path = work / "weights.safetensors"
    path.write_bytes(data)
    try:
        state = read_state_dict(path)
        assert isinstance(state, dict)
    except LightsegError as exc:
        assert "\n" not in str(exc), str(exc)
    try:
        load_weights(ucmnet, path)
    except LightsegError as exc:
        assert "\n" not in str(exc), str(exc)


@pytest.mark.skipif(not SAFETENSORS_SEEDS, reason="safetensors is not installed and no weights are shipped")
@settings(FUZZ, max_examples=25)
@given(data=damaged_safetensors(SAFETENSORS_SEEDS[:1]))
def test_damaged_safetensors_through_load_predictor(data, ucmnet, work):
    """The metadata read (which model?) and the model build behind ``load_predictor(file.safetensors)``."""
    from lightseg_edge.runtimes import load_predictor

    path = work / "predict.safetensors"
    path.write_bytes(data)
    try:
        load_predictor(path, device="cpu").close()
    except LightsegError as exc:
        assert "\n" not in str(exc), str(exc)
