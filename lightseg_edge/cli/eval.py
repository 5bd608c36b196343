"""lightseg-eval: every metric of a model on a dataset split, with overlays of the best and worst cases."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import List, Optional, Tuple

from ._common import (batch_size, check_model, default_data_dir, existing_dir, existing_file, img_size, output_dir, positive_int, probability,
                      run_cli, thread_count)


DEFAULT_OVERLAYS = 20


def _overlay_spec(text: str) -> Tuple[int, int]:
    """(worst, best) counts from 'worst', 'worst:K', 'best:K' or 'K'."""
    kind, _, count = text.partition(":")
    try:
        if kind.isdigit() and not count:
            return int(kind), int(kind)
        k = int(count) if count else DEFAULT_OVERLAYS
        if kind in ("worst", "best") and k > 0:
            return (k, 0) if kind == "worst" else (0, k)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected 'worst', 'worst:K', 'best:K' or K (K a positive integer), got {text!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-eval", description=__doc__)
    p.add_argument("--model", required=True, help="registry name (see lightseg_edge.list_models())")
    p.add_argument("--weights", type=existing_file, help="trainer checkpoint or .safetensors (default: the shipped pretrained weights)")
    p.add_argument("--data", type=existing_dir, default=default_data_dir(), help="dataset root (layout auto-detected)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="'all' for a collection used only for testing (PH2, another clinic's folder)")
    p.add_argument("--img-size", type=img_size, help="square network input size (default: the model's)")
    p.add_argument("--batch-size", type=batch_size, default=16)
    p.add_argument("--threshold", type=probability, default=0.5)
    p.add_argument("--max-images", type=positive_int)
    p.add_argument("--out", type=output_dir, help="write metrics.json, per_image.csv and overlays/ here")
    p.add_argument("--overlays", type=_overlay_spec, metavar="SPEC",
                   help=f"save overlays (with --out): 'worst' (the {DEFAULT_OVERLAYS} worst), 'worst:K', 'best:K', or K (K best and K worst)")
    p.add_argument("--threads", type=thread_count)
    return p


def _write_outputs(out: Path, report: dict, acc, samples, ds, preds, overlays: Optional[Tuple[int, int]]) -> None:
    """metrics.json, per_image.csv and the chosen overlays, each written atomically."""
    from .._atomic import make_dir, remove_stale_temporaries, write_text_atomic
    from ..data.io import write_png_atomic
    from ..data.overlay import draw_contours

    make_dir(out, "--out")
    remove_stale_temporaries(out)  # what a killed run's atomic writes left behind
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))
    rows = sorted(zip(acc.per_image_dice, acc.per_image_iou, range(len(samples))))
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["case_id", "dice", "iou"])
    w.writerows((samples[i].case_id, f"{d:.4f}", f"{j:.4f}") for d, j, i in sorted(rows, key=lambda r: r[2]))
    write_text_atomic(out / "per_image.csv", text.getvalue())
    if overlays:
        folder = make_dir(out / "overlays", "--out")
        n_worst, n_best = overlays
        chosen = [("worst", r) for r in rows[:n_worst]] + [("best", r) for r in rows[len(rows) - n_best:]]
        for tag, (d, _, i) in chosen:
            img = draw_contours(ds.images[i], preds[i], ds.masks[i])
            write_png_atomic(folder / f"{tag}_{samples[i].case_id}_dice{d:.3f}.png", img)
    print(f"wrote {out / 'metrics.json'}")


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    import torch
    from torch.utils.data import DataLoader

    from ..data.dataset import SegmentationDataset, subset
    from ..data.layouts import list_samples
    from ..errors import DataError
    from ..export.config import check_img_size
    from ..models import create_model
    from ..models._weights import pretrained_path, sha256_file
    from ..train.metrics import MetricAccumulator
    from ..train.trainer import predict_masks

    if not args.data:
        raise DataError("no dataset: pass --data DIR or set LIGHTSEG_ISIC2018")
    if args.overlays and not args.out:
        _parser().error("--overlays: needs --out DIR to write the overlays to")
    cfg = check_model(args.model)
    pre = cfg.preprocess
    if args.img_size:
        check_img_size(args.img_size, args.model, cfg.stride, min_size=cfg.min_size)
        pre = type(pre)(size=(args.img_size, args.img_size), mode=pre.mode, mean=pre.mean, std=pre.std)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else pretrained_path(args.model)
    model = create_model(args.model, checkpoint=weights).eval()
    samples = subset(list_samples(args.data, None if args.split == "all" else args.split), args.max_images)
    ds = SegmentationDataset(samples, pre)
    acc = MetricAccumulator()
    preds = []
    for pred, gt in predict_masks(model, DataLoader(ds, batch_size=args.batch_size), args.threshold):
        acc.update(pred, gt)
        preds.append(pred)
    metrics = acc.compute()
    report = {"model": args.model, "weights": str(weights), "weights_sha256": sha256_file(weights), "data": str(args.data),
              "split": args.split, "threshold": args.threshold, "resolution": list(pre.size), "metrics": metrics}
    print(f"{args.model} on {args.split} ({metrics['images']} images, {pre.size[0]}x{pre.size[1]}):")
    for k in ("mdice", "miou", "dice_star", "iou_star", "accuracy", "sensitivity", "specificity", "fwiou"):
        print(f"  {k:12s} {metrics[k]:.4f}")
    n = metrics["images"]
    print(f"  per-image Dice: p5 {metrics['dice_p5']:.4f}  p10 {metrics['dice_p10']:.4f}  median {metrics['dice_median']:.4f}  "
          f"below 0.5: {metrics['dice_below_0_5']} of {n} ({100 * metrics['dice_below_0_5'] / n:.1f}%)")
    if args.out:
        _write_outputs(Path(args.out), report, acc, samples, ds, preds, args.overlays)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
