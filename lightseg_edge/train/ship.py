"""Turn a training run into shipped weights: safetensors inside the package plus a JSON model card.

    python -m lightseg_edge.train.ship --model ucmnet --run runs/ucmnet --data ../shared/data/isic2018

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
from typing import List, Optional

from .._hashing import sha256_file
from ..cli._common import run_cli


def ship(model_name: str, run: Path, data: str, dest: Path) -> dict:
    import torch
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from ..data.dataset import SegmentationDataset
    from ..data.layouts import list_samples
    from ..models import create_model
    from ..types import PreprocessConfig
    from .checkpoint import load_checkpoint
    from .trainer import evaluate_model

    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    if best["config"]["model"] != model_name:
        raise ValueError(f"{run}: run is for {best['config']['model']!r}, not {model_name!r}")
    model = create_model(model_name)
    model.load_state_dict(best["model"])
    dest.mkdir(parents=True, exist_ok=True)
    weights = dest / f"{model_name}.safetensors"
    tmp = dest / f".{weights.name}.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"model": model_name})
    os.replace(tmp, weights)

    pre = PreprocessConfig.from_dict(best["preprocess"])
    shipped = create_model(model_name, checkpoint=weights).eval()  # evaluate what users will load
    metrics = {}
    for split in ("val", "test"):
        ds = SegmentationDataset(list_samples(data, split), pre)
        metrics[split] = evaluate_model(shipped, DataLoader(ds, batch_size=16))
    split_csv = Path(data) / "split.csv"
    history = last["history"]
    card = {
        "model": model_name,
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "data": {
            "dataset": "ISIC 2018 Task 1 training release, this project's 512x512 copy (shared/data/isic2018)",
            "split_file_sha256": sha256_file(split_csv) if split_csv.is_file() else None,
            "train_images": len(list_samples(data, "train")),
            "selection": "best val mDice",
            "evaluated_on": {s: metrics[s]["images"] for s in metrics},
        },
        "training": {
            "epochs_run": len(history),
            "best_epoch": best["epoch"] + 1,
            "config": best["config"],
            "recipe": best["recipe"],
            "lr_by_epoch": [h["lr"] for h in history],
            "seconds": round(sum(h["seconds"] for h in history)),
            "command": f"lightseg-train --model {model_name} --data DATA --epochs {best['config'].get('epochs')} --resume",
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        },
        "preprocess": pre.to_dict(),
        "evaluation": "network resolution, sigmoid >= 0.5; mDice/mIoU per image then averaged, *_star from summed pixel counts",
        "metrics": metrics,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "licence": "weights trained on ISIC 2018 data (CC BY-NC 4.0): non-commercial use",
    }
    card_path = dest / f"{model_name}.json"
    tmp = dest / f".{card_path.name}.tmp"
    tmp.write_text(json.dumps(card, indent=2))
    os.replace(tmp, card_path)
    return card


def _run(argv: List[str]) -> int:
    from ..models._weights import WEIGHTS_DIR

    p = argparse.ArgumentParser(prog="python -m lightseg_edge.train.ship", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--run", required=True, type=Path, help="training output folder (best.pt, last.pt)")
    p.add_argument("--data", required=True)
    p.add_argument("--dest", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    card = ship(args.model, args.run, args.data, args.dest)
    for split, m in card["metrics"].items():
        print(f"{split}: mDice {m['mdice']:.4f}  mIoU {m['miou']:.4f}  Dice* {m['dice_star']:.4f}  IoU* {m['iou_star']:.4f}  ({m['images']} images)")
    print(f"shipped {args.dest / card['weights']} (sha256 {card['sha256'][:16]}...)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
