"""lightseg-predict, -eval, -train and -doctor under bad input: every bad argument, unwritable output, unreadable weights
or model file ends in exit 2 and one error line naming the culprit, with nothing already written lost and no
temporary file left; a folder of images skips the unreadable ones, lists them and writes the rest.

Real inputs throughout: the committed ISIC sample, the shipped ucmnet weights, training runs of one tiny epoch.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pytest
from reliability_helpers import TRAIN_TINY, assert_one_line_error, run_main, snapshot

import lightseg_edge._atomic as atomic
from lightseg_edge import create_model, load_predictor
from lightseg_edge._optional import is_available
from lightseg_edge.cli import doctor
from lightseg_edge.cli import eval as eval_cli
from lightseg_edge.cli import predict
from lightseg_edge.cli import train as train_cli
from lightseg_edge.cli._common import run_cli
from lightseg_edge.data.overlay import draw_contours
from lightseg_edge.errors import InvalidInputError, LightsegError, UnknownModelError
from lightseg_edge.models._weights import WEIGHTS_DIR


@dataclass(frozen=True)
class Ctx:
    """Paths an argv template may name as {field}."""

    tmp: Path
    data: Path  # the ISIC sample (images/, masks/, split.csv)
    image: Path  # one real image
    afile: Path  # an existing regular file
    out: Path  # an output folder that does not exist yet
    egeunet: Path  # shipped weights of another model

    def fill(self, items: Sequence[str]) -> List[str]:
        return [s.format(**{k: str(v) for k, v in vars(self).items()}) for s in items]


@pytest.fixture
def ctx(tmp_path, sample_dir) -> Ctx:
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    return Ctx(tmp_path, sample_dir, min((sample_dir / "images").iterdir()), afile, tmp_path / "out",
               WEIGHTS_DIR / "egeunet.safetensors")


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"temporary files left: {left}"


# ------------------------------------------------------------------------------------------------ 1. arguments
PREDICT = ["ucmnet", "{image}", "--out", "{out}", "--device", "cpu", "--no-progress"]
EVAL = ["--model", "ucmnet", "--data", "{data}", "--max-images", "1"]
TRAIN = ["--model", "egeunet", "--data", "{data}", "--out", "{out}"] + TRAIN_TINY

ARG_CASES = [
    # (cli, argv template, names the single error line must contain)
    (predict, PREDICT + ["--threshold", "2"], ["--threshold", "probability"]),
    (predict, PREDICT + ["--threshold", "nan"], ["--threshold", "probability"]),
    (predict, PREDICT + ["--batch-size", "0"], ["--batch-size", "positive integer"]),
    (predict, PREDICT + ["--max-frames", "-3"], ["--max-frames", "positive integer"]),
    (predict, PREDICT + ["--runtime", "cuda"], ["--runtime"]),
    (predict, PREDICT + ["--precision", "fp8"], ["--precision"]),
    (predict, PREDICT + ["--device", "gpu"], ["gpu", "cuda"]),
    (predict, ["nosuchmodel", "{image}", "--out", "{out}"], ["nosuchmodel", "ucmnet"]),
    (predict, ["ucmnet", "{tmp}/missing.jpg", "--out", "{out}"], ["missing.jpg"]),
    (predict, ["ucmnet", "{afile}", "--out", "{out}"], ["notes.txt", ".jpg"]),
    (predict, ["{tmp}/nope.onnx", "{image}", "--out", "{out}"], ["nope.onnx"]),
    (eval_cli, ["--model", "ucmnte", "--data", "{data}"], ["--model", "ucmnte", "Did you mean 'ucmnet'"]),
    (eval_cli, ["--model", "ucmnet", "--data", "{tmp}/nodata"], ["--data", "nodata", "existing folder"]),
    (eval_cli, ["--model", "ucmnet", "--data", "{afile}"], ["--data", "notes.txt", "existing folder"]),
    (eval_cli, EVAL + ["--weights", "{tmp}/none.pt"], ["--weights", "none.pt", "existing file"]),
    (eval_cli, EVAL + ["--img-size", "100"], ["--img-size", "100", "stride 64", "128"]),
    (eval_cli, EVAL + ["--img-size", "0"], ["--img-size", "positive integer"]),
    (eval_cli, EVAL + ["--split", "validation"], ["--split", "validation"]),
    (eval_cli, EVAL + ["--threshold", "-0.1"], ["--threshold", "probability"]),
    (eval_cli, EVAL + ["--batch-size", "0"], ["--batch-size", "positive integer"]),
    (eval_cli, EVAL + ["--max-images", "x"], ["--max-images", "positive integer"]),
    (eval_cli, EVAL + ["--threads", "0"], ["--threads", "positive integer"]),
    (eval_cli, EVAL + ["--overlays", "worst:0"], ["--overlays"]),
    (eval_cli, EVAL + ["--overlays", "worst"], ["--overlays", "--out"]),
    (train_cli, ["--model", "nosuch", "--data", "{data}", "--out", "{out}"], ["--model", "nosuch", "ucmnet"]),
    (train_cli, ["--model", "egeunet", "--data", "{tmp}/nodata", "--out", "{out}"], ["--data", "nodata"]),
    (train_cli, ["--model", "egeunet", "--data", "{tmp}", "--out", "{out}"], ["unknown dataset layout", "images/ + masks/"]),
    (train_cli, TRAIN + ["--img-size", "100"], ["--img-size", "100", "stride 32", "96 or 128"]),
    (train_cli, TRAIN + ["--progressive", "40:1"], ["--progressive", "40", "stride 32"]),
    (train_cli, TRAIN + ["--progressive", "64"], ["--progressive", "SIZE:EPOCHS"]),
    (train_cli, TRAIN + ["--epochs", "0"], ["--epochs", "positive integer"]),
    (train_cli, TRAIN + ["--lr", "-0.001"], ["--lr", "positive number"]),
    (train_cli, TRAIN + ["--patience", "-1"], ["--patience", "integer >= 0"]),
    (train_cli, TRAIN + ["--max-minutes", "-1"], ["--max-minutes", "number >= 0"]),
    (train_cli, TRAIN + ["--checkpoint-minutes", "0"], ["--checkpoint-minutes", "positive number"]),
    (train_cli, TRAIN + ["--precision", "int8"], ["--precision"]),
    (train_cli, TRAIN + ["--augment", "heavy"], ["--augment"]),
    (train_cli, TRAIN + ["--device", "gpu"], ["gpu"]),
    (doctor, ["--bogus"], ["--bogus"]),
]


def _case_id(cli, argv: Sequence[str]) -> str:
    return f"{cli.__name__.rsplit('.', 1)[-1]}:{' '.join(argv[-2:])}"


@pytest.mark.parametrize("cli,argv,names", ARG_CASES, ids=[_case_id(c, a) for c, a, _ in ARG_CASES])
def test_bad_argument_exits_2_naming_it_and_writes_nothing(ctx, capsys, cli, argv, names):
    before = snapshot(ctx.tmp)
    outcome = run_main(cli.main, ctx.fill(argv), capsys)
    assert_one_line_error(outcome, *names)
    assert snapshot(ctx.tmp) == before and not ctx.out.exists()


# ------------------------------------------------------------------------------------------------ 2. output paths
OUT_CLIS = [
    (predict, ["ucmnet", "{image}", "--device", "cpu", "--out"]),
    (eval_cli, EVAL + ["--out"]),
    (train_cli, ["--model", "egeunet", "--data", "{data}"] + TRAIN_TINY + ["--out"]),
]


@pytest.mark.parametrize("cli,argv", OUT_CLIS, ids=["predict", "eval", "train"])
@pytest.mark.parametrize("out,culprit", [("{afile}", "notes.txt"), ("{afile}/sub", "notes.txt")], ids=["out-is-a-file", "parent-is-a-file"])
def test_out_blocked_by_a_file(ctx, capsys, cli, argv, out, culprit):
    before = snapshot(ctx.tmp)
    outcome = run_main(cli.main, ctx.fill(argv + [out]), capsys)
    assert_one_line_error(outcome, "--out", culprit, "file")
    assert snapshot(ctx.tmp) == before


class _FullFile:
    """A file on a disk that fills up: half of the first write lands, then ENOSPC."""

    def __init__(self, f) -> None:
        self._f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def write(self, data) -> int:
        self._f.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)


class _FailingOS:
    """``os`` as lightseg_edge._atomic sees it once ``ok_writes`` files were written: every later write fails with
    ``code`` (ENOSPC while writing, after the temporary exists; EROFS when creating it)."""

    def __init__(self, code: int, ok_writes: int) -> None:
        self.code, self.left = code, ok_writes

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, mode=0o777):
        self.left -= 1
        if self.left < 0 and self.code != errno.ENOSPC:
            raise OSError(self.code, os.strerror(self.code), path)
        return os.open(path, flags, mode)

    def fdopen(self, fd, *args):
        f = os.fdopen(fd, *args)
        return _FullFile(f) if self.left < 0 and self.code == errno.ENOSPC else f


def _images_folder(ctx: Ctx, n: int) -> Path:
    folder = ctx.tmp / "in"
    folder.mkdir()
    for src in sorted((ctx.data / "images").iterdir())[:n]:
        (folder / src.name).write_bytes(src.read_bytes())
    return folder


def _predict_setup(ctx: Ctx) -> Tuple[List[str], List[str]]:
    """Three images; the first mask gets written, the disk fails on the second, whose earlier mask must survive."""
    folder = _images_folder(ctx, 3)
    second = sorted(folder.iterdir())[1].stem + "_mask.png"
    ctx.out.mkdir()
    (ctx.out / second).write_bytes(b"an earlier prediction")
    return ["ucmnet", str(folder), "--out", str(ctx.out), "--device", "cpu", "--batch-size", "2", "--no-progress"], [second]


def _eval_setup(ctx: Ctx) -> Tuple[List[str], List[str]]:
    ctx.out.mkdir()
    (ctx.out / "metrics.json").write_text('{"an": "earlier evaluation"}')
    return ctx.fill(EVAL + ["--out", "{out}"]), ["metrics.json"]


def _train_setup(ctx: Ctx) -> Tuple[List[str], List[str]]:
    """A finished epoch; resuming for a second one fails at its first checkpoint, which must not cost the first."""
    argv = ctx.fill(TRAIN)
    assert train_cli.main(argv) == 0
    return argv + ["--epochs", "2", "--resume"], [str(ctx.out), ".pt"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("cli,setup,ok_writes", [(predict, _predict_setup, 1), (eval_cli, _eval_setup, 0), (train_cli, _train_setup, 0)],
                         ids=["predict", "eval", "train"])
def test_unwritable_output_keeps_what_was_there(ctx, capsys, monkeypatch, cli, setup, ok_writes, code):
    argv, culprits = setup(ctx)
    before = snapshot(ctx.out)
    monkeypatch.setattr(atomic, "os", _FailingOS(code, ok_writes))
    outcome = run_main(cli.main, argv, capsys)
    line = assert_one_line_error(outcome, *culprits, os.strerror(code))
    assert "--out" in line or "write elsewhere" in line
    after = snapshot(ctx.out)
    assert {k: v for k, v in after.items() if k in before} == before, "a file that was there changed"
    assert len(after) == len(before) + ok_writes
    _no_temporaries(ctx.tmp)


def test_a_folder_where_an_output_file_belongs(ctx, capsys):
    ctx.out.mkdir()
    (ctx.out / f"{ctx.image.stem}_mask.png").mkdir()
    (ctx.out / "overlays").write_text("not a folder")
    outcome = run_main(predict.main, ["ucmnet", ctx.image, "--out", ctx.out, "--device", "cpu"], capsys)
    assert_one_line_error(outcome, f"{ctx.image.stem}_mask.png", "folder")
    outcome = run_main(eval_cli.main, ctx.fill(EVAL + ["--out", "{out}", "--overlays", "1"]), capsys)
    assert_one_line_error(outcome, "overlays", "existing file")
    assert (ctx.out / "overlays").read_text() == "not a folder"
    _no_temporaries(ctx.tmp)


# ------------------------------------------------------------------------------------------------ 3. weights and models
def _write_unsafe_pickle(path: Path) -> None:
    import torch

    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, str(path))  # a global: unpickling it could run code


def _write_truncated(src: Path, path: Path) -> None:
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_truncated_checkpoint(path: Path) -> None:
    import io

    import torch

    from lightseg_edge.models import create_model

    buf = io.BytesIO()
    torch.save({"format": "lightseg-ckpt/1", "model": create_model("ucmnet").state_dict(), "config": {"model": "ucmnet"}}, buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _write_other_model_checkpoint(path: Path) -> None:
    import torch

    from lightseg_edge.models import create_model

    torch.save({"format": "lightseg-ckpt/1", "model": create_model("egeunet").state_dict(), "config": {"model": "egeunet"}}, str(path))


def _write_onnx(path: Path, what: str) -> None:
    path.write_bytes(b"" if what == "empty" else b"\x08\x07\x12\x04junk" + os.urandom(512))


BAD_FILES = [
    # (file name, how to make it, argv template (file as {tmp}/NAME), names)
    ("evil.pt", _write_unsafe_pickle, ["{tmp}/evil.pt", "{image}", "--model", "ucmnet", "--out", "{out}"],
     ["evil.pt", "unpickle", "state dict"]),
    ("evil.pt", _write_unsafe_pickle, EVAL + ["--weights", "{tmp}/evil.pt"], ["evil.pt", "unpickle"]),
    ("cut.pt", _write_truncated_checkpoint, EVAL + ["--weights", "{tmp}/cut.pt"], ["cut.pt", "truncated"]),
    ("cut.pt", _write_truncated_checkpoint, ["{tmp}/cut.pt", "{image}", "--out", "{out}"], ["cut.pt", "truncated"]),
    ("cut.safetensors", lambda p: _write_truncated(WEIGHTS_DIR / "ucmnet.safetensors", p),
     ["{tmp}/cut.safetensors", "{image}", "--model", "ucmnet", "--out", "{out}"], ["cut.safetensors", "truncated"]),
    ("cut.safetensors", lambda p: _write_truncated(WEIGHTS_DIR / "ucmnet.safetensors", p),
     EVAL + ["--weights", "{tmp}/cut.safetensors"], ["cut.safetensors", "truncated"]),
    ("egeunet.pt", _write_other_model_checkpoint, EVAL + ["--weights", "{tmp}/egeunet.pt"],
     ["egeunet.pt", "'ucmnet'", "missing keys", "--model egeunet"]),
    ("egeunet.pt", _write_other_model_checkpoint, ["{tmp}/egeunet.pt", "{image}", "--model", "ucmnet", "--out", "{out}"],
     ["egeunet.pt", "missing keys", "--model egeunet"]),
    (None, None, EVAL + ["--weights", "{egeunet}"], ["egeunet.safetensors", "unexpected keys", "--model egeunet"]),
]


@pytest.mark.parametrize("name,make,argv,names", BAD_FILES, ids=[f"{'eval' if a[0] == '--model' else 'predict'}:{n or 'shipped'}"
                                                                for n, _, a, _ in BAD_FILES])
def test_unreadable_or_foreign_weights(ctx, capsys, name, make, argv, names):
    if make is not None:
        make(ctx.tmp / name)
    cli = eval_cli if argv[0] == "--model" else predict
    before = snapshot(ctx.tmp)
    assert_one_line_error(run_main(cli.main, ctx.fill(argv), capsys), *names)
    assert snapshot(ctx.tmp) == before and not ctx.out.exists()


@pytest.mark.skipif(not is_available("onnxruntime"), reason="needs onnxruntime")
@pytest.mark.parametrize("what", ["junk", "empty"])
def test_corrupt_onnx(ctx, capsys, what):
    path = ctx.tmp / f"{what}.onnx"
    _write_onnx(path, what)
    outcome = run_main(predict.main, [path, ctx.image, "--model", "ucmnet", "--out", ctx.out], capsys)
    assert_one_line_error(outcome, f"{what}.onnx", "ONNX Runtime cannot load", "re-export")
    assert not ctx.out.exists()


# ------------------------------------------------------------------------------------------------ 4. a batch skips bad images
def _bad_images(folder: Path, good: Path) -> Dict[str, str]:
    """File name -> words its 'failed:' line must hold."""
    data = good.read_bytes()
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(2000) + b"\xff\xd9")  # JPEG markers, noise between
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    (folder / "folder.jpg").mkdir()
    cv2.imwrite(str(folder / "huge.png"), np.zeros((300, 300, 3), np.uint8))  # over the limit set below
    return {"corrupt.jpg": "corrupt.jpg", "truncated.jpg": "truncated", "zero.png": "empty", "notes.png": "notes.png",
            "folder.jpg": "folder.jpg", "huge.png": "huge.png"}


def test_batch_skips_and_lists_each_unreadable_image(ctx, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTSEG_MAX_IMAGE_PIXELS", "50000")  # the 192x192 sample passes, huge.png (300x300) does not
    folder = _images_folder(ctx, 2)
    bad = _bad_images(folder, sorted(folder.iterdir())[0])
    outcome = run_main(predict.main, ["ucmnet", folder, "--out", ctx.out, "--device", "cpu", "--no-progress", "--batch-size", "3"], capsys)
    line = assert_one_line_error(outcome, "6 of 8", code=1)
    assert "the others were written" in line and "wrote 2 file(s)" in outcome.out
    failed = [s for s in outcome.err.splitlines() if s.startswith("failed: ")]
    assert len(failed) == len(bad)
    for name, word in bad.items():
        assert any(name in s and word in s for s in failed), f"{name} ({word}) not reported: {failed}"
    assert sorted(p.name for p in ctx.out.iterdir()) == sorted(f"{p.stem}_mask.png" for p in (ctx.data / "images").iterdir())[:2]


# ------------------------------------------------------------------------------------------------ Python API
@pytest.fixture(scope="module")
def predictor():
    with load_predictor("ucmnet", device="cpu") as p:
        yield p


IMAGE = np.zeros((64, 64, 3), np.uint8)
API_CASES = [
    # (call, expected error type, names in its message)
    (lambda p: load_predictor("ucmnet", threshold=2), InvalidInputError, ["threshold", "[0, 1]"]),
    (lambda p: load_predictor("ucmnet", threshold="high"), InvalidInputError, ["threshold", "'high'"]),
    (lambda p: create_model("nosuch"), UnknownModelError, ["nosuch", "ucmnet"]),
    (lambda p: create_model(None), UnknownModelError, ["None", "ucmnet"]),
    (lambda p: create_model("ucmnet", depth=3), InvalidInputError, ["depth", "dims"]),
    (lambda p: p.predict(IMAGE.astype(np.float32)), InvalidInputError, ["uint8", "float32"]),
    (lambda p: p.predict(IMAGE[..., 0]), InvalidInputError, ["HxWx3", "grayscale"]),
    (lambda p: p.predict(IMAGE[None]), InvalidInputError, ["HxWx3", "(1, 64, 64, 3)"]),
    (lambda p: p.predict(np.zeros((0, 8, 3), np.uint8)), InvalidInputError, ["empty"]),
    (lambda p: p.predict(IMAGE, threshold=1.5), InvalidInputError, ["threshold", "1.5"]),
    (lambda p: p.predict_batch([]), InvalidInputError, ["at least one image"]),
    (lambda p: p.predict_batch(IMAGE), InvalidInputError, ["predict_batch", "(64, 64, 3)", "predict()"]),
    (lambda p: p.predict_batch(None), InvalidInputError, ["predict_batch", "NoneType"]),
    (lambda p: p.predict_batch([IMAGE, IMAGE.astype(np.uint16)]), InvalidInputError, ["image 1", "uint16"]),
    (lambda p: draw_contours(IMAGE, IMAGE[..., 0], thickness=1.5), InvalidInputError, ["thickness", "1.5"]),
    (lambda p: draw_contours(IMAGE, IMAGE[..., 0], pred_color="red"), InvalidInputError, ["pred_color", "'red'", "RGB"]),
    (lambda p: draw_contours(IMAGE, IMAGE[:8, :8, 0]), InvalidInputError, ["pred_mask", "(8, 8)", "(64, 64)"]),
]


@pytest.mark.parametrize("call,kind,names", API_CASES)
def test_api_rejects_bad_input_in_one_line(predictor, call, kind, names):
    with pytest.raises(kind) as info:
        call(predictor)
    text = str(info.value)
    assert isinstance(info.value, LightsegError) and "\n" not in text and len(text) < 600, text
    for name in names:
        assert name in text, f"{name!r} not in: {text}"


# ------------------------------------------------------------------------------------------------ run_cli's safety net
def _raise(exc: BaseException) -> Callable[[List[str]], int]:
    def body(argv: List[str]) -> int:
        raise exc

    return body


@pytest.mark.parametrize("exc,names", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/x.png"), ["/data/out/x.png", "Permission denied"]),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/x.png"), ["/data/out/x.png", "No space left on device"]),
    (LightsegError("a message\nthat a library\nspread over lines"), ["a message that a library spread over lines"]),
])
def test_run_cli_turns_file_errors_into_one_line(capsys, exc, names):
    assert_one_line_error(run_main(lambda argv: run_cli(_raise(exc), argv), [], capsys), *names)


def test_run_cli_keeps_the_traceback_of_an_oserror_without_a_file():
    with pytest.raises(ConnectionResetError):  # not about the user's files: maybe a bug, so not hidden behind a line
        run_cli(_raise(ConnectionResetError(errno.ECONNRESET, "reset")), [])

