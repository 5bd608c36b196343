"""The demo's API through gradio_client against the real server: the same figures as load_predictor, and refusals."""

from __future__ import annotations

import struct
import zlib

import pytest
from demo_helpers import MODELS, require_gradio

from lightseg_edge.demo.analysis import dice


@pytest.fixture(scope="module")
def client(demo_server):
    require_gradio()
    gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed (it comes with gradio)")
    return gradio_client.Client(demo_server.url, verbose=False, download_files=False)


def _file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_segment_matches_load_predictor(client, sample_image, reference_masks):
    overlay, proba, summary, details = client.predict(_file(sample_image), MODELS[0], "pytorch", "fp32", 0.5, api_name="/segment")
    mask = reference_masks[MODELS[0]]
    assert details["lesion_pixels"] == int(mask.sum())
    assert details["image_pixels"] == mask.size
    assert details["lesion_percent"] == pytest.approx(100.0 * mask.sum() / mask.size, abs=1e-4)
    assert f"{int(mask.sum()):,} px" in summary
    lat = details["latency"]
    assert lat["total_ms"] == pytest.approx(lat["preprocess_ms"] + lat["inference_ms"] + lat["postprocess_ms"], abs=0.01)
    assert all(lat[k] > 0 for k in ("preprocess_ms", "inference_ms", "postprocess_ms"))
    assert (details["model"], details["runtime"], details["precision"]) == (MODELS[0], "pytorch", "fp32")
    assert overlay and proba  # the images were produced (not downloaded: download_files=False)


def test_compare_reports_agreement_dice(client, sample_image, reference_masks):
    out = client.predict(_file(sample_image), MODELS[0], "pytorch", "fp32", MODELS[1], "pytorch", "fp32", 0.5, api_name="/compare")
    details = out[4]
    a, b = reference_masks[MODELS[0]], reference_masks[MODELS[1]]
    assert details["a"]["lesion_pixels"] == int(a.sum()) and details["b"]["lesion_pixels"] == int(b.sum())
    assert details["dice"] == pytest.approx(dice(a, b), abs=1e-6)
    assert "Agreement Dice" in out[3]


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_oversized_and_non_image_uploads_are_refused(client, tmp_path):
    from gradio_client.exceptions import AppError

    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(20_000, 20_000))  # announces 400 MP in 57 bytes: refused before decoding
    with pytest.raises(AppError, match=r"image refused: huge\.png: .*400,000,000 pixels, over the 100,000,000-pixel limit"):
        client.predict(_file(huge), MODELS[0], "pytorch", "fp32", 0.5, api_name="/segment")
    text = tmp_path / "report.jpg"
    text.write_text("%PDF-1.4 not an image")
    with pytest.raises(AppError, match=r"image refused: report\.jpg: not a readable image"):
        client.predict(_file(text), MODELS[0], "pytorch", "fp32", 0.5, api_name="/segment")


def test_only_offered_choices_run(client, sample_image):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError):
        client.predict(_file(sample_image), "unet", "pytorch", "fp32", 0.5, api_name="/segment")  # not on the menu
    with pytest.raises(AppError):
        client.predict(_file(sample_image), MODELS[0], "pytorch", "int8", 0.5, api_name="/segment")

