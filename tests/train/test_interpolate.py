"""WiSE-FT shipping: a fine-tuned run mixed with the weights it started from, the mixture chosen on val and recorded."""

from __future__ import annotations

import json

import pytest
import torch

from lightseg_edge.cli import train as train_cli
from lightseg_edge.errors import CheckpointError
from lightseg_edge.models import create_model
from lightseg_edge.models._weights import pretrained_path, read_state_dict, sha256_file
from lightseg_edge.train import ship as ship_cli
from lightseg_edge.train.interpolate import check_alphas, lerp_state


@pytest.fixture(scope="module")
def tuned_run(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wise") / "ft"
    args = ["--model", "ucmnet", "--data", str(sample_dir), "--out", str(out), "--img-size", "128", "--batch-size", "2",
            "--no-progress", "--threads", "1", "--epochs", "1", "--max-train-images", "2", "--init-weights", "pretrained"]
    assert train_cli.main(args) == 0
    return out


def test_lerp_state_mixes_floats_and_keeps_counts():
    a = {"w": torch.zeros(3), "n": torch.tensor(5)}
    b = {"w": torch.ones(3), "n": torch.tensor(9)}
    mixed = lerp_state(a, b, 0.25)
    assert torch.equal(mixed["w"], torch.full((3,), 0.25)) and int(mixed["n"]) == 9
    with pytest.raises(CheckpointError, match="differ"):
        lerp_state(a, {"w": torch.ones(3)}, 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_alphas([0.5, 1.5])


def test_ship_interpolated_records_the_choice(tuned_run, sample_dir, tmp_path, capsys):
    dest = tmp_path / "weights"
    assert ship_cli.main(["--model", "ucmnet", "--run", str(tuned_run), "--data", str(sample_dir), "--dest", str(dest),
                          "--interpolate", "0,0.5,1"]) == 0
    card = json.loads((dest / "ucmnet.json").read_text())
    rec = card["training"]["interpolation"]
    assert rec["start"] == "ucmnet.safetensors" and rec["start_sha256"] == sha256_file(pretrained_path("ucmnet"))
    scores = {r["alpha"]: r["val_mdice"] for r in rec["val_mdice_by_alpha"]}
    assert set(scores) == {0.0, 0.5, 1.0} and scores[rec["chosen_alpha"]] == max(scores.values())
    assert "WiSE-FT" in card["data"]["selection"]
    # the shipped tensors are that mixture, and the card's val metric is measured on them
    expected = lerp_state(read_state_dict(pretrained_path("ucmnet")), torch.load(tuned_run / "best.pt", weights_only=True)["model"], rec["chosen_alpha"])
    shipped = create_model("ucmnet", checkpoint=dest / "ucmnet.safetensors").state_dict()
    for k, v in shipped.items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0, msg=k)
    assert card["metrics"]["val"]["mdice"] == pytest.approx(scores[rec["chosen_alpha"]])
    assert "interpolate: alpha 0.50" in capsys.readouterr().out


def test_interpolating_from_the_wrong_start_writes_nothing(tuned_run, sample_dir, tmp_path, capsys):
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({k: v + 1 for k, v in read_state_dict(pretrained_path("ucmnet")).items()}, str(other))
    dest = tmp_path / "weights"
    assert ship_cli.main(["--model", "ucmnet", "--run", str(tuned_run), "--data", str(sample_dir), "--dest", str(dest),
                          "--interpolate", "--interpolate-from", str(other)]) == 2
    err = capsys.readouterr().err
    assert "other.safetensors is another file now" in err and not dest.exists()
    with pytest.raises(SystemExit) as bad:  # argparse's usage error: exit status 2
        ship_cli.main(["--model", "ucmnet", "--run", str(tuned_run), "--data", str(sample_dir), "--interpolate", "0,2"])
    assert bad.value.code == 2 and "--interpolate: expected mixing weights in [0, 1]" in capsys.readouterr().err


def test_a_run_from_scratch_has_nothing_to_interpolate(sample_dir, tmp_path, capsys):
    out = tmp_path / "scratch"
    assert train_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--out", str(out), "--img-size", "128", "--batch-size", "2",
                           "--no-progress", "--threads", "1", "--epochs", "1", "--max-train-images", "2"]) == 0
    assert ship_cli.main(["--model", "ucmnet", "--run", str(out), "--data", str(sample_dir), "--dest", str(tmp_path / "w"), "--interpolate"]) == 2
    assert "not fine-tuned" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_ship_selects_on_val_under_the_shifts(sample_dir, tmp_path, capsys):
    from lightseg_edge.data.shifts import SHIFTS

    run = tmp_path / "derm"
    assert train_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--out", str(run), "--img-size", "128", "--batch-size", "2",
                           "--no-progress", "--threads", "1", "--epochs", "1", "--max-train-images", "2", "--init-weights", "pretrained",
                           "--augment", "dermoscope"]) == 0
    dest = tmp_path / "weights"
    assert ship_cli.main(["--model", "ucmnet", "--run", str(run), "--data", str(sample_dir), "--dest", str(dest),
                          "--interpolate", "0,1", "--select", "val-shifts"]) == 0
    card = json.loads((dest / "ucmnet.json").read_text())
    rec = card["training"]["interpolation"]
    assert rec["selection"] == "val-shifts" and "every acquisition shift" in card["data"]["selection"]
    for r in rec["val_mdice_by_alpha"]:
        assert set(r["val_mdice_by_shift"]) == set(SHIFTS) and r["val_mdice"] == r["val_mdice_by_shift"]["none"]
        assert r["score"] == pytest.approx(sum(r["val_mdice_by_shift"].values()) / len(SHIFTS))
    best = max(rec["val_mdice_by_alpha"], key=lambda r: (r["score"], r["alpha"]))
    assert rec["chosen_alpha"] == best["alpha"]
    assert card["training"]["command"].endswith("--init-weights ucmnet.safetensors --augment dermoscope --resume")
    assert f"mean with the {len(SHIFTS) - 1} shifts" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        ship_cli.main(["--model", "ucmnet", "--run", str(run), "--data", str(sample_dir), "--select", "val-shifts"])
    assert bad.value.code == 2 and "give --interpolate too" in capsys.readouterr().err


def test_a_run_that_loses_to_its_start_is_not_shipped(sample_dir, tmp_path, capsys):
    run = tmp_path / "worse"
    assert train_cli.main(["--model", "ucmnet", "--data", str(sample_dir), "--out", str(run), "--img-size", "128", "--batch-size", "2",
                           "--no-progress", "--threads", "1", "--epochs", "1", "--max-train-images", "2", "--init-weights", "pretrained",
                           "--lr", "1"]) == 0  # one AdamW step at LR 1 moves every weight by about 1: far worse than the start
    dest = tmp_path / "weights"
    capsys.readouterr()
    assert ship_cli.main(["--model", "ucmnet", "--run", str(run), "--data", str(sample_dir), "--dest", str(dest), "--interpolate", "0,1"]) == 2
    captured = capsys.readouterr()
    assert "interpolate: alpha 0.00" in captured.out
    assert "the weights it started from (ucmnet.safetensors) score best on val mDice (alpha 0): nothing shipped" in captured.err
    assert not dest.exists()
