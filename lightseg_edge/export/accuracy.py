"""What a precision variant or another target costs in segmentation accuracy, on held-out images.

Every artifact is run through its runtime's predictor from the runtime registry (the class ``load_predictor``
builds), on the CPU and on the same preprocessed images: ONNX variants on ONNX Runtime, other targets' artifacts on
OpenVINO or LiteRT. An artifact that cannot run on this machine (Core ML off macOS) is listed as not scored, with the
reason, never given a figure.

Each variant's logits go through the shared post-processing (``logits_to_proba`` at the image's own size, threshold
0.5) and are scored against the ground truth (per-image mean Dice, dataset-level Dice*) and against the FP32
ONNX masks (mask agreement). The drop in mDice versus FP32 is reported and written to the manifest; a drop larger
than its precision allows (``metrics.EXPECTED_MAX_DROP``) is flagged (``within_expected: false``) and logged as a warning, not hidden.

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
from ..metrics import Confusion, MetricAccumulator, dice, expected_drop
from ..runtimes.registry import RUNTIMES
from ..types import PreprocessConfig, Runtime
from .onnxrun import run_batches

log = logging.getLogger("lightseg_edge.export")

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
    runtime: str = "onnxruntime"
    worst_agreement: float = 1.0  # the lowest per-image mask Dice against the FP32 ONNX masks

    def to_dict(self) -> dict:
        return asdict(self)


def masks_at_native_size(logits: np.ndarray, gts: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [proba_to_mask(logits_to_proba(lg, gt.shape[:2])) for lg, gt in zip(logits, gts)]


class HeldoutScorer:
    """Scores artifacts on one fixed set of held-out images (``x``, preprocessed with ``preprocess``); the FP32 ONNX
    first, as the reference."""

    def __init__(self, x: np.ndarray, gts: Sequence[np.ndarray], chunk: int, pad: bool, source: str,
                 preprocess: PreprocessConfig) -> None:
        self.x, self.gts, self.chunk, self.pad, self.source = x, list(gts), chunk, pad, source
        self.preprocess = preprocess
        self.reference: Dict[str, object] = {}
        self.results: Dict[str, VariantAccuracy] = {}
        self.unscored: Dict[str, str] = {}  # artifact key -> why it could not be run here

    def score(self, path: Path, variant: str, runtime: Runtime = Runtime.ONNXRUNTIME, precision: str = "", device: str = "cpu",
              **options) -> VariantAccuracy:
        """Load ``path`` with ``runtime``'s predictor on ``device`` (``precision`` defaults to ``variant``), score it and
        record the result."""
        return self._record(self.measure(path, variant, runtime, precision, device, **options))

    def score_predictor(self, predictor, variant: str) -> VariantAccuracy:
        """Score any runtime's predictor (``infer`` on the preprocessed images) against the FP32 ONNX reference."""
        return self._record(self._evaluate(self._logits(predictor), variant, predictor.runtime.value))

    def measure(self, path: Path, variant: str, runtime: Runtime = Runtime.ONNXRUNTIME, precision: str = "", device: str = "cpu",
                **options) -> VariantAccuracy:
        """``score`` without recording: a trial (``export.keep``). The first FP32 measured becomes the reference."""
        cls = RUNTIMES[runtime].predictor_class()
        predictor = cls(path, self.preprocess, device=device, precision=precision or variant, **options)
        try:
            return self._evaluate(self._logits(predictor), variant, predictor.runtime.value)
        finally:
            predictor.close()

    def _logits(self, predictor) -> np.ndarray:
        chunk = predictor.static_batch_size or self.chunk
        return run_batches(predictor.infer, self.x, chunk, predictor.static_batch_size is not None)

    def _evaluate(self, logits: np.ndarray, variant: str, runtime: str) -> VariantAccuracy:
        if not np.isfinite(logits).all():
            log.warning("%s: %d non-finite logits on held-out images", variant, int((~np.isfinite(logits)).sum()))
        masks = masks_at_native_size(logits, self.gts)
        acc = MetricAccumulator()
        for m, g in zip(masks, self.gts):
            acc.update(m, g)
        metrics = acc.compute()
        if variant == "fp32" or "masks" not in self.reference:
            self.reference = {"masks": masks, "mdice": metrics["mdice"]}
        per_image = [Confusion.of(m, ref) for m, ref in zip(masks, self.reference["masks"])]  # type: ignore[arg-type]
        agree = sum(per_image, Confusion(0, 0, 0, 0))
        delta = metrics["mdice"] - float(self.reference["mdice"])  # type: ignore[arg-type]
        return VariantAccuracy(variant, len(masks), metrics["mdice"], metrics["dice_star"], metrics["miou"], dice(agree), delta,
                               delta >= -expected_drop(variant), runtime, min((dice(c) for c in per_image), default=1.0))

    def _record(self, res: VariantAccuracy) -> VariantAccuracy:
        if not res.within_expected:
            log.warning("%s loses %.4f mDice against FP32 on %d held-out images (expected at most %.3f)", res.variant,
                        -res.delta_mdice, res.images, expected_drop(res.variant))
        self.results[res.variant] = res
        return res

    def to_dict(self) -> dict:
        return {
            "images": len(self.x),
            "source": self.source,
            "runtime": "onnxruntime-cpu",  # the reference's; each variant records its own
            "expected_max_drop": {k: expected_drop(k) for k in self.results},
            "variants": {k: v.to_dict() for k, v in self.results.items()},
            "not_scored": dict(self.unscored),
        }


def format_accuracy(results: Dict[str, VariantAccuracy]) -> str:
    width = max([8] + [len(v) for v in results])
    lines = [f"{'variant':<{width}} {'runtime':<11} {'mDice':>7} {'Dice*':>7} {'dmDice':>8} {'agree':>7}"]
    for v in results.values():
        lines.append(
            f"{v.variant:<{width}} {v.runtime:<11} {v.mdice:7.4f} {v.dice_star:7.4f} {v.delta_mdice:+8.4f} {v.agreement_dice:7.4f}"
            + ("" if v.within_expected else "  (larger drop than expected)")
        )
    return "\n".join(lines)
