"""Accuracy under fixed acquisition shifts: every shipped model on one split, once per shift of
``lightseg_edge.data.shifts`` (darker and brighter exposure, colour casts, lower contrast and saturation, blur, a
quarter of the resolution, JPEG artefacts, another scale, a dermoscope's round field of view).

    python benchmarks/robustness.py --data ../shared/data/isic2018 [--split test] [--models ucmnet,...]
                                    [--shifts dark,blur,...] [--threads 2] [--out benchmarks/results]

Each model runs in PyTorch (fp32, eval mode) at its own input size on the split's images, decoded and resized once
and then shifted (``lightseg-eval --shift NAME`` gives any one of these figures on its own). Reported per model and
shift: mean Dice, the 5th percentile of the per-image Dice and the number of images below 0.5. A shift is a proxy for
another collection, not a substitute: ``lightseg-eval --data OTHER --split all`` measures a real one.

Writes ``robustness.json`` and ``robustness.md`` into ``--out``. Accuracy does not depend on the machine's load, so
nothing needs to be paused while it runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

TITLE = "# Accuracy under fixed acquisition shifts\n\n"


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    from lightseg_edge._defaults import default_data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=default_data_dir(), help="dataset root (default: $LIGHTSEG_ISIC2018 or data/isic2018)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--models", help="comma-separated (default: every model with shipped weights)")
    p.add_argument("--shifts", help="comma-separated (default: all of them)")
    p.add_argument("--max-images", type=int, help="the first N images of the split (a quick look; default all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench-results")
    p.add_argument("--merge", action="store_true",
                   help="keep the other models of an existing robustness.json in --out (same data, split, images and shifts)")
    return p.parse_args(argv)


def names_option(text: Optional[str], every: List[str], what: str) -> List[str]:
    """The comma-separated names of ``--what`` (all of ``every`` when empty); an unknown one ends the script."""
    names = [n.strip() for n in text.split(",") if n.strip()] if text else every
    unknown = [n for n in names if n not in every]
    if unknown:
        raise SystemExit(f"error: --{what}: unknown {', '.join(unknown)}; expected some of {', '.join(every)}")
    return names


def evaluate(model_name: str, samples, shifts: List[str], batch_size: int) -> Dict[str, Any]:
    """{shift: metrics} of one model's shipped weights, each shift applied to the same decoded images."""
    from torch.utils.data import DataLoader

    from lightseg_edge.data.dataset import SegmentationDataset
    from lightseg_edge.data.shifts import get_shift
    from lightseg_edge.models import create_model, get_model_config
    from lightseg_edge.models._weights import pretrained_path, sha256_file
    from lightseg_edge.train.trainer import evaluate_model

    model = create_model(model_name, pretrained=True).eval()
    base = SegmentationDataset(samples, get_model_config(model_name).preprocess)
    per_shift = {}
    for name in shifts:
        m = evaluate_model(model, DataLoader(base.with_shift(get_shift(name)), batch_size=batch_size))
        per_shift[name] = {k: m[k] for k in ("mdice", "miou", "dice_p5", "dice_below_0_5", "images")}
        print(f"{model_name} {name}: mDice {m['mdice']:.4f}, p5 {m['dice_p5']:.4f}, below 0.5: {m['dice_below_0_5']}",
              file=sys.stderr, flush=True)
    return {"weights": f"shipped:{sha256_file(pretrained_path(model_name))[:12]}", "shifts": per_shift}


def merged(result: Dict[str, Any], path: Path, same: Tuple[str, ...] = ("data", "split", "images", "shift_notes")) -> Dict[str, Any]:
    """``result`` with the models of the run in ``path`` that this run did not measure, when both measured alike
    (the same values under the keys ``same``)."""
    if not path.is_file():
        return result
    old = json.loads(path.read_text(encoding="utf-8"))
    if any(old.get(k) != result[k] for k in same):
        raise SystemExit(f"error: --merge: {path} was measured otherwise ({', '.join(same)}); drop --merge to replace it")
    return {**result, "models": {**old["models"], **result["models"]}}


def markdown(result: Dict[str, Any]) -> str:
    """Shifts down, models across: mean Dice (change against no shift), then the mean and the worst over shifts."""
    models, shifts = result["models"], result["shift_notes"]
    names = sorted(models)
    lines = [f"Created {result['created']}; {result['split']} split of {result['data']} ({result['images']} images); "
             "PyTorch fp32 at each model's input size; mean Dice per image, threshold 0.5, and in brackets the change "
             "against the unshifted images.", "",
             "| shift | what | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|---|" + "---:|" * len(names)]
    for shift, what in shifts.items():
        cells = []
        for n in names:
            d = models[n]["shifts"][shift]["mdice"]
            base = models[n]["shifts"].get("none", {}).get("mdice")
            change = "" if shift == "none" or base is None else f" ({round(d - base, 4) + 0.0:+.4f})"  # + 0.0: no "-0.0000"
            cells.append(f"{d:.4f}{change}")
        lines.append(f"| {shift} | {what} | " + " | ".join(cells) + " |")
    shifted = [s for s in shifts if s != "none"]
    if shifted:
        mean = [statistics.mean(models[n]["shifts"][s]["mdice"] for s in shifted) for n in names]
        worst = [min((models[n]["shifts"][s]["mdice"], s) for s in shifted) for n in names]
        lines.append("| mean over shifts | | " + " | ".join(f"{v:.4f}" for v in mean) + " |")
        lines.append("| worst shift | | " + " | ".join(f"{v:.4f} ({s})" for v, s in worst) + " |")
    lines += ["", "Images below 0.5 Dice under each shift (failures a clinic would see):", "",
              "| shift | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---:|" * len(names)]
    for shift in shifts:
        lines.append(f"| {shift} | " + " | ".join(str(models[n]["shifts"][shift]["dice_below_0_5"]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    if not args.data:
        raise SystemExit("error: no dataset: pass --data DIR or set LIGHTSEG_ISIC2018")
    import torch

    from lightseg_edge.data.dataset import subset
    from lightseg_edge.data.layouts import describe_data, detect_layout, list_samples
    from lightseg_edge.data.shifts import SHIFTS
    from lightseg_edge.models import list_models
    from lightseg_edge.models._weights import has_pretrained
    from lightseg_edge.train.allocator import keep_freed_memory

    models = names_option(args.models, [m for m in list_models() if has_pretrained(m)], "models")
    shifts = names_option(args.shifts, list(SHIFTS), "shifts")
    if "none" not in shifts:
        shifts.insert(0, "none")  # every change is against the unshifted images
    torch.set_num_threads(args.threads)
    if argv is None:  # run as a script: the process only evaluates, so it may keep its peak memory for reuse
        print(keep_freed_memory(), file=sys.stderr)
    layout = detect_layout(args.data)
    available = list_samples(args.data, None if args.split == "all" else args.split, layout)
    samples = subset(available, args.max_images)
    print(describe_data(args.data, layout, args.split, len(samples), len(available)), file=sys.stderr, flush=True)
    result = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "data": Path(args.data).name, "split": args.split, "images": len(samples),
              "shift_notes": {s: SHIFTS[s].what for s in shifts},
              "models": {m: evaluate(m, samples, shifts, args.batch_size) for m in models}}
    out = Path(args.out)
    if args.merge:
        result = merged(result, out / "robustness.json")
    write_results(out, "robustness", result, TITLE + markdown(result))
    return 0


def write_results(out: Path, stem: str, result: Dict[str, Any], text: str) -> None:
    """``out/STEM.json`` and ``out/STEM.md``, each written atomically, and the Markdown on stdout."""
    from lightseg_edge.bench.report import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{stem}.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(out / f"{stem}.md", text.encode())
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
