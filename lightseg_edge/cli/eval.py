"""lightseg-eval: every metric of a model on a dataset split, with overlays of the best and worst cases."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import List, Optional, Tuple

from .._progress import progress_bar
from ..data.shifts import get_shift, shift_names
from ..types import TTA
from ._common import (add_tta_argument, batch_size, check_model, default_data_dir, existing_dir, existing_file, img_size, output_dir,
                      positive_int, probability, run_cli, thread_count)


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
    p.add_argument("--shift", default="none", choices=shift_names(),
                   help="evaluate under a fixed acquisition shift (darker, colour cast, blur, lower resolution, JPEG, "
                        "another scale, a round field of view): a robustness check on the same images")
    add_tta_argument(p)
    p.add_argument("--out", type=output_dir, help="write metrics.json, per_image.csv and overlays/ here")
    p.add_argument("--overlays", type=_overlay_spec, metavar="SPEC",
                   help=f"save overlays (with --out): 'worst' (the {DEFAULT_OVERLAYS} worst), 'worst:K', 'best:K', or K (K best and K worst)")
    p.add_argument("--threads", type=thread_count)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _overlay(predictor, sample, dice: float):
    """The image at its own resolution with the predicted and true lesion outlines and a legend. The mask comes from
    the predictor's own post-processing (logits resized to the image, then thresholded), as lightseg-predict writes it;
    the Dice in the legend is the metric's, at network resolution, as in per_image.csv."""
    from ..data.io import read_image, read_mask
    from ..data.overlay import GT_COLOR, PRED_COLOR, draw_contours, draw_legend

    image = read_image(sample.image)
    drawn = draw_contours(image, predictor.predict(image, name=str(sample.image)), read_mask(sample.mask))
    return draw_legend(drawn, [(PRED_COLOR, "prediction"), (GT_COLOR, "ground truth"), (None, f"Dice {dice:.3f}")])


def _write_overlays(folder: Path, chosen: List[Tuple[str, float, int]], samples, predictor, progress: bool) -> None:
    from ..data.io import write_png_atomic

    with progress_bar(len(chosen), "overlays", enabled=progress) as bar:
        for tag, d, i in chosen:
            write_png_atomic(folder / f"{tag}_{samples[i].case_id}_dice{d:.3f}.png", _overlay(predictor, samples[i], d))
            bar.update(1)


def _write_outputs(out: Path, report: dict, acc, samples) -> None:
    """metrics.json and per_image.csv, each written atomically."""
    from .._atomic import make_dir, remove_stale_temporaries, write_text_atomic

    make_dir(out, "--out")
    remove_stale_temporaries(out)  # what a killed run's atomic writes left behind
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["case_id", "dice", "iou"])
    w.writerows((s.case_id, f"{d:.4f}", f"{j:.4f}") for s, d, j in zip(samples, acc.per_image_dice, acc.per_image_iou))
    write_text_atomic(out / "per_image.csv", text.getvalue())


def _chosen(acc, overlays: Tuple[int, int]) -> List[Tuple[str, float, int]]:
    """(tag, Dice, sample index) of the ``overlays`` = (worst, best) counts of cases, by per-image Dice."""
    ranked = sorted(zip(acc.per_image_dice, range(len(acc.per_image_dice))))
    n_worst, n_best = overlays
    return [("worst", d, i) for d, i in ranked[:n_worst]] + [("best", d, i) for d, i in ranked[len(ranked) - n_best:]]


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    import torch
    from torch.utils.data import DataLoader

    from .._atomic import make_dir
    from ..data.dataset import SegmentationDataset, subset
    from ..data.layouts import describe_data, detect_layout, list_samples
    from ..errors import DataError
    from ..export.config import check_img_size
    from ..models import create_model
    from ..models._weights import pretrained_path, sha256_file
    from ..runtimes.pytorch_backend import PyTorchPredictor
    from ..metrics import MetricAccumulator
    from ..train.trainer import predict_masks

    if not args.data:
        raise DataError("no dataset: pass --data DIR or set LIGHTSEG_ISIC2018")
    if args.overlays and not args.out:
        _parser().error("--overlays: needs --out DIR to write the overlays to")
    if args.overlays and args.shift != "none":
        _parser().error("--overlays: drawn from the original images at their own size, so not with --shift")
    cfg = check_model(args.model)
    pre = cfg.preprocess
    if args.img_size:
        check_img_size(args.img_size, args.model, cfg.stride, min_size=cfg.min_size)
        pre = type(pre)(size=(args.img_size, args.img_size), mode=pre.mode, mean=pre.mean, std=pre.std)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = Path(args.weights) if args.weights else pretrained_path(args.model)
    model = create_model(args.model, checkpoint=weights).eval()
    layout = detect_layout(args.data)
    available = list_samples(args.data, None if args.split == "all" else args.split, layout)
    samples = subset(available, args.max_images)
    print(describe_data(args.data, layout, args.split, len(samples), len(available)))
    shift = get_shift(args.shift)
    print(f"model: {args.model} at {pre.size[0]}x{pre.size[1]}, weights {weights}", flush=True)
    if args.shift != "none":
        print(f"shift: {shift.name} ({shift.what}), applied at {pre.size[0]}x{pre.size[1]}", flush=True)
    progress = not args.no_progress
    ds = SegmentationDataset(samples, pre, progress=progress).with_shift(shift)
    acc = MetricAccumulator()
    with progress_bar(len(ds), "eval", enabled=progress) as bar:
        for pred, gt in predict_masks(model, DataLoader(ds, batch_size=args.batch_size), args.threshold, tta=TTA(args.tta)):
            acc.update(pred, gt)
            bar.update(1)
    metrics = acc.compute()
    report = {"model": args.model, "weights": str(weights), "weights_sha256": sha256_file(weights), "data": str(args.data),
              "split": args.split, "shift": args.shift, "threshold": args.threshold, "tta": args.tta, "resolution": list(pre.size),
              "metrics": metrics}
    shifted = ("" if args.shift == "none" else f", shift {args.shift}") + ("" if args.tta == "none" else f", TTA {args.tta}")
    print(f"{args.model} on {args.split} ({metrics['images']} images, {pre.size[0]}x{pre.size[1]}{shifted}):")
    for k in ("mdice", "miou", "dice_star", "iou_star", "accuracy", "sensitivity", "specificity", "fwiou"):
        print(f"  {k:12s} {metrics[k]:.4f}")
    n = metrics["images"]
    print(f"  per-image Dice: p5 {metrics['dice_p5']:.4f}  p10 {metrics['dice_p10']:.4f}  median {metrics['dice_median']:.4f}  "
          f"below 0.5: {metrics['dice_below_0_5']} of {n} ({100 * metrics['dice_below_0_5'] / n:.1f}%)")
    if args.out:
        out = Path(args.out)
        _write_outputs(out, report, acc, samples)
        if args.overlays:
            # Through the predictor, as lightseg-predict runs it: its deploy() form (after the metrics: some models'
            # deploy() changes them in place) and its post-processing at each image's own size.
            with PyTorchPredictor(model, preprocess=pre, device="cpu", threshold=args.threshold, source=args.model, tta=args.tta) as predictor:
                _write_overlays(make_dir(out / "overlays", "--out"), _chosen(acc, args.overlays), samples, predictor, progress)
        print(f"wrote {out / 'metrics.json'}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv, keep_memory=True)


if __name__ == "__main__":
    raise SystemExit(main())
