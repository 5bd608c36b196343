"""Parity of the exported FP32 ONNX (ONNX Runtime CPU) with the PyTorch model, on real held-out images.

Tolerance (the export fails above it):
- logits: ``max |onnx - torch| <= PARITY_ATOL + PARITY_RTOL * max |torch|`` over all pixels of all images. FP32
  graph rewrites and kernel differences give 1e-7..5e-5 on the zoo models (measured here), so 1e-3 catches
  real export bugs (a wrong resize mode, a dropped op) without tripping on summation order; the relative term keeps
  the bound meaningful for trained models whose logits reach +-50.
- masks (logit >= 0, i.e. probability >= 0.5): dataset-level Dice between the two masks ``>= MIN_MASK_DICE``.
  Pixels whose logit sits within rounding error of 0 may flip; more than 0.1% disagreement is a real difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._optional import require
from ..errors import ParityError
from ..metrics import Confusion, dice
from .onnxrun import cpu_session, run_onnx

PARITY_ATOL = 1e-3
PARITY_RTOL = 1e-3
MIN_MASK_DICE = 0.999


@dataclass(frozen=True)
class ParityReport:
    images: int
    batch_sizes: Sequence[int]
    max_abs: float
    mean_abs: float
    ref_max_abs: float
    tolerance: float
    mask_dice: float
    min_mask_dice: float
    passed: bool
    source: str  # which images

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d

    def summary(self) -> str:
        return (
            f"ORT CPU vs PyTorch on {self.images} real images: max|dlogit| {self.max_abs:.2e} (tol {self.tolerance:.1e}), "
            f"mask Dice {self.mask_dice:.5f} (min {self.min_mask_dice})"
        )


def mask_agreement(a_logits: np.ndarray, b_logits: np.ndarray) -> float:
    """Dataset-level Dice between the masks (logit >= 0) of two outputs of the same images."""
    total = Confusion(0, 0, 0, 0)
    for a, b in zip(a_logits, b_logits):
        total = total + Confusion.of(b >= 0, a >= 0)
    return dice(total)


def compare_logits(ref: np.ndarray, got: np.ndarray, source: str, batch_sizes: Sequence[int]) -> ParityReport:
    if ref.shape != got.shape:
        raise ParityError(f"output shapes differ: PyTorch {ref.shape}, ONNX Runtime {got.shape}")
    if not np.isfinite(got).all():
        raise ParityError(f"ONNX Runtime produced {int((~np.isfinite(got)).sum())} non-finite logits")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    ref_max = float(np.abs(ref).max())
    tol = PARITY_ATOL + PARITY_RTOL * ref_max
    md = mask_agreement(ref, got)
    passed = float(diff.max()) <= tol and md >= MIN_MASK_DICE
    return ParityReport(
        len(ref), tuple(batch_sizes), float(diff.max()), float(diff.mean()), ref_max, tol, md, MIN_MASK_DICE, passed, source
    )


def torch_logits(model, x: np.ndarray, chunk: int) -> np.ndarray:
    torch = require("torch", purpose="the PyTorch side of the parity check")
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[start : start + chunk]))).float().numpy())
    return np.concatenate(outs)


def check_parity(model, onnx_path: Path, x: np.ndarray, chunk: int, pad: bool, source: str) -> ParityReport:
    """Run ``x`` (N, 3, H, W) through PyTorch and ONNX Runtime CPU; raise ParityError above the tolerance."""
    ref = torch_logits(model, x, chunk)
    got = run_onnx(cpu_session(onnx_path), x, chunk, pad)
    sizes = sorted({min(chunk, len(x) - s) if not pad else chunk for s in range(0, len(x), chunk)})
    report = compare_logits(ref, got, source, sizes)
    if not report.passed:
        raise ParityError(f"{Path(onnx_path).name} disagrees with PyTorch beyond the documented tolerance: {report.summary()}")
    return report
