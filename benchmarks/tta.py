"""What flip test-time augmentation buys each shipped model: mean Dice with and without ``tta="flips"`` on the
project's splits, measured side by side on the same decoded images.

    python benchmarks/tta.py --data ../shared/data/isic2018 [--splits val,test] [--models ucmnet,...] [--threads 2]
                             [--out benchmarks/results] [--merge]

Each model runs in PyTorch (fp32, eval mode) at its own input size, as ``lightseg-eval --tta flips`` does: the logits
of the image and of its horizontal, vertical and double flip, flipped back and averaged, thresholded at 0.5. The cost
is four network runs per image (``load_predictor(..., tta="flips")`` makes the same four calls; no time is measured
here). Recorded per model and split, plain and with the flips: mean Dice and IoU, the 5th percentile of the per-image
Dice and the number of images below 0.5 (the Markdown shows the mean Dice and that count). ``val`` is where a choice would be made; ``test`` confirms it.

Writes ``tta.json`` and ``tta.md`` into ``--out``. Accuracy does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

TITLE = "# Flip test-time augmentation\n\n"
KEYS = ("mdice", "miou", "dice_p5", "dice_below_0_5", "images")


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    from lightseg_edge._defaults import default_data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_dir(), help="dataset root (default: $LIGHTSEG_ISIC2018 or data/isic2018)")
    p.add_argument("--splits", default="val,test", help="comma-separated splits (train, val, test, all)")
    p.add_argument("--models", help="comma-separated (default: every model with shipped weights)")
    p.add_argument("--max-images", type=int, help="the first N images of each split (a quick look; default all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench-results")
    p.add_argument("--merge", action="store_true", help="keep the other models of an existing tta.json in --out (same data and splits)")
    return p.parse_args(argv)


def evaluate(model_name: str, splits: Dict[str, list], batch_size: int) -> Dict[str, Any]:
    """{split: {tta: metrics}} of one model's shipped weights; both TTAs on the same decoded images."""
    from torch.utils.data import DataLoader

    from lightseg_edge.data.dataset import SegmentationDataset
    from lightseg_edge.models import create_model, get_model_config
    from lightseg_edge.models._weights import pretrained_path, sha256_file
    from lightseg_edge.train.trainer import evaluate_model
    from lightseg_edge.types import TTA

    model = create_model(model_name, pretrained=True).eval()
    pre = get_model_config(model_name).preprocess
    per_split = {}
    for split, samples in splits.items():
        loader = DataLoader(SegmentationDataset(samples, pre), batch_size=batch_size)
        per_split[split] = {}
        for tta in TTA:
            m = evaluate_model(model, loader, tta=tta)
            per_split[split][tta.value] = {k: m[k] for k in KEYS}
            print(f"{model_name} {split} tta={tta.value}: mDice {m['mdice']:.4f}, p5 {m['dice_p5']:.4f}, "
                  f"below 0.5: {m['dice_below_0_5']}", file=sys.stderr, flush=True)
    return {"weights": f"shipped:{sha256_file(pretrained_path(model_name))[:12]}", "splits": per_split}


def markdown(result: Dict[str, Any]) -> str:
    """Models down; per split the mean Dice plain and with flips, its change, and the failed images."""
    splits = result["splits"]
    head = "| model | " + " | ".join(f"{s} mDice | {s} with flips | change | {s} below 0.5 (plain / flips)" for s in splits) + " |"
    lines = [f"Created {result['created']}; {', '.join(f'{s} split ({n} images)' for s, n in splits.items())} of "
             f"{result['data']}; PyTorch fp32 at each model's input size, threshold 0.5; \"with flips\": the logits "
             "averaged over the image and its three flips (4 network runs per image).", "",
             head, "|---|" + "---:|---:|---:|---:|" * len(splits)]
    for name, r in sorted(result["models"].items()):
        cells = []
        for s in splits:
            plain, flips = r["splits"][s]["none"], r["splits"][s]["flips"]
            change = round(flips["mdice"] - plain["mdice"], 4) + 0.0  # + 0.0: no "-0.0000"
            cells.append(f"{plain['mdice']:.4f} | {flips['mdice']:.4f} | {change:+.4f} | "
                         f"{plain['dice_below_0_5']} / {flips['dice_below_0_5']}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from robustness import merged, names_option, write_results

    if not args.data:
        raise SystemExit("error: no dataset: pass --data DIR or set LIGHTSEG_ISIC2018")
    import torch

    from lightseg_edge.data.dataset import subset
    from lightseg_edge.data.layouts import describe_data, detect_layout, list_samples
    from lightseg_edge.models import list_models
    from lightseg_edge.models._weights import has_pretrained

    models = names_option(args.models, [m for m in list_models() if has_pretrained(m)], "models")
    split_names = names_option(args.splits, ["train", "val", "test", "all"], "splits")
    torch.set_num_threads(args.threads)
    layout = detect_layout(args.data)
    splits = {}
    for split in split_names:
        available = list_samples(args.data, None if split == "all" else split, layout)
        splits[split] = subset(available, args.max_images)
        print(describe_data(args.data, layout, split, len(splits[split]), len(available)), file=sys.stderr, flush=True)
    result = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "data": Path(args.data).name, "splits": {s: len(v) for s, v in splits.items()},
              "models": {m: evaluate(m, splits, args.batch_size) for m in models}}
    if args.merge:
        result = merged(result, Path(args.out) / "tta.json", same=("data", "splits"))
    write_results(Path(args.out), "tta", result, TITLE + markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
