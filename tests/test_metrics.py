"""Metrics against hand-computed values, including the empty-mask cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightseg_edge.metrics import Confusion, MetricAccumulator, dice, iou, summary

GT = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], np.uint8)
PRED = np.array([[1, 1, 1, 0], [0, 1, 0, 0]], np.uint8)  # tp 3, fp 1, fn 1, tn 3


def test_confusion_counts():
    assert Confusion.of(PRED, GT) == Confusion(3, 1, 1, 3)


def test_per_image_iou_dice():
    c = Confusion.of(PRED, GT)
    assert iou(c) == pytest.approx(3 / 5)
    assert dice(c) == pytest.approx(6 / 8)


def test_dataset_level_metrics():
    s = summary(Confusion(3, 1, 1, 3))
    assert s["iou_star"] == pytest.approx(0.6)
    assert s["dice_star"] == pytest.approx(0.75)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["sensitivity"] == pytest.approx(3 / 4)
    assert s["specificity"] == pytest.approx(3 / 4)
    # FWIoU: lesion freq 4/8 * IoU 3/5 + background freq 4/8 * IoU 3/5
    assert s["fwiou"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.6)


def test_mean_vs_starred_differ_as_expected():
    acc = MetricAccumulator()
    acc.update(PRED, GT)  # IoU 0.6, Dice 0.75
    acc.update(np.ones((2, 2)), np.array([[1, 0], [0, 0]]))  # tp 1 fp 3: IoU 0.25, Dice 0.4
    m = acc.compute()
    assert m["miou"] == pytest.approx((0.6 + 0.25) / 2)
    assert m["mdice"] == pytest.approx((0.75 + 0.4) / 2)
    assert m["iou_star"] == pytest.approx(4 / (4 + 4 + 1))
    assert m["dice_star"] == pytest.approx(8 / (8 + 4 + 1))
    assert m["images"] == 2


def test_empty_masks():
    empty = np.zeros((3, 3))
    c = Confusion.of(empty, empty)
    assert iou(c) == 1.0 and dice(c) == 1.0  # a correct "no lesion"
    c = Confusion.of(np.eye(3), empty)
    assert iou(c) == 0.0 and dice(c) == 0.0
    s = summary(Confusion.of(empty, empty))
    assert math.isnan(s["sensitivity"]) and s["specificity"] == 1.0


def test_shape_mismatch_and_no_images():
    with pytest.raises(ValueError, match="shape"):
        Confusion.of(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no images"):
        MetricAccumulator().compute()


def test_dice_tail_by_hand():
    from lightseg_edge.metrics import dice_tail

    # numpy's linear percentiles on 6 values: p5 at position 0.25, p10 at 0.5, median between the 3rd and 4th
    tail = dice_tail([1.0, 0.0, 0.8, 0.4, 0.9, 0.6])
    assert tail == pytest.approx({"dice_p5": 0.1, "dice_p10": 0.2, "dice_median": 0.7, "dice_below_0_5": 2})
