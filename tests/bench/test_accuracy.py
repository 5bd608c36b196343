"""Accuracy at network resolution through the shared pre/post-processing, and deltas against fp32 PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from bench_helpers import FakePredictor

from lightseg_edge.bench.accuracy import add_deltas, evaluate, select_samples
from lightseg_edge.bench.records import AccuracyStats, BenchResult
from lightseg_edge.data.io import read_mask
from lightseg_edge.data.transforms import resize_mask
from lightseg_edge.errors import DataError


def test_all_lesion_prediction_scores_the_expected_dice(sample_dir, fake_clock):
    samples = select_samples(str(sample_dir), "test")
    p = FakePredictor(fake_clock, [1], logit=5.0, size=(64, 64))  # every pixel predicted as lesion
    acc = evaluate(p, samples, data=str(sample_dir), split="test")
    want = []
    for s in samples:
        g = resize_mask(read_mask(s.mask), (64, 64)).astype(bool)
        want.append(2 * g.sum() / (g.sum() + g.size))
    assert acc.images == len(samples) == 2
    assert acc.mdice == pytest.approx(np.mean(want))
    assert acc.resolution == (64, 64) and acc.split == "test"


def test_all_background_prediction_scores_zero(sample_dir, fake_clock):
    p = FakePredictor(fake_clock, [1], logit=-5.0)
    acc = evaluate(p, select_samples(str(sample_dir), "val"))
    assert acc.mdice == 0.0 and acc.miou == 0.0


def test_static_batch_is_padded_and_only_real_rows_scored(sample_dir, fake_clock):
    p = FakePredictor(fake_clock, [1], logit=5.0)
    p.static_batch_size = 4
    seen = []
    infer = p.infer
    p.infer = lambda x: (seen.append(x.shape[0]), infer(x))[1]
    acc = evaluate(p, select_samples(str(sample_dir), "train"))
    assert seen == [4] and acc.images == 4


def test_progress_is_reported_before_and_after_every_batch(sample_dir, fake_clock):
    seen = []
    evaluate(FakePredictor(fake_clock, [1]), select_samples(str(sample_dir), None), batch=3, on_progress=lambda *c: seen.append(c))
    assert seen == [(0, 8), (3, 8), (6, 8), (8, 8)]


def test_max_images_and_bad_split(sample_dir):
    assert len(select_samples(str(sample_dir), "train", 3)) == 3
    with pytest.raises(DataError, match="split"):
        select_samples(str(sample_dir), "nope")


def _row(runtime, precision, mdice, weights="w.pt", model="ucmnet", tta="none"):
    acc = AccuracyStats(images=10, mdice=mdice, miou=mdice - 0.1, dice_star=mdice, iou_star=mdice, split="test", data="d", resolution=(256, 256))
    return BenchResult(model=model, source="s", runtime=runtime, precision=precision, batch=1, status="ok", img_size=(256, 256),
                       weights=weights, accuracy=acc, tta=tta)


def test_deltas_are_taken_against_fp32_pytorch_of_the_same_weights():
    rows = add_deltas([_row("pytorch", "fp32", 0.80), _row("onnxruntime", "int8", 0.75), _row("onnxruntime", "int8", 0.70, weights="other.pt"),
                       _row("onnxruntime", "fp32", 0.81, tta="flips")])
    assert rows[0].accuracy.delta_mdice == 0.0
    assert rows[1].accuracy.delta_mdice == pytest.approx(-0.05) and rows[1].accuracy.reference == "pytorch fp32"
    assert rows[2].accuracy.delta_mdice is None  # no reference row for those weights
    assert rows[3].accuracy.delta_mdice is None  # nor with test-time augmentation: its gain is not a runtime's error


@pytest.mark.parametrize("runtime,precision,mdice,label", [
    ("onnxruntime", "int8", 0.79, "ok"),  # -0.01: inside int8's 0.02
    ("openvino", "int8", 0.75, "low-acc"),  # -0.05
    ("litert", "fp32", 0.799, "low-acc"),  # fp32 on another runtime may differ only by rounding
    ("openvino", "fp16", 0.797, "ok"),
])
def test_a_row_losing_more_than_its_precision_allows_is_flagged(runtime, precision, mdice, label):
    from lightseg_edge.bench.report import format_results, status_label

    ref, row = add_deltas([_row("pytorch", "fp32", 0.80), _row(runtime, precision, mdice)])
    assert status_label(row) == label and status_label(ref) == "ok"
    text = format_results([ref, row])
    assert ("accuracy below threshold" in text) == (label == "low-acc")
