"""Losses against values computed by hand from their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from lightseg_edge.train.losses import bce_dice_loss, bce_iou_loss, bce_squared_dice_loss, group_loss, unext_bce_dice_loss

# one sample, four pixels; logits chosen so that sigmoid gives round probabilities
P = torch.tensor([0.9, 0.2, 0.6, 0.1])
T = torch.tensor([1.0, 0.0, 1.0, 0.0])
LOGITS = torch.log(P / (1 - P)).reshape(1, 1, 2, 2)
TARGET = T.reshape(1, 1, 2, 2)
BCE = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.9)) / 4
SUM_PT, SUM_P, SUM_T = 0.9 + 0.6, 0.9 + 0.2 + 0.6 + 0.1, 2.0


def test_bce_dice():
    dice = (2 * SUM_PT + 1) / (SUM_P + SUM_T + 1)
    assert bce_dice_loss(LOGITS, TARGET).item() == pytest.approx(BCE + 1 - dice, abs=1e-6)


def test_unext_bce_dice_halves_bce():
    dice = (2 * SUM_PT + 1) / (SUM_P + SUM_T + 1)
    assert unext_bce_dice_loss(LOGITS, TARGET).item() == pytest.approx(0.5 * BCE + 1 - dice, abs=1e-6)


def test_ucmnet_squared_dice_squares_the_sums():
    sq = (2 * SUM_PT**2 + 1e-5) / (SUM_P**2 + SUM_T**2 + 1e-5)
    assert bce_squared_dice_loss(LOGITS, TARGET).item() == pytest.approx(BCE + 1 - sq, abs=1e-6)
    # the V-Net form (squares on pixels) would give a different number
    vnet = (2 * SUM_PT) / (float((P**2).sum()) + float((T**2).sum()))
    assert bce_squared_dice_loss(LOGITS, TARGET).item() != pytest.approx(BCE + 1 - vnet, abs=1e-3)


def test_bce_iou_weights():
    iou = (SUM_PT + 1e-6) / (SUM_P + SUM_T - SUM_PT + 1e-6)
    assert bce_iou_loss(LOGITS, TARGET).item() == pytest.approx(0.25 * BCE + 0.75 * (1 - iou), abs=1e-6)


def test_group_loss_weights_deepest_stage_least():
    zero = torch.full_like(LOGITS, -20.0)
    base = bce_dice_loss
    stages = [LOGITS, zero, zero, zero, zero]  # only the deepest stage differs from "all background"
    got = group_loss(base, LOGITS, stages, TARGET)
    want = base(LOGITS, TARGET) + 0.1 * base(LOGITS, TARGET) + (0.2 + 0.3 + 0.4 + 0.5) * base(zero, TARGET)
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    with pytest.raises(ValueError, match="5 stage outputs"):
        group_loss(base, LOGITS, stages[:3], TARGET)


def test_batch_dice_is_per_sample_mean():
    logits = torch.cat([LOGITS, torch.full_like(LOGITS, 20.0)])
    target = torch.cat([TARGET, torch.ones_like(TARGET)])
    d1 = (2 * SUM_PT + 1) / (SUM_P + SUM_T + 1)
    d2 = (2 * 4 + 1) / (4 + 4 + 1)
    bce = (BCE * 4 + 4 * math.log1p(math.exp(-20))) / 8
    assert bce_dice_loss(logits, target).item() == pytest.approx(bce + 1 - (d1 + d2) / 2, abs=1e-6)
