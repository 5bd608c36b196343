"""The papers' losses. Every loss takes logits (never probabilities) and computes the sigmoid itself."""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sums(logits: torch.Tensor, target: torch.Tensor):
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return p, t, (p * t).sum(1), p.sum(1), t.sum(1)


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # BCE on logits equals the upstream nn.BCELoss(sigmoid(x)) without its log clamp at -100.
    return F.binary_cross_entropy_with_logits(logits, target)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, bce_weight: float = 1.0) -> torch.Tensor:
    """BCE + (1 - Dice), Dice per sample with plain sums and smooth=1, averaged over the batch (EGE-UNet, MALUNet)."""
    _, _, inter, ps, ts = _sums(logits, target)
    dice = (2 * inter + smooth) / (ps + ts + smooth)
    return bce_weight * _bce(logits, target) + (1 - dice.mean())


def bce_squared_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """UCM-Net's BCEDiceLoss_newversion: BCE + 1 - mean((2 (sum p t)^2 + eps) / ((sum p)^2 + (sum t)^2 + eps)).

    The squares are on the per-sample sums, not on the pixels (not the V-Net form).
    """
    _, _, inter, ps, ts = _sums(logits, target)
    sq = (2 * inter**2 + eps) / (ps**2 + ts**2 + eps)
    return _bce(logits, target) + (1 - sq.mean())


def bce_iou_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, beta: float = 0.75, eps: float = 1e-6) -> torch.Tensor:
    """LMSAUnet paper: 0.25 BCE + 0.75 soft-Jaccard loss, 1 - (sum p t + eps) / (sum p + sum t - sum p t + eps)."""
    _, _, inter, ps, ts = _sums(logits, target)
    iou = (inter + eps) / (ps + ts - inter + eps)
    return alpha * _bce(logits, target) + beta * (1 - iou.mean())


UNEXT_BCE_WEIGHT = 0.5


def unext_bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """UNeXt's BCEDiceLoss: 0.5 BCE-with-logits + (1 - Dice)."""
    return bce_dice_loss(logits, target, smooth=1.0, bce_weight=UNEXT_BCE_WEIGHT)


def group_loss(base: LossFn, final: torch.Tensor, stages: Sequence[torch.Tensor], target: torch.Tensor, weights: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5)) -> torch.Tensor:
    """UCM-Net / EGE-UNet deep supervision: L(final) + sum_k w_k L(stage_k), stages ordered deepest first, so the
    deepest map gets 0.1 and the highest-resolution one 0.5."""
    if len(stages) != len(weights):
        raise ValueError(f"group loss expects {len(weights)} stage outputs, got {len(stages)}")
    total = base(final, target)
    for w, s in zip(weights, stages):
        total = total + w * base(s, target)
    return total


LOSSES: Dict[str, LossFn] = {
    "bce_dice": bce_dice_loss,
    "bce_squared_dice": bce_squared_dice_loss,
    "bce_iou": bce_iou_loss,
    "unext_bce_dice": unext_bce_dice_loss,
}
