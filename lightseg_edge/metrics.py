"""Segmentation metrics on binary masks (numpy only).

Two families, because the papers use both:
- per-image: IoU and Dice computed for each image, then averaged (mIoU, mDice);
- dataset-level ("starred"): TP/FP/FN/TN summed over all pixels of all images first (IoU*, Dice*, accuracy,
  sensitivity, specificity, FWIoU). UCM-Net's reported figures are of this kind.

Empty masks: an image whose ground truth and prediction are both empty scores IoU = Dice = 1 (a correct "no
lesion"); an empty ground truth with any predicted pixel scores 0. Dataset-level ratios whose denominator is 0
(e.g. sensitivity with no lesion pixels at all) are reported as NaN rather than a made-up value.

The per-image Dice tail (p5, p10, median and the count of images below 0.5) is reported beside the means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, pred: np.ndarray, gt: np.ndarray) -> "Confusion":
        p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
        if p.shape != g.shape:
            raise ValueError(f"prediction shape {p.shape} != ground truth shape {g.shape}")
        tp = int(np.count_nonzero(p & g))
        fp = int(np.count_nonzero(p & ~g))
        fn = int(np.count_nonzero(~p & g))
        return cls(tp, fp, fn, p.size - tp - fp - fn)

    def __add__(self, o: "Confusion") -> "Confusion":
        return Confusion(self.tp + o.tp, self.fp + o.fp, self.fn + o.fn, self.tn + o.tn)


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def iou(c: Confusion) -> float:
    den = c.tp + c.fp + c.fn
    return c.tp / den if den else 1.0


def dice(c: Confusion) -> float:
    den = 2 * c.tp + c.fp + c.fn
    return 2 * c.tp / den if den else 1.0


def summary(c: Confusion) -> Dict[str, float]:
    """Dataset-level metrics from summed counts."""
    n = c.tp + c.fp + c.fn + c.tn
    iou_fg = _ratio(c.tp, c.tp + c.fp + c.fn)
    iou_bg = _ratio(c.tn, c.tn + c.fp + c.fn)
    freq_fg, freq_bg = _ratio(c.tp + c.fn, n), _ratio(c.tn + c.fp, n)
    return {
        "iou_star": iou_fg,
        "dice_star": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
        "accuracy": _ratio(c.tp + c.tn, n),
        "sensitivity": _ratio(c.tp, c.tp + c.fn),
        "specificity": _ratio(c.tn, c.tn + c.fp),
        "fwiou": freq_fg * iou_fg + freq_bg * iou_bg,
    }


@dataclass
class MetricAccumulator:
    """Feed (pred, gt) pairs one image at a time; ``compute()`` returns every metric above."""

    per_image_iou: List[float] = field(default_factory=list)
    per_image_dice: List[float] = field(default_factory=list)
    total: Confusion = Confusion(0, 0, 0, 0)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> Confusion:
        c = Confusion.of(pred, gt)
        self.per_image_iou.append(iou(c))
        self.per_image_dice.append(dice(c))
        self.total = self.total + c
        return c

    def compute(self) -> Dict[str, float]:
        if not self.per_image_iou:
            raise ValueError("no images were evaluated")
        return {"miou": float(np.mean(self.per_image_iou)), "mdice": float(np.mean(self.per_image_dice)), **summary(self.total),
                **dice_tail(self.per_image_dice), "images": len(self.per_image_iou)}


FAILED_DICE = 0.5  # an image segmented below this Dice is a failed case


def dice_tail(per_image_dice: List[float]) -> Dict[str, float]:
    """The low end of the per-image Dice distribution: what fails in a clinic hides behind a good mean."""
    d = np.asarray(per_image_dice, dtype=np.float64)
    p5, p10, median = np.percentile(d, [5, 10, 50])
    return {"dice_p5": float(p5), "dice_p10": float(p10), "dice_median": float(median), "dice_below_0_5": int(np.count_nonzero(d < FAILED_DICE))}


# How much mDice each precision may cost against fp32 before a result is flagged (export manifests, bench rows).
# fp32 on another runtime differs from ONNX Runtime only by summation order: a change in the 4th decimal is a fault.
EXPECTED_MAX_DROP = {"fp32": 0.0005, "fp16": 0.005, "bf16": 0.005, "int8": 0.02}


def expected_drop(variant: str) -> float:
    """'int8', 'openvino-int8', 'openvino-bf16' -> the allowance of that precision."""
    return EXPECTED_MAX_DROP.get(variant.rsplit("-", 1)[-1], 0.0)
