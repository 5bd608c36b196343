"""The moving average of the weights: its arithmetic, its checkpoint forms, and a real run that validates and ships it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lightseg_edge.cli import train as train_cli
from lightseg_edge.errors import CheckpointError, LightsegError
from lightseg_edge.train.checkpoint import STEPS, compact
from lightseg_edge.train.ema import WeightEMA, check_decay
from lightseg_edge.train.ship import ship


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))


def _step(net: nn.Module) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()(torch.randn(2, 3, 5, 5))  # moves BatchNorm's running statistics and its batch counter


def test_the_average_follows_the_warmed_up_decay_over_weights_and_buffers():
    net, decay = _net(), 0.5
    ema = WeightEMA(net, decay)
    ema.update(net)  # the first update copies
    expected = {k: v.clone().double() for k, v in net.state_dict().items()}
    for n in range(1, 6):
        _step(net)
        ema.update(net)
        d = min(decay, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    assert ema.updates == 6
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v.double(), expected[k], rtol=0, atol=1e-6, msg=k)
    assert not torch.equal(ema.module.state_dict()["1.running_mean"], net.state_dict()["1.running_mean"])  # averaged, not copied


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 2.0, float("nan")])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(LightsegError, match="--ema"):
        check_decay(decay)


def test_state_round_trips_exactly_and_as_a_bf16_difference():
    net = _net()
    ema = WeightEMA(net, 0.9)
    for _ in range(4):
        ema.update(net)
        _step(net)
    state, weights = ema.state(), {k: v.clone() for k, v in net.state_dict().items()}
    fresh = WeightEMA(_net(), 0.9)
    fresh.load(state, weights)
    assert fresh.updates == ema.updates
    for k, v in ema.module.state_dict().items():
        assert torch.equal(fresh.module.state_dict()[k], v), k
    delta = {**state, "delta": "bf16",
             "model": {k: (v - weights[k]).to(torch.bfloat16) if v.is_floating_point() else v for k, v in state["model"].items()}}
    fresh.load(delta, weights)
    for k, v in ema.module.state_dict().items():
        gap = (v - weights[k]).abs().max() if v.is_floating_point() else 0
        torch.testing.assert_close(fresh.module.state_dict()[k].double(), v.double(), rtol=0, atol=float(gap) / 128 + 1e-12, msg=k)
    with pytest.raises(CheckpointError, match="weight average does not fit"):
        WeightEMA(nn.Sequential(nn.Conv2d(3, 5, 1)), 0.9).load(state, weights)


def _args(sample_dir, out, *more):
    return ["--model", "ucmnet", "--data", str(sample_dir), "--out", str(out), "--img-size", "128", "--batch-size", "2",
            "--no-progress", "--threads", "1", "--device", "cpu", *more]


def test_a_run_with_ema_validates_both_and_best_holds_the_winner(sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(_args(sample_dir, out, "--epochs", "2", "--ema", "0.9")) == 0
    printed = capsys.readouterr().out
    assert "EMA val mDice" in printed
    last, best = (torch.load(out / name, weights_only=True) for name in ("last.pt", "best.pt"))
    assert last["ema"]["decay"] == 0.9 and last["ema"]["updates"] == 2 * 2  # 4 train images, batch 2, 2 epochs
    row = last["history"][best["epoch"]]
    scores = {"trained": row["val_mdice"], "ema": row["val_mdice_ema"]}
    assert best["weights"] in scores and scores[best["weights"]] == max(scores.values()) == best["val"]["mdice"]
    if best["epoch"] == 1:  # the last epoch won: best.pt holds exactly the weights last.pt has for the winner
        source = last["ema"]["model"] if best["weights"] == "ema" else last["model"]
        assert all(torch.equal(best["model"][k], v) for k, v in source.items())
    card = ship("ucmnet", out, str(sample_dir), tmp_path / "weights")
    assert "moving average (EMA, decay 0.9)" in card["data"]["selection"] and "--ema 0.9" in card["training"]["command"]
    assert json.loads((tmp_path / "weights" / "ucmnet.json").read_text())["training"]["history"][0]["val_mdice_ema"] == last["history"][0]["val_mdice_ema"]


def test_an_interrupted_run_resumes_its_average_and_a_run_without_one_starts_it(sample_dir, tmp_path, capsys):
    assert train_cli.main(_args(sample_dir, tmp_path / "a", "--epochs", "2", "--ema", "0.9")) == 0
    assert train_cli.main(_args(sample_dir, tmp_path / "b", "--epochs", "2", "--ema", "0.9", "--max-minutes", "0")) == 0
    assert train_cli.main(_args(sample_dir, tmp_path / "b", "--epochs", "2", "--ema", "0.9", "--resume")) == 0
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True)["ema"] for r in "ab")
    assert a["updates"] == b["updates"]
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=1e-6, msg=k)

    assert train_cli.main(_args(sample_dir, tmp_path / "c", "--epochs", "1")) == 0
    capsys.readouterr()
    assert train_cli.main(_args(sample_dir, tmp_path / "c", "--epochs", "2", "--ema", "0.9", "--resume")) == 0
    assert "ema: the weight average starts here from the resumed weights" in capsys.readouterr().out
    c = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    assert c["ema"]["updates"] == 2 and "val_mdice_ema" not in c["history"][0] and "val_mdice_ema" in c["history"][1]

    assert train_cli.main(_args(sample_dir, tmp_path / "c", "--epochs", "3", "--resume")) == 0  # --ema left out
    assert "ema: the run's weight average is dropped (no --ema)" in capsys.readouterr().out
    assert "ema" not in torch.load(tmp_path / "c" / "last.pt", weights_only=True)


def test_compacted_average_resumes_close_to_the_original(sample_dir, tmp_path):
    path = tmp_path / "last.pt"
    assert train_cli.main(_args(sample_dir, tmp_path, "--epochs", "1", "--ema", "0.9")) == 0
    before = torch.load(path, weights_only=True)
    assert compact(path, limit=1, steps=STEPS[:3]) == ("optimiser moments in bf16, weight average as a bf16 difference, "
                                                       "optimiser moments dropped")
    after = torch.load(path, weights_only=True)
    assert after["ema"]["delta"] == "bf16" and after["optimizer"]["state"] == {}
    restored = WeightEMA(_ucmnet(), 0.9)
    restored.load(after["ema"], after["model"])
    for k, v in before["ema"]["model"].items():
        gap = float((v - before["model"][k]).abs().max()) if v.is_floating_point() else 0.0
        torch.testing.assert_close(restored.module.state_dict()[k], v, rtol=0, atol=gap / 128 + 1e-12, msg=k)
    assert train_cli.main(_args(sample_dir, tmp_path, "--epochs", "2", "--ema", "0.9", "--resume")) == 0
    assert math.isfinite(torch.load(path, weights_only=True)["history"][1]["val_mdice_ema"])


def _ucmnet() -> nn.Module:
    from lightseg_edge.models import create_model

    return create_model("ucmnet")


def test_compaction_drops_the_average_last_and_a_resume_restarts_it(sample_dir, tmp_path, capsys):
    path = tmp_path / "last.pt"
    assert train_cli.main(_args(sample_dir, tmp_path, "--epochs", "1", "--ema", "0.9")) == 0
    assert compact(path, limit=1).endswith("optimiser moments dropped, weight average dropped")
    assert "ema" not in torch.load(path, weights_only=True)
    capsys.readouterr()
    assert train_cli.main(_args(sample_dir, tmp_path, "--epochs", "2", "--ema", "0.9", "--resume")) == 0
    assert "ema: the weight average starts here from the resumed weights" in capsys.readouterr().out
