"""Turn a training run into shipped weights: safetensors inside the package plus a JSON model card.

    python -m lightseg_edge.train.ship --model ucmnet --run runs/ucmnet --data path/to/isic2018

The card's metrics are measured here, on the val and test splits, from the exact tensors that are shipped; the
README's figures are copied from the card.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Sequence

from .._atomic import write_text_atomic
from .._hashing import sha256_file
from ..cli._common import run_cli
from ..errors import LightsegError
from .interpolate import DEFAULT_ALPHAS, Selection, choose, parse_alphas, run_start
from .recipes import recipe_for


def _loader(data: str, split: str, pre):
    """One split, decoded once (the dataset decodes up front), for every evaluation that needs it."""
    from torch.utils.data import DataLoader

    from ..data.dataset import SegmentationDataset
    from ..data.layouts import list_samples

    return DataLoader(SegmentationDataset(list_samples(data, split), pre), batch_size=16)


def _shifted(loader, selection: Selection) -> dict:
    """{shift name: loader}: the unshifted val loader alone, or beside it one per acquisition shift."""
    from torch.utils.data import DataLoader

    from ..data.shifts import SHIFTS

    if selection is Selection.VAL:
        return {"none": loader}
    return {name: loader if name == "none" else DataLoader(loader.dataset.with_shift(shift), batch_size=loader.batch_size)
            for name, shift in SHIFTS.items()}


def _measure(model_name: str, weights: Path, data: str, pre, val=None) -> dict:
    """val and test metrics of the shipped tensors, as users will load them (``val``: a loader already built)."""
    from ..models import create_model
    from .trainer import evaluate_model

    shipped = create_model(model_name, checkpoint=weights).eval()
    loaders = {"val": val or _loader(data, "val", pre), "test": _loader(data, "test", pre)}
    return {split: evaluate_model(shipped, loader) for split, loader in loaders.items()}


def _write_card(card: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(card, indent=2))


def refresh_metrics(model_name: str, data: str, dest: Path) -> dict:
    """Re-measure a shipped card's metrics (e.g. after the metrics gained the Dice tail); training facts stay as they are."""
    from ..types import PreprocessConfig

    card_path = dest / f"{model_name}.json"
    card = json.loads(card_path.read_text())
    weights = dest / card["weights"]
    if sha256_file(weights) != card["sha256"]:
        raise ValueError(f"{weights}: sha256 differs from its card; ship the run again instead")
    card["metrics"] = _measure(model_name, weights, data, PreprocessConfig.from_dict(card["preprocess"]))
    card["metrics_measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_card(card, card_path)
    return card


def _command(model_name: str, config: dict) -> str:
    """The lightseg-train line that reproduces the run (its init file named as the run recorded it, sha256 beside)."""
    from .trainer import TrainConfig

    words = ["lightseg-train", "--model", model_name, "--data", "DATA", "--epochs", str(config.get("epochs"))]
    recipe = recipe_for(model_name)
    defaults = {"batch_size": recipe.batch_size, "lr": recipe.lr}  # the others: TrainConfig's (the CLI's) defaults
    for key in ("batch_size", "lr", "img_size", "seed", "max_train_images", "max_val_images"):
        default = defaults.get(key, getattr(TrainConfig, key))
        if config.get(key, default) != default:  # the run departed from the recipe or the CLI's default here
            words += ["--" + key.replace("_", "-"), str(config[key])]
    if config.get("precision", "fp32") != "fp32":
        words += ["--precision", config["precision"]]
    if config.get("low_res_epochs"):
        words += ["--progressive", f"{config['low_res']}:{config['low_res_epochs']}"]
    if config.get("init_weights"):
        words += ["--init-weights", config["init_weights"]]
    if config.get("augment", "robust") != "robust":
        words += ["--augment", config["augment"]]
    if config.get("ema"):
        words += ["--ema", str(config["ema"])]
    return " ".join(words + ["--resume"])


def _averaged(best: dict) -> str:
    decay = best["config"].get("ema")
    return f" of the trained weights and their moving average (EMA, decay {decay}): the {best.get('weights', 'trained')} weights" if decay else ""


def ship(model_name: str, run: Path, data: str, dest: Path, notes: Sequence[str] = (),
         alphas: Optional[Sequence[float]] = None, start: Optional[Path] = None, selection: Selection = Selection.VAL) -> dict:
    """Ship a run's best.pt; with ``alphas``, the WiSE-FT mixture of it and the weights the run started from with the
    best ``selection`` score (train/interpolate.py), recorded in the card."""
    import torch

    from ..data.layouts import list_samples
    from ..models import create_model
    from ..models._weights import save_safetensors
    from ..types import PreprocessConfig
    from .checkpoint import load_checkpoint

    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    if best["config"]["model"] != model_name:
        raise ValueError(f"{run}: run is for {best['config']['model']!r}, not {model_name!r}")
    pre = PreprocessConfig.from_dict(best["preprocess"])
    state, interpolation, val = best["model"], None, None
    if alphas is not None:  # before anything is written: the start may be the shipped file about to be replaced
        val = _loader(data, "val", pre)
        state, interpolation = choose(model_name, run_start(model_name, best["config"], start), state, _shifted(val, selection), alphas,
                                      selection)
        if interpolation.chosen == 0.0:  # shipping would only relabel the start's tensors with this run's card
            raise LightsegError(f"{run}: the weights it started from ({interpolation.start}) score best on {selection.describe()} "
                                f"(alpha 0): nothing shipped, {dest} unchanged")
    model = create_model(model_name)
    model.load_state_dict(state)
    dest.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors(model, dest / f"{model_name}.safetensors", model_name)

    metrics = _measure(model_name, weights, data, pre, val)
    split_csv = Path(data) / "split.csv"
    history = last["history"]
    card = {
        "model": model_name,
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "data": {
            "dataset": "ISIC 2018 Task 1 training release (2,594 images), split by the project's fixed split.csv",
            "split_file_sha256": sha256_file(split_csv) if split_csv.is_file() else None,
            "train_images": len(list_samples(data, "train")),
            "selection": "best val mDice" + _averaged(best) + (f", then the WiSE-FT mixture with the best {interpolation.selection.describe()}"
                                             if interpolation else ""),
            "evaluated_on": {s: metrics[s]["images"] for s in metrics},
        },
        "training": {
            "epochs_run": len(history),
            "best_epoch": best["epoch"] + 1,
            "config": {**best["config"], "data": Path(best["config"]["data"]).name},  # the folder's name, not this machine's path
            "recipe": best["recipe"],
            "lr_by_epoch": [h["lr"] for h in history],
            "history": history,  # every epoch: LR, train loss/Dice, val metrics, seconds (device and precision when recorded)
            "notes": list(notes),  # where the run departs from the paper's recipe, and why
            **({"interpolation": interpolation.to_dict()} if interpolation else {}),
            "seconds": round(sum(h["seconds"] for h in history)),
            "command": _command(model_name, best["config"]),
            "torch": torch.__version__,
            "shipped_on": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        },
        "preprocess": pre.to_dict(),
        "evaluation": "network resolution, sigmoid >= 0.5; mDice/mIoU per image then averaged, *_star from summed pixel counts",
        "metrics": metrics,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "licence": "weights trained on ISIC 2018 data (CC BY-NC 4.0): non-commercial use",
    }
    _write_card(card, dest / f"{model_name}.json")
    return card


def _run(argv: List[str]) -> int:
    from ..models._weights import WEIGHTS_DIR

    p = argparse.ArgumentParser(prog="python -m lightseg_edge.train.ship", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--run", type=Path, help="training output folder (best.pt, last.pt)")
    p.add_argument("--data", required=True)
    p.add_argument("--dest", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--note", action="append", default=[], help="a departure from the paper's recipe, recorded in the card (repeatable)")
    p.add_argument("--refresh-metrics", action="store_true", help="re-measure the metrics of the already shipped weights (no --run)")
    p.add_argument("--interpolate", nargs="?", const=",".join(map(str, DEFAULT_ALPHAS)), metavar="ALPHAS",
                   help="a fine-tuned run: ship the mixture (1-a)*start + a*run with the best val mDice over the comma-separated "
                        f"mixing weights a (default {','.join(map(str, DEFAULT_ALPHAS))}; 1 is the run itself)")
    p.add_argument("--interpolate-from", type=Path, help="the file the run started from, when it is not where the run recorded it")
    p.add_argument("--select", choices=[s.value for s in Selection], default=Selection.VAL.value,
                   help="--interpolate's score: val mDice (default), or its mean over the unshifted val images and every acquisition "
                        "shift (lightseg-eval --shift), for a fine-tune meant to make the model robust")
    args = p.parse_args(argv)
    if args.refresh_metrics == bool(args.run):
        p.error("give either --run DIR (ship a run) or --refresh-metrics (re-measure shipped weights)")
    if args.interpolate_from and args.interpolate is None:
        p.error("--interpolate-from: give --interpolate too")
    if args.select != Selection.VAL.value and args.interpolate is None:
        p.error("--select: chooses among --interpolate's mixtures; give --interpolate too")
    alphas = None
    if args.interpolate is not None:
        try:
            alphas = parse_alphas(args.interpolate)
        except ValueError as exc:
            p.error(str(exc))
    card = (refresh_metrics(args.model, args.data, args.dest) if args.refresh_metrics
            else ship(args.model, args.run, args.data, args.dest, args.note, alphas, args.interpolate_from, Selection(args.select)))
    for split, m in card["metrics"].items():
        print(f"{split}: mDice {m['mdice']:.4f}  mIoU {m['miou']:.4f}  Dice* {m['dice_star']:.4f}  IoU* {m['iou_star']:.4f}  ({m['images']} images)")
    print(f"shipped {args.dest / card['weights']} (sha256 {card['sha256'][:16]}...)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv, keep_memory=True)


if __name__ == "__main__":
    raise SystemExit(main())
