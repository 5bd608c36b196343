"""A second attack on the CLIs and the Python API, class by class, with inputs the other reliability files do not try.

Classes: values out of range (inf, empty strings, sizes, thread counts, seeds and batches that would crash or swamp
the machine), contradictory flags, data loss (outputs over inputs, a resumed run over a finished one's best.pt, an
FP16 artifact relabelled as the FP32 model), integrity of what is loaded (a checkpoint's or option's preprocessing,
integer weights, FIFOs and devices), split.csv files as people write them, one bad input stopping a batch, unclear
errors (newlines in names, 5,000-character names, tracebacks, out of memory) and leftovers of killed runs.

Cheap inputs only: a one-node 32x32 ONNX export folder (ONNX Runtime), the shipped ucmnet weights, the committed ISIC
sample; nothing is exported or trained except a refused resume of a 2-image run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
import pytest
from reliability_helpers import TRAIN_TINY, assert_one_line_error, run_main, snapshot, tiny_onnx

from lightseg_edge import create_model, load_predictor
from lightseg_edge.cli import bench, predict
from lightseg_edge.cli import eval as eval_cli
from lightseg_edge.cli import export as export_cli
from lightseg_edge.cli import train as train_cli
from lightseg_edge.cli._common import run_cli
from lightseg_edge.data.io import read_image
from lightseg_edge.data.layouts import list_samples
from lightseg_edge.errors import DataError, ExportConfigError, InvalidInputError, LightsegError, UnknownModelError
from lightseg_edge.export import ExportConfig, export

HW = 32

def _write_manifest(folder: Path, artifacts: Dict[str, str], **preprocess) -> None:
    from lightseg_edge._hashing import sha256_file

    man = {
        "format": "lightseg-export/1", "model": "ucmnet", "created": "2026-01-01T00:00:00+00:00",
        "weights": {"source": "random", "sha256": None, "seed": 0},
        "input": {"name": "input", "shape": [None, 3, HW, HW], "dtype": "float32", "output_name": "logits"},
        "preprocess": {"size": [HW, HW], "mode": "scale", "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], **preprocess},
        "output": "logits", "opset": 17, "parity": {}, "calibration": None, "accuracy": {}, "tensorrt": None, "tools": {}, "steps": [],
        "artifacts": {k: {"path": p, "precision": k, "sha256": sha256_file(folder / p)} for k, p in artifacts.items()},
    }
    (folder / "manifest.json").write_text(json.dumps(man))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """An export folder: model.onnx (fp32) and a copy listed as its fp16 artifact."""
    folder = tmp_path_factory.mktemp("adv") / "export"
    tiny_onnx(folder / "model.onnx")
    shutil.copy(folder / "model.onnx", folder / "model.fp16.onnx")
    _write_manifest(folder, {"fp32": "model.onnx", "fp16": "model.fp16.onnx"})
    return folder


@pytest.fixture(scope="module")
def predictor(export_dir):
    with load_predictor(export_dir, precision="fp32", device="cpu") as p:
        yield p


@pytest.fixture()
def image(sample_dir) -> Path:
    return min((sample_dir / "images").iterdir())


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging when a read blocks (a FIFO) or never ends (a device)."""
    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s: blocked on a FIFO or device?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------------------------------
# 1. arguments: every CLI, values that used to be accepted (and then crash, hang, swamp the machine or be ignored)
# ---------------------------------------------------------------------------------------------------------------------
S = "{sample}"
EXPORT = ["--model", "ucmnet", "--weights", "random", "--data", S, "--img-size", "128", "--output", "{tmp}/exp"]
EVAL = ["--model", "ucmnet", "--data", S, "--max-images", "1"]
TRAIN = ["--model", "egeunet", "--data", S, "--out", "{tmp}/run"] + TRAIN_TINY
BENCH = ["--model", "ucmnet", "--iters", "1", "--warmup", "0"]

ARG_CASES = [
    # (cli, argv, names the one error line must hold)
    (predict, ["{export}", "{image}", "--out", ""], ["--out", "empty"]),
    (train_cli, TRAIN[:4] + ["--out", ""] + TRAIN_TINY, ["--out", "empty"]),
    (eval_cli, ["--model", "ucmnet", "--data", ""], ["--data", "empty"]),
    (export_cli, EXPORT[:-1] + [""], ["--output", "empty"]),
    (export_cli, ["--model", "ucmnet", "--weights", "random", "--data", "", "--output", "{tmp}/exp"], ["--data", "empty"]),
    (bench, BENCH + ["--data", ""], ["--data", "empty"]),
    (bench, BENCH + ["--data", S, "--split", ""], ["--data", "split ''"]),
    (train_cli, TRAIN + ["--lr", "inf"], ["--lr", "inf"]),
    (train_cli, TRAIN + ["--max-minutes", "inf"], ["--max-minutes"]),
    (bench, BENCH[:2] + ["--min-time", "inf"], ["--min-time", "inf"]),
    (eval_cli, EVAL + ["--threads", "100000000"], ["--threads", "256"]),
    (bench, BENCH + ["--threads", "100000000"], ["--threads", "256"]),
    (train_cli, TRAIN + ["--workers", "100000"], ["--workers", "0..64"]),
    (train_cli, TRAIN + ["--seed", "99999999999999999999999"], ["--seed", "4294967295"]),
    (eval_cli, EVAL + ["--img-size", "65536"], ["--img-size", "4096"]),
    (bench, BENCH + ["--img-size", "65536"], ["--img-size", "4096"]),
    (eval_cli, EVAL + ["--img-size", "64"], ["--img-size 64", "smallest input 128"]),
    (export_cli, EXPORT[:-3] + ["64"] + EXPORT[-2:], ["--img-size 64", "smallest input 128"]),
    (export_cli, EXPORT + ["--batch", "100000"], ["--batch", "1024"]),
    (export_cli, EXPORT + ["--dynamic-batch", "1,8,100000"], ["--dynamic-batch", "1024"]),
    (export_cli, EXPORT + ["--dynamic-batch", ""], ["--dynamic-batch", "MIN,OPT,MAX"]),
    (bench, BENCH + ["--batch", "1,100000"], ["--batch", "1024"]),
    (predict, ["{export}", "{image}", "--out", "{tmp}/o", "--batch-size", "100000"], ["--batch-size", "1024"]),
    (train_cli, TRAIN + ["--progressive", "256:3"], ["--progressive 256", "below the full size 64"]),
    (train_cli, TRAIN[:-2] + ["--device", "mps"], ["--device mps", "cpu"]),
    (predict, ["{export}", "{image}", "--out", "{tmp}/o", "--model", "nosuch"], ["model='nosuch'", "manifest.json", "'ucmnet'"]),
    (bench, ["--onnx", "{tmp}/junk.onnx", "--iters", "1"], ["--onnx", "junk.onnx", "not a readable ONNX"]),
    (export_cli, ["--from-onnx", "{export}/model.fp16.onnx", "--data", S], ["model.fp16.onnx", "fp16 artifact", "model.onnx"]),
]


def _fill(items: List[str], ctx: Dict[str, str]) -> List[str]:
    return [s.format(**ctx) for s in items]


@pytest.fixture()
def no_measuring(monkeypatch):
    from lightseg_edge.bench import runner

    def refuse(*args, **kwargs):
        raise AssertionError("measured despite a bad argument")

    monkeypatch.setattr(runner, "run_jobs", refuse)


@pytest.mark.parametrize("cli,argv,names", ARG_CASES, ids=[f"{c.__name__.rsplit('.', 1)[-1]}:{' '.join(a[-2:])}" for c, a, _ in ARG_CASES])
def test_bad_argument_is_one_line_and_changes_nothing(cli, argv, names, tmp_path, sample_dir, export_dir, image, capsys, no_measuring,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path taken for "here" (or a default under it) would show up in the snapshot
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07junk" + bytes(200))
    ctx = {"tmp": str(tmp_path), "sample": str(sample_dir), "export": str(export_dir), "image": str(image)}
    before, export_before = snapshot(tmp_path), snapshot(export_dir)
    assert_one_line_error(run_main(cli.main, _fill(argv, ctx), capsys), *_fill(names, ctx))
    assert snapshot(tmp_path) == before and snapshot(export_dir) == export_before
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_an_empty_value_is_not_the_current_folder(tmp_path, export_dir, image, capsys, monkeypatch):
    """--out '' used to write the masks into whatever folder the shell was in."""
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_main(predict.main, [export_dir, image, "--out", ""], capsys), "--out")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------------
# 2. training runs: resuming what is not resumable, overwriting a finished run, writing into the dataset
# ---------------------------------------------------------------------------------------------------------------------
def _egeunet_state():
    return create_model("egeunet").state_dict()


RESUME_CASES = {
    # name -> (files to put in --out, names the error line must hold)
    "only-best": (lambda out: _save(out / "best.pt", {"model": _egeunet_state(), "epoch": 3}), ["best.pt", "last.pt", "--out"]),
    "best-as-last": (lambda out: _save(out / "last.pt", {"model": _egeunet_state(), "config": {"model": "egeunet"}, "epoch": 3}),
                     ["last.pt", "not a resumable last.pt", "KeyError"]),
    "foreign-weights": (lambda out: _save(out / "last.pt", {"model": {"x": __import__("torch").zeros(1)}, "config": {"model": "egeunet"}}),
                        ["last.pt", "do not fit 'egeunet'", "missing keys"]),
    "no-config": (lambda out: _save(out / "last.pt", {"model": _egeunet_state()}), ["last.pt", "None", "not 'egeunet'"]),
}


def _save(path: Path, state: dict) -> None:
    from lightseg_edge.train.checkpoint import save_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state)


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_a_resume_that_cannot_resume_is_one_line_and_keeps_the_run(case, tmp_path, sample_dir, capsys):
    out = tmp_path / "run"
    make, names = RESUME_CASES[case]
    make(out)
    before = snapshot(out)
    argv = ["--model", "egeunet", "--data", sample_dir, "--out", out, "--resume"] + TRAIN_TINY
    assert_one_line_error(run_main(train_cli.main, argv, capsys), *names)
    assert snapshot(out) == before


def test_training_into_the_dataset_images_folder_is_refused(tmp_path, sample_dir, capsys):
    data = Path(shutil.copytree(sample_dir, tmp_path / "data"))
    before = snapshot(data)
    argv = ["--model", "egeunet", "--data", data, "--out", data / "images"] + TRAIN_TINY
    assert_one_line_error(run_main(train_cli.main, argv, capsys), "--out", "images", "dataset")
    assert snapshot(data) == before  # no curves.png among the images: the next run would find a case without a mask


# ---------------------------------------------------------------------------------------------------------------------
# 3. split.csv as people write it
# ---------------------------------------------------------------------------------------------------------------------
def _csv(sample_dir: Path, tmp_path: Path, change: Callable[[bytes], bytes]) -> Path:
    data = Path(shutil.copytree(sample_dir, tmp_path / "data"))
    (data / "split.csv").write_bytes(change((data / "split.csv").read_bytes()))
    return data


ACCEPTED_CSV = {
    "BOM (Excel)": lambda b: b"\xef\xbb\xbf" + b,
    "CRLF": lambda b: b.replace(b"\n", b"\r\n"),
    "spaces": lambda b: b.replace(b",", b" , "),
    "capitalised": lambda b: b.replace(b"test", b"Test").replace(b"val", b"VAL"),
}
REFUSED_CSV = {
    "binary": (lambda b: b"\x89\xff\xfe" + bytes(range(256)), ["split.csv", "UTF-8"]),
    "latin-1": (lambda b: b + "café,train\n".encode("latin-1"), ["split.csv", "UTF-8"]),
    "unknown split": (lambda b: b.replace(b"test", b"testing"), ["split.csv", "line 8", "'testing'", "train, val, test"]),
    "contradicting duplicate": (lambda b: b + b"ISIC_0000018,train\n", ["split.csv", "line 10", "ISIC_0000018", "'test'"]),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED_CSV))
def test_split_csv_as_spreadsheets_write_it(name, sample_dir, tmp_path):
    data = _csv(sample_dir, tmp_path, ACCEPTED_CSV[name])
    assert [s.case_id for s in list_samples(data, "test")] == ["ISIC_0000018", "ISIC_0000026"]
    assert len(list_samples(data, "val")) == 2


@pytest.mark.parametrize("name", sorted(REFUSED_CSV))
def test_a_bad_split_csv_is_named_with_its_line(name, sample_dir, tmp_path):
    change, names = REFUSED_CSV[name]
    with pytest.raises(DataError) as info:
        list_samples(_csv(sample_dir, tmp_path, change), "test")
    assert "\n" not in str(info.value) and all(n in str(info.value) for n in names), str(info.value)


def test_a_split_csv_that_is_not_a_file(sample_dir, tmp_path, capsys):
    data = _csv(sample_dir, tmp_path, lambda b: b)
    (data / "split.csv").unlink()
    os.mkfifo(data / "split.csv")  # a read would block
    with _deadline(20):
        assert_one_line_error(run_main(eval_cli.main, ["--model", "ucmnet", "--data", data, "--split", "all"], capsys), "split.csv")


# ---------------------------------------------------------------------------------------------------------------------
# 4. lightseg-predict: one bad input costs only itself, each is named on its own line, no input is overwritten
# ---------------------------------------------------------------------------------------------------------------------
def test_every_kind_of_bad_input_is_listed_and_the_rest_written(export_dir, image, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(image, folder / "good.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "bad\nname.jpg").write_bytes(b"junk")
    video = tmp_path / "broken.mp4"
    video.write_bytes(os.urandom(2000))
    out = tmp_path / "out"
    argv = [export_dir, video, folder, "99999999999999999999", "--out", out, "--no-progress"]
    with _deadline(60):
        outcome = run_main(predict.main, argv, capsys)
    assert_one_line_error(outcome, "6 of 7 input(s)", "the others were written", code=1)
    failed = [line for line in outcome.err.splitlines() if line.startswith("failed: ")]
    for name in ("fifo.jpg", "dangling.png", "loop.png", "'" + str(folder / "bad\\nname.jpg") + "'", str(video), "camera99999999999999999999"):
        assert sum(name in line for line in failed) == 1, f"{name} not on one 'failed:' line: {failed}"
    assert len(failed) == 6 and "Traceback" not in outcome.err
    assert sorted(p.name for p in out.iterdir()) == ["good_mask.png"]


def test_an_output_never_overwrites_an_input(export_dir, tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("lesion.png", "lesion_mask.png"):  # the second is an input, and the first one's output name
        cv2.imwrite(str(folder / name), np.full((20, 24, 3), 90, np.uint8))
    before = snapshot(folder)
    outcome = run_main(predict.main, [export_dir, folder, "--out", folder, "--no-progress"], capsys)
    assert_one_line_error(outcome, "1 of 2 image(s)", code=1)
    assert "lesion_mask.png: is one of the input images" in outcome.err
    after = snapshot(folder)
    assert {k: after[k] for k in before} == before and sorted(after) == ["lesion.png", "lesion_mask.png", "lesion_mask_mask.png"]


def test_images_of_every_format_and_layout_are_read(export_dir, tmp_path, capsys):
    """The passing side: 1x1, grayscale, 16-bit, RGBA, a grey 16-bit TIFF, a 1000x2 sliver."""
    folder = tmp_path / "in"
    folder.mkdir()
    arrays = {"one.png": np.full((1, 1, 3), 90, np.uint8), "grey.png": np.full((20, 30), 90, np.uint8),
              "deep.png": np.full((20, 30, 3), 40000, np.uint16), "alpha.png": np.full((20, 30, 4), 90, np.uint8),
              "grey16.tif": np.full((20, 30), 40000, np.uint16), "sliver.bmp": np.full((1000, 2, 3), 90, np.uint8)}
    for name, array in arrays.items():
        assert cv2.imwrite(str(folder / name), array)
    outcome = run_main(predict.main, [export_dir, folder, "--out", tmp_path / "out", "--no-progress"], capsys)
    assert outcome.code == 0, outcome.err
    for name, array in arrays.items():
        mask = cv2.imread(str(tmp_path / "out" / f"{Path(name).stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == array.shape[:2]


def test_a_killed_runs_temporaries_are_removed_and_a_live_ones_kept(export_dir, image, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess_pid()
    stale = out / f".x_mask.png.{dead}-0123abcd.tmp"
    live = out / f".y_mask.png.{os.getpid()}-0123abcd.tmp"
    fresh = out / f".z_mask.png.{dead}-89abcdef.tmp"
    for p in (stale, live, fresh):
        p.write_bytes(b"half a file")
    old = time.time() - 3600
    for p in (stale, live):
        os.utime(p, (old, old))
    assert run_main(predict.main, [export_dir, image, "--out", out, "--no-progress"], capsys).code == 0
    assert not stale.exists() and live.exists() and fresh.exists()  # fresh: may be another machine's write in progress


def subprocess_pid() -> int:
    """The pid of a process that has ended."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


# ---------------------------------------------------------------------------------------------------------------------
# 5. what is loaded: a checkpoint's or option's preprocessing, weights of the wrong type, names of any length
# ---------------------------------------------------------------------------------------------------------------------
def _checkpoint(path: Path, **extra) -> Path:
    import torch

    torch.save({"format": "lightseg-ckpt/1", "model": create_model("ucmnet").state_dict(), "config": {"model": "ucmnet"}, **extra}, str(path))
    return path


def _int_safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    import torch

    state = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in create_model("ucmnet").state_dict().items()}
    save_file(state, str(path), metadata={"model": "ucmnet"})
    return path


def _long_name_safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(create_model("ucmnet").state_dict(), str(path), metadata={"model": "x" * 5000})
    return path


FILE_CASES = [
    # (file name, maker, names the error line must hold)
    ("no-mode.pt", lambda p: _checkpoint(p, preprocess={"size": [64, 64]}), ["no-mode.pt", "'preprocess' record"]),
    ("size0.pt", lambda p: _checkpoint(p, preprocess={"size": [0, 0], "mode": "scale"}), ["size0.pt", "size", "1..4096"]),
    ("mean2.pt", lambda p: _checkpoint(p, preprocess={"size": [64, 64], "mode": "meanstd", "mean": [0.5, 0.5]}), ["mean2.pt", "mean"]),
    ("model7.pt", lambda p: _checkpoint(p, config={"model": 7}), ["model7.pt", "unknown model 7"]),
    ("int.safetensors", _int_safetensors, ["int.safetensors", "dtype mismatches", "torch.int32"]),
    ("long.safetensors", _long_name_safetensors, ["long.safetensors", "unknown model 'xxx", "Available"]),
]


@pytest.mark.parametrize("name,make,names", FILE_CASES, ids=[n for n, _, _ in FILE_CASES])
def test_a_file_whose_records_do_not_hold_is_named(name, make, names, tmp_path, image, capsys):
    source = make(tmp_path / name)
    outcome = run_main(predict.main, [source, image, "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert_one_line_error(outcome, *names)
    assert not (tmp_path / "out").exists()


def test_a_manifest_cannot_ask_for_a_huge_input(export_dir, image, tmp_path, capsys):
    folder = Path(shutil.copytree(export_dir, tmp_path / "export"))
    _write_manifest(folder, {"fp32": "model.onnx"}, size=[30000, 30000])
    outcome = run_main(predict.main, [folder, image, "--out", tmp_path / "out"], capsys)
    assert_one_line_error(outcome, "manifest.json", "1..4096")


# ---------------------------------------------------------------------------------------------------------------------
# 6. the Python API
# ---------------------------------------------------------------------------------------------------------------------
IMAGE = np.zeros((24, 30, 3), np.uint8)


def _fifo(tmp: Path) -> Path:
    path = tmp / "scan.png"
    os.mkfifo(path)
    return path


API_CASES = [
    # (id, call(predictor, tmp_path), error type, names in the message)
    ("preprocess mean of 2", lambda p, t: load_predictor(p.source, preprocess={"size": [HW, HW], "mode": "meanstd", "mean": [0.5, 0.5]}),
     InvalidInputError, ["preprocess=", "mean"]),
    ("preprocess std 0", lambda p, t: load_predictor(p.source, preprocess={"size": [HW, HW], "mode": "meanstd", "std": [0, 1, 1]}),
     InvalidInputError, ["std", "non-zero"]),
    ("preprocess std nan", lambda p, t: load_predictor(p.source, preprocess={"size": [HW, HW], "mode": "meanstd", "std": [float("nan"), 1, 1]}),
     InvalidInputError, ["std", "finite"]),
    ("dynamic graph, huge size", lambda p, t: load_predictor(tiny_onnx(t / "dyn.onnx", "H", "W"), preprocess={"size": [300000, 300000], "mode": "scale"}),
     InvalidInputError, ["300000", "1..4096"]),
    ("pytorch threads=0", lambda p, t: load_predictor("ucmnet", threads=0), InvalidInputError, ["threads=0", "1..256"]),
    ("pytorch threads='x'", lambda p, t: load_predictor("ucmnet", threads="x"), InvalidInputError, ["threads='x'"]),
    ("onnxruntime threads=10**9", lambda p, t: load_predictor(p.source, threads=10 ** 9, model="ucmnet"), InvalidInputError, ["threads=1000000000", "0..256"]),
    ("onnxruntime threads=1.5", lambda p, t: load_predictor(p.source, threads=1.5, model="ucmnet"), InvalidInputError, ["threads=1.5"]),
    ("threshold '0.5'", lambda p, t: p.predict(IMAGE, threshold="0.5"), InvalidInputError, ["threshold", "'0.5'"]),
    ("threshold True", lambda p, t: p.predict(IMAGE, threshold=True), InvalidInputError, ["threshold", "True"]),
    ("name with a newline", lambda p, t: p.predict(IMAGE[..., 0], name="scan\n1.png"), InvalidInputError, ["'scan\\n1.png'", "single-channel"]),
    ("source ''", lambda p, t: load_predictor(""), InvalidInputError, ["source", "empty string"]),
    ("model= contradicts the export", lambda p, t: load_predictor(Path(p.source).parent, model="unet"), InvalidInputError, ["model='unet'", "'ucmnet'"]),
    ("read_image(None)", lambda p, t: read_image(None), InvalidInputError, ["read_image", "NoneType"]),
    ("read_image('')", lambda p, t: read_image(""), InvalidInputError, ["read_image", "empty string"]),
    ("read_image(FIFO)", lambda p, t: read_image(_fifo(t)), DataError, ["scan.png", "FIFO"]),
    ("read_image(/dev/zero)", lambda p, t: read_image("/dev/zero"), DataError, ["/dev/zero", "not a regular file"]),
    ("create_model(checkpoint=123)", lambda p, t: create_model("ucmnet", checkpoint=123), InvalidInputError, ["checkpoint", "int"]),
    ("create_model(5000-char name)", lambda p, t: create_model("x" * 5000), UnknownModelError, ["unknown model 'xxx", "Available"]),
    ("export(None)", lambda p, t: export(None), ExportConfigError, ["ExportConfig", "NoneType"]),
    ("export(output=123)", lambda p, t: export(ExportConfig(model="ucmnet", weights="random", output=123)), ExportConfigError, ["--output", "int"]),
    ("export(data='')", lambda p, t: export(ExportConfig(model="ucmnet", weights="random", data="")), ExportConfigError, ["--data", "empty"]),
    ("export(batch=5000)", lambda p, t: export(ExportConfig(model="ucmnet", weights="random", batch=5000, output=str(t / "e"))), ExportConfigError,
     ["--batch", "at most 1024"]),
]


@pytest.mark.parametrize("case,call,kind,names", API_CASES, ids=[c for c, _, _, _ in API_CASES])
def test_api_refuses_in_one_line(case, call, kind, names, predictor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output folder (exports/...) lands here, not in the checkout
    with _deadline(20), pytest.raises(kind) as info:
        call(predictor, tmp_path)
    text = str(info.value)
    assert isinstance(info.value, LightsegError) and "\n" not in text and len(text) < 600, text
    for name in names:
        assert name in text, f"{name!r} not in: {text}"


API_ACCEPTED = [
    ("non-contiguous", lambda p: p.predict(np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))[:, ::-1])),
    ("read-only broadcast", lambda p: p.predict(np.broadcast_to(np.uint8(7), (40, 50, 3)))),
    ("fortran order", lambda p: p.predict(np.asfortranarray(IMAGE))),
    ("mixed sizes", lambda p: p.predict_batch([IMAGE, np.zeros((7, 90, 3), np.uint8)])),
    ("numpy threshold", lambda p: p.predict(IMAGE, threshold=np.float32(0.3))),
    ("provider as a string", lambda p: load_predictor(p.source, providers="CPUExecutionProvider", model="ucmnet").predict(IMAGE)),
    ("numpy max_pixels", lambda p: read_image(min((Path(__file__).parents[1] / "assets/isic_sample/images").iterdir()), max_pixels=np.int64(10 ** 6))),
]


@pytest.mark.parametrize("case,call", API_ACCEPTED, ids=[c for c, _ in API_ACCEPTED])
def test_api_accepts_what_is_fine(case, call, predictor):
    assert call(predictor) is not None


def test_predict_after_close_is_refused_for_every_entry_point(export_dir):
    p = load_predictor(export_dir, device="cpu")
    p.close()
    for call in (lambda: p.predict(IMAGE), lambda: p.predict_proba(IMAGE), lambda: p.predict_batch([IMAGE]),
                 lambda: p.infer(np.zeros((1, 3, HW, HW), np.float32)), p.__enter__):
        with pytest.raises(LightsegError, match="close"):
            call()
    p.close()  # idempotent


# ---------------------------------------------------------------------------------------------------------------------
# 7. run_cli: out of memory is one line; a long message keeps its start and end; anything else keeps its traceback
# ---------------------------------------------------------------------------------------------------------------------
def _raise(exc: BaseException) -> Callable[[List[str]], int]:
    def body(argv: List[str]) -> int:
        raise exc

    return body


@pytest.mark.parametrize("exc,names", [
    (MemoryError(), ["out of memory", "--batch-size"]),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 51539607552 bytes"),
     ["out of memory", "51539607552"]),
    (LightsegError("/data/" + "deep/" * 1000 + "scan.png: not a readable image; remove it"), ["/data/deep/", "scan.png: not a readable image; remove it", " ... "]),
])
def test_run_cli_one_line_for_memory_and_long_messages(capsys, exc, names):
    assert_one_line_error(run_main(lambda argv: run_cli(_raise(exc), argv), [], capsys), *names)


def test_run_cli_keeps_the_traceback_of_a_bug():
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(_raise(RuntimeError("a bug")), [])


def test_the_crafted_safetensors_header_is_refused(tmp_path, image, capsys):
    """A header length of 2**62: refused by the reader, not allocated."""
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    assert_one_line_error(run_main(predict.main, [path, image, "--out", tmp_path / "out"], capsys), "huge.safetensors")
