"""Training precision: ``auto`` takes bf16 only where the device computes it natively."""

from __future__ import annotations

import pytest
import torch

from lightseg_edge.cli import train as train_cli
from lightseg_edge.train import device as train_device
from lightseg_edge.types import TrainPrecision


@pytest.mark.parametrize("native,expected", [(True, TrainPrecision.BF16), (False, TrainPrecision.FP32)])
def test_auto_takes_bf16_only_where_it_is_native(monkeypatch, capsys, native, expected):
    monkeypatch.setattr(train_device, "native_bf16", lambda device: native)
    assert train_device.resolve_precision(TrainPrecision.AUTO, torch.device("cpu")) is expected
    assert f"auto -> {expected.value}" in capsys.readouterr().out


def test_explicit_bf16_is_kept_and_an_emulated_one_is_said(monkeypatch, capsys):
    for native in (True, False):
        monkeypatch.setattr(train_device, "native_bf16", lambda device: native)
        assert train_device.resolve_precision("bf16", torch.device("cpu")) is TrainPrecision.BF16
        assert ("emulated" in capsys.readouterr().out) is not native


def test_a_run_records_the_precision_auto_chose(sample_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--model", "malunet", "--data", str(sample_dir), "--out", str(out), "--img-size", "64", "--batch-size", "2",
            "--no-progress", "--device", "cpu", "--precision", "auto", "--threads", "1", "--epochs", "1"]
    assert train_cli.main(args) == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    chosen = "bf16" if train_device.native_bf16(torch.device("cpu")) else "fp32"
    assert [h["precision"] for h in ck["history"]] == [chosen]
    assert ck["config"]["precision"] == "auto"  # the request, so the recorded command reproduces on any machine
