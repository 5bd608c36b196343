"""A short real training run on real ISIC images (the committed sample), resumed, evaluated and shipped."""

from __future__ import annotations

import json
import math
import platform

import pytest
import torch

from lightseg_edge.cli import eval as eval_cli
from lightseg_edge.cli import train as train_cli
from lightseg_edge.models import create_model
from lightseg_edge.train.ship import refresh_metrics, ship


def test_the_data_used_is_named_before_training(sample_dir, capsys):
    from lightseg_edge.train.trainer import TrainConfig, _samples

    train, val = _samples(TrainConfig(model="ucmnet", data=str(sample_dir), out="unused", max_train_images=3))
    assert (len(train), len(val)) == (3, 2)
    assert capsys.readouterr().out.splitlines() == [f"data: {sample_dir.resolve()} (folder layout), split train: 3 of 4 images",
                                                    f"data: {sample_dir.resolve()} (folder layout), split val: 2 images"]


def test_train_resume_eval_ship(sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "ucmnet", "--data", str(sample_dir), "--out", str(out), "--img-size", "128", "--batch-size", "2", "--no-progress"]
    assert train_cli.main(args + ["--epochs", "1"]) == 0
    ck = torch.load(out / "last.pt", weights_only=True)  # plain tensors and metadata only
    assert ck["epoch"] == 0 and len(ck["history"]) == 1
    first = {k: v.clone() for k, v in ck["model"].items()}

    assert train_cli.main(args + ["--epochs", "2", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    ck = torch.load(out / "last.pt", weights_only=True)
    assert [h["epoch"] for h in ck["history"]] == [1, 2]
    assert any(not torch.equal(first[k], v) for k, v in ck["model"].items()), "second epoch did not train"
    for name in ("log.csv", "log.json", "curves.png", "best.pt"):
        assert (out / name).is_file()

    assert eval_cli.main(["--model", "ucmnet", "--weights", str(out / "best.pt"), "--data", str(sample_dir), "--split", "test",
                          "--img-size", "128", "--out", str(tmp_path / "ev"), "--overlays", "1"]) == 0
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["metrics"]["images"] == 2 and 0.0 <= report["metrics"]["mdice"] <= 1.0
    assert len(list((tmp_path / "ev" / "overlays").glob("*.png"))) == 2

    card = ship("ucmnet", out, str(sample_dir), tmp_path / "weights", notes=["2 epochs: a test run"])
    assert card["metrics"]["test"]["images"] == 2 and card["training"]["epochs_run"] == 2
    assert [h["epoch"] for h in card["training"]["history"]] == [1, 2] and card["training"]["notes"] == ["2 epochs: a test run"]
    assert {"dice_p5", "dice_p10", "dice_median", "dice_below_0_5"} <= set(card["metrics"]["test"])
    assert refresh_metrics("ucmnet", str(sample_dir), tmp_path / "weights")["metrics"] == card["metrics"]  # same tensors, same data
    model = create_model("ucmnet", checkpoint=tmp_path / "weights" / "ucmnet.safetensors")
    assert torch.equal(model.state_dict()["final.weight"], torch.load(out / "best.pt", weights_only=True)["model"]["final.weight"])


def test_cli_errors_exit_2(tmp_path, capsys):
    assert train_cli.main(["--model", "ucmnte", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "Did you mean 'ucmnet'" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert eval_cli.main(["--model", "ucmnet", "--weights", str(bad), "--data", str(tmp_path)]) == 2
    assert "bad.pt" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_the_same_run(sample_dir, tmp_path, precision):
    """Two epochs in one go, and the same run killed after its first batch and resumed, give the same weights, LRs and history."""
    base = ["--model", "ucmnet", "--data", str(sample_dir), "--img-size", "128", "--batch-size", "2", "--no-progress",
            "--device", "cpu", "--precision", precision, "--threads", "1", "--epochs", "2"]
    assert train_cli.main(base + ["--out", str(tmp_path / "a")]) == 0
    assert train_cli.main(base + ["--out", str(tmp_path / "b"), "--max-minutes", "0"]) == 0  # stops after one batch
    interrupted = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert interrupted["history"] == [] and interrupted["partial"]["batches"] == 1 and interrupted["epoch"] == -1
    assert train_cli.main(base + ["--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in "ab")
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha["lr"] == hb["lr"] and math.isclose(ha["train_loss"], hb["train_loss"], rel_tol=1e-5)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=1e-6, msg=k)


def test_fp16_training_needs_cuda(sample_dir, tmp_path, capsys):
    args = ["--model", "ucmnet", "--data", str(sample_dir), "--out", str(tmp_path / "o"), "--device", "cpu", "--precision", "fp16"]
    assert train_cli.main(args) == 2
    assert "fp16 training needs a CUDA device" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_train_on_cuda(sample_dir, tmp_path, precision):
    out = tmp_path / "run"
    args = ["--model", "lmsaunet", "--data", str(sample_dir), "--out", str(out), "--img-size", "64", "--batch-size", "2",
            "--no-progress", "--device", "cuda", "--precision", precision, "--epochs", "2", "--workers", "2"]
    assert train_cli.main(args) == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in ck["model"].values())  # checkpoints load anywhere
    assert all(math.isfinite(h["train_loss"]) for h in ck["history"])
    create_model("lmsaunet", checkpoint=out / "best.pt")


def test_a_second_run_never_replaces_the_first(sample_dir, tmp_path, capsys):
    args = ["--model", "ucmnet", "--data", str(sample_dir), "--out", str(tmp_path), "--img-size", "128", "--batch-size", "4",
            "--no-progress", "--epochs", "1", "--max-train-images", "4", "--max-val-images", "2"]
    assert train_cli.main(args) == 0
    before = (tmp_path / "last.pt").read_bytes()
    assert train_cli.main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (tmp_path / "last.pt").read_bytes() == before


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "-1"), ("--lr", "0"), ("--img-size", "x"),
                                        ("--workers", "-2"), ("--max-minutes", "-1"), ("--checkpoint-minutes", "0"),
                                        ("--ema", "1"), ("--ema", "nan")])
def test_bad_numbers_exit_2_naming_the_flag(sample_dir, tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--out", str(tmp_path), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err and repr(value) in err and not list(tmp_path.iterdir())


def test_progressive_resizing_trains_early_epochs_small(sample_dir, tmp_path, monkeypatch):
    from lightseg_edge.train import trainer

    seen = []
    real = trainer.downscale

    def spy(x, y, size):
        x, y = real(x, y, size)
        seen.append((x.shape[-1], y.shape[-1], set(torch.unique(y).tolist()) <= {0.0, 1.0}))
        return x, y

    monkeypatch.setattr(trainer, "downscale", spy)
    args = ["--model", "egeunet", "--data", str(sample_dir), "--out", str(tmp_path), "--img-size", "128", "--batch-size", "4",
            "--no-progress", "--epochs", "2", "--progressive", "64:1", "--threads", "1"]
    assert train_cli.main(args) == 0
    per_epoch = len(seen) // 2
    assert seen[:per_epoch] == [(64, 64, True)] * per_epoch and seen[per_epoch:] == [(128, 128, True)] * per_epoch
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["config"]["low_res"] == 64 and ck["config"]["low_res_epochs"] == 1


@pytest.mark.parametrize("model", ["egeunet", "malunet"])
def test_bf16_cpu_training_of_dilated_convs_survives(sample_dir, tmp_path, model):
    """oneDNN's bf16 backward of dilated convolutions crashed EGE-UNet at 128x128 (SIGSEGV); a fresh process proves
    the guard holds (a crash in-process would take the test session down)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lightseg_edge.cli.train", "--model", model, "--data", str(sample_dir), "--out", str(tmp_path / "o"),
           "--img-size", "128", "--batch-size", "4", "--precision", "bf16", "--device", "cpu", "--epochs", "2", "--threads", "2", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    if platform.libc_ver()[0] == "glibc":  # a lightseg-train process keeps the memory it frees (train/allocator.py)
        assert "memory: freed blocks stay in the process" in done.stdout


def test_compacted_resume_state_is_small_and_resumes(sample_dir, tmp_path):
    from lightseg_edge.train.checkpoint import compact

    args = ["--model", "malunet", "--data", str(sample_dir), "--out", str(tmp_path), "--img-size", "128", "--batch-size", "4",
            "--no-progress", "--threads", "1"]
    assert train_cli.main(args + ["--epochs", "1"]) == 0
    before = torch.load(tmp_path / "last.pt", weights_only=True)
    full = (tmp_path / "last.pt").stat().st_size
    assert compact(tmp_path / "last.pt") == "optimiser moments in bf16"
    assert (tmp_path / "last.pt").stat().st_size < 0.75 * full
    after = torch.load(tmp_path / "last.pt", weights_only=True)
    for k, v in before["model"].items():
        assert torch.equal(after["model"][k], v), k  # weights stay exact
    assert compact(tmp_path / "last.pt", limit=1) == "optimiser moments dropped"
    assert torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["state"] == {}
    assert train_cli.main(args + ["--epochs", "2", "--resume"]) == 0
    assert [h["epoch"] for h in torch.load(tmp_path / "last.pt", weights_only=True)["history"]] == [1, 2]


def test_fine_tuning_starts_from_the_given_weights_and_records_them(sample_dir, tmp_path, capsys):
    from lightseg_edge.models._weights import pretrained_path, sha256_file
    from lightseg_edge.train.ship import _command

    args = ["--model", "ucmnet", "--data", str(sample_dir), "--img-size", "128", "--batch-size", "2", "--no-progress",
            "--threads", "1", "--epochs", "1", "--max-train-images", "2", "--max-val-images", "2", "--lr", "1e-12"]
    assert train_cli.main(args + ["--out", str(tmp_path / "ft"), "--init-weights", "pretrained"]) == 0
    ck = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    shipped = create_model("ucmnet", pretrained=True).state_dict()
    for k, v in shipped.items():  # an LR of 1e-12 leaves the weights where they started
        torch.testing.assert_close(ck["model"][k], v, rtol=0, atol=1e-6, msg=k)
    assert ck["config"]["init_sha256"] == sha256_file(pretrained_path("ucmnet"))
    command = _command("ucmnet", ck["config"])
    assert "--init-weights ucmnet.safetensors" in command
    for given in ("--img-size 128", "--batch-size 2", "--lr 1e-12", "--max-train-images 2", "--max-val-images 2"):
        assert given in command  # every departure from the recipe, so the line reproduces the run
    assert "--seed" not in command

    assert train_cli.main(args + ["--out", str(tmp_path / "ft"), "--epochs", "2", "--resume"]) == 0  # no --init-weights now
    assert torch.load(tmp_path / "ft" / "last.pt", weights_only=True)["config"]["init_sha256"] == ck["config"]["init_sha256"]
    capsys.readouterr()
    assert train_cli.main(args + ["--out", str(tmp_path / "missing"), "--init-weights", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors: file not found" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    assert train_cli.main(args + ["--model", "unet", "--out", str(tmp_path / "u"), "--init-weights", "pretrained"]) == 2
    assert "no shipped pretrained weights" in capsys.readouterr().err
