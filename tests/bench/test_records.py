"""Records serialise to plain JSON and back without loss; invalid rows are refused."""

from __future__ import annotations

import json

import pytest

from lightseg_edge.bench.records import AccuracyStats, BenchReport, BenchResult, ClaimCheck, LatencyStats, MemoryStats


def _row(**kw) -> BenchResult:
    base = dict(
        model="ucmnet", source="exports/ucmnet", runtime="onnxruntime", precision="int8", batch=8, status="ok", img_size=(256, 256),
        device="cpu", threads=2, weights="random:0", params=46188, deploy_params=46055, macs=33716224, size_bytes=389410,
        latency=LatencyStats.from_ns([7_000_000, 8_000_000, 9_000_000], batch=8),
        e2e=LatencyStats.from_ns([12_000_000, 13_000_000], batch=8), e2e_image_hw=(512, 512),
        memory=MemoryStats(rss_before_load_mb=54.0, load_delta_mb=13.0, inference_peak_delta_mb=20.5, process_peak_mb=88.0, runs=20,
                           files={"int8": 389410}, notes=("a note",)),
        accuracy=AccuracyStats(images=10, mdice=0.8, miou=0.7, dice_star=0.82, iou_star=0.7, split="test", data="/d", resolution=(256, 256),
                               reference="pytorch fp32", delta_mdice=-0.01, delta_miou=-0.02),
        machine={"loadavg_before": [0.1, 0.2, 0.3], "other_cpu_share": 0.01}, process={"torch_imported": False},
        env={"cpu": "x"}, timing={"warmup": 10}, notes=("n1", "n2"), started="2026-01-01T00:00:00+00:00",
    )
    base.update(kw)
    return BenchResult(**base)


def test_result_round_trips_through_json():
    r = _row()
    back = BenchResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r


def test_skipped_and_failed_rows_round_trip_and_need_a_reason():
    r = BenchResult(model="unet", source="unet", runtime="tensorrt", precision="fp16", batch=1, status="skipped", reason="no GPU")
    assert BenchResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ValueError, match="needs a reason"):
        BenchResult(model="m", source="s", runtime="pytorch", precision="fp32", batch=1, status="failed")
    with pytest.raises(ValueError, match="status"):
        BenchResult(model="m", source="s", runtime="pytorch", precision="fp32", batch=1, status="maybe", reason="x")


def test_report_serialises_and_counts():
    claim = ClaimCheck("ucmnet", "params", 49932, 46188, "differs", "why", "params", 47436, {"deploy_params": 46055})
    failed = _row(status="failed", reason="load: boom", latency=None, e2e=None, memory=None, accuracy=None)
    rep = BenchReport(results=(_row(), failed), claims=(claim,), environment={"cpu": {}}, settings={"threads": 2}, notes=("n",))
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["schema"] == "lightseg-bench/1"
    assert [r["status"] for r in d["results"]] == ["ok", "failed"]
    assert d["claims"][0]["released"] == 47436
    assert rep.counts == {"ok": 1, "skipped": 0, "failed": 1}
