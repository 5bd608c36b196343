"""Segmentation accuracy of any predictor on a data split, and its change against fp32 PyTorch.

Scored at network resolution, as the papers' evaluation scripts do (UCM-Net and EGE-UNet resize masks to 256x256):
each image goes through the shared ``preprocess`` (the same code training, calibration and every runtime use),
``predictor.infer`` gives logits, ``logits_to_proba`` + ``proba_to_mask`` threshold them at the predictor's threshold,
and the ground truth is resized to the network size with nearest-neighbour interpolation. Metrics come from
``metrics.MetricAccumulator``: per-image mDice/mIoU and dataset-level Dice*/IoU*.

Deltas: the fp32 PyTorch row of the same model and weights in the same run is the reference. Without one (a bare
ONNX file, or PyTorch not in the run) the delta is left empty rather than taken against something else.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.io import read_image, read_mask
from ..data.layouts import Sample, list_samples
from ..data.transforms import logits_to_proba, preprocess_batch, proba_to_mask, resize_mask
from ..errors import DataError
from ..metrics import MetricAccumulator, expected_drop
from .records import AccuracyStats, BenchResult


def select_samples(data: str, split: str = "test", max_images: Optional[int] = None) -> List[Sample]:
    """Image/mask pairs of ``split``, in case-id order (so ``max_images`` always takes the same ones)."""
    samples = sorted(list_samples(data, split=split, require_masks=True), key=lambda s: s.case_id)
    if max_images is not None:
        if max_images < 1:
            raise DataError(f"--max-images must be >= 1, got {max_images}")
        samples = samples[:max_images]
    return samples


def evaluate(predictor: Any, samples: Sequence[Sample], data: str = "", split: str = "", batch: Optional[int] = None,
             on_progress: Optional[Callable[[int, int], None]] = None) -> AccuracyStats:
    """Score ``predictor`` on ``samples`` (images and masks read one batch at a time, so memory stays flat).

    ``on_progress(images scored, total)`` is called before the first batch and after each one: scoring a full test
    split takes minutes, and the caller shows how far it got."""
    if not samples:
        raise DataError(f"{data}: no samples to evaluate in split {split!r}")
    pre = predictor.preprocess_config
    hw: Tuple[int, int] = (int(pre.size[0]), int(pre.size[1]))
    threshold = float(getattr(predictor, "threshold", 0.5))
    static = getattr(predictor, "static_batch_size", None)
    step = static or batch or 1
    acc = MetricAccumulator()
    report = on_progress or (lambda done, total: None)
    report(0, len(samples))
    for start in range(0, len(samples), step):
        group = samples[start:start + step]
        x = preprocess_batch([read_image(s.image) for s in group], pre)
        k = len(group)
        if static and k < static:  # a fixed-batch graph: pad with copies, score only the real rows
            x = np.concatenate([x, np.repeat(x[-1:], static - k, axis=0)])
        logits = predictor.infer(x)[:k]
        for s, lg in zip(group, logits):
            gt = resize_mask(read_mask(s.mask), hw)
            acc.update(proba_to_mask(logits_to_proba(lg, hw), threshold), gt)
        report(start + k, len(samples))
    m = acc.compute()
    return AccuracyStats(images=int(m["images"]), mdice=m["mdice"], miou=m["miou"], dice_star=m["dice_star"], iou_star=m["iou_star"],
                         split=split, data=str(data), resolution=hw)


def _reference_key(r: BenchResult) -> Tuple[str, Optional[str], Optional[Tuple[int, int]], str]:
    return (r.model, r.weights, r.img_size, r.tta)


def add_deltas(results: Sequence[BenchResult]) -> List[BenchResult]:
    """Fill ``delta_mdice``/``delta_miou`` against the fp32 PyTorch row of the same model, weights, input size and TTA."""
    refs: Dict[Any, AccuracyStats] = {}
    for r in results:
        if r.ok and r.accuracy is not None and r.runtime == "pytorch" and r.precision == "fp32":
            refs.setdefault(_reference_key(r), r.accuracy)
    out = []
    for r in results:
        ref = refs.get(_reference_key(r))
        if r.accuracy is not None and ref is not None and ref.images == r.accuracy.images and ref.split == r.accuracy.split:
            delta = r.accuracy.mdice - ref.mdice
            acc = AccuracyStats(**{**r.accuracy.to_dict(), "resolution": r.accuracy.resolution, "reference": "pytorch fp32",
                                   "delta_mdice": delta, "delta_miou": r.accuracy.miou - ref.miou,
                                   "within_expected": delta >= -expected_drop(r.precision)})
            r = r.with_(accuracy=acc)
        out.append(r)
    return out
