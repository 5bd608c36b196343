"""What a precision variant costs in segmentation accuracy, measured with ONNX Runtime CPU on held-out images.

Each variant's logits go through the shared post-processing (``logits_to_proba`` at the image's own size, threshold
0.5) and are scored against the ground truth (per-image mean Dice, dataset-level Dice*) and against the FP32
ONNX masks (mask agreement). The drop in mDice versus FP32 is reported and written to the manifest; a drop larger
than ``EXPECTED_MAX_DROP`` is flagged (``within_expected: false``) and logged as a warning, not hidden.

ONNX Runtime CPU runs FP16 graphs partly by casting back to FP32 and runs Q/DQ graphs with its own INT8 kernels, so
these numbers describe the graphs, not a TensorRT engine's kernels: re-measure on the target (``lightseg-bench``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..data.transforms import logits_to_proba, proba_to_mask
from ..train.metrics import Confusion, MetricAccumulator, dice
from .onnxrun import cpu_session, run_onnx

log = logging.getLogger("lightseg_edge.export")

EXPECTED_MAX_DROP = {"fp32": 0.0, "fp16": 0.005, "int8": 0.02}


@dataclass(frozen=True)
class VariantAccuracy:
    variant: str
    images: int
    mdice: float
    dice_star: float
    miou: float
    agreement_dice: float  # dataset-level Dice of this variant's masks against the FP32 ONNX masks
    delta_mdice: float  # mdice - fp32 mdice (negative = worse)
    within_expected: bool

    def to_dict(self) -> dict:
        return asdict(self)


def masks_at_native_size(logits: np.ndarray, gts: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [proba_to_mask(logits_to_proba(lg, gt.shape[:2])) for lg, gt in zip(logits, gts)]


class HeldoutScorer:
    """Scores ONNX variants on one fixed set of held-out images; FP32 first, as the reference."""

    def __init__(self, x: np.ndarray, gts: Sequence[np.ndarray], chunk: int, pad: bool, source: str) -> None:
        self.x, self.gts, self.chunk, self.pad, self.source = x, list(gts), chunk, pad, source
        self.reference: Dict[str, object] = {}
        self.results: Dict[str, VariantAccuracy] = {}

    def score(self, onnx_path: Path, variant: str) -> VariantAccuracy:
        logits = run_onnx(cpu_session(onnx_path), self.x, self.chunk, self.pad)
        if not np.isfinite(logits).all():
            log.warning("%s: %d non-finite logits on held-out images", variant, int((~np.isfinite(logits)).sum()))
        masks = masks_at_native_size(logits, self.gts)
        acc = MetricAccumulator()
        for m, g in zip(masks, self.gts):
            acc.update(m, g)
        metrics = acc.compute()
        if variant == "fp32" or "masks" not in self.reference:
            self.reference = {"masks": masks, "mdice": metrics["mdice"]}
        agree = Confusion(0, 0, 0, 0)
        for m, ref in zip(masks, self.reference["masks"]):  # type: ignore[arg-type]
            agree = agree + Confusion.of(m, ref)
        delta = metrics["mdice"] - float(self.reference["mdice"])  # type: ignore[arg-type]
        expected = EXPECTED_MAX_DROP.get(variant, 0.0)
        ok = delta >= -expected
        res = VariantAccuracy(variant, len(masks), metrics["mdice"], metrics["dice_star"], metrics["miou"], dice(agree), delta, ok)
        if not ok:
            log.warning(
                "%s loses %.4f mDice against FP32 on %d held-out images (expected at most %.3f)", variant, -delta, len(masks), expected
            )
        self.results[variant] = res
        return res

    def to_dict(self) -> dict:
        return {
            "images": len(self.x),
            "source": self.source,
            "runtime": "onnxruntime-cpu",
            "expected_max_drop": {k: v for k, v in EXPECTED_MAX_DROP.items() if k in self.results},
            "variants": {k: v.to_dict() for k, v in self.results.items()},
        }


def format_accuracy(results: Dict[str, VariantAccuracy]) -> str:
    lines = [f"{'variant':<8} {'mDice':>7} {'Dice*':>7} {'dmDice':>8} {'agree':>7}"]
    for v in results.values():
        lines.append(
            f"{v.variant:<8} {v.mdice:7.4f} {v.dice_star:7.4f} {v.delta_mdice:+8.4f} {v.agreement_dice:7.4f}"
            + ("" if v.within_expected else "  (larger drop than expected)")
        )
    return "\n".join(lines)
