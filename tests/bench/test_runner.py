"""A backend that fails or is missing becomes a row with its status and reason, never a crash."""

from __future__ import annotations

import subprocess

import pytest

from lightseg_edge._optional import is_available
from lightseg_edge.bench import runner
from lightseg_edge.bench.jobs import Job
from lightseg_edge.bench.records import BenchResult
from lightseg_edge.bench.runner import run_in_process, run_isolated, run_jobs, sort_rows

PRE = {"size": [64, 64], "mode": "scale", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_corrupt_onnx_gives_failed_rows_naming_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    job = Job(kind="onnx", source=str(bad), runtime="onnxruntime", precision="fp32", batches=(1, 4), preprocess=PRE, memory_runs=0)
    rows = run_in_process(job)
    assert [r.status for r in rows] == ["failed", "failed"]
    assert [r.batch for r in rows] == [1, 4]
    assert all(r.reason.startswith("load:") and "broken.onnx" in r.reason for r in rows)


@pytest.mark.skipif(is_available("tensorrt"), reason="TensorRT is installed here")
def test_missing_tensorrt_gives_skipped_rows(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 64)
    rows = run_in_process(Job(kind="engine", source=str(plan), runtime="tensorrt", precision="fp16", preprocess=PRE))
    assert rows[0].status == "skipped" and "tensorrt" in rows[0].reason.lower()


def test_a_crashed_worker_becomes_a_failed_row(monkeypatch, tmp_path):
    def crash(*args, **kwargs):
        return subprocess.CompletedProcess(args[0], -11, "", "Fatal Python error: Segmentation fault\n")

    monkeypatch.setattr(runner.subprocess, "run", crash)
    rows = run_isolated(Job(kind="onnx", source="x.onnx", runtime="onnxruntime", precision="fp32"))
    assert rows[0].status == "failed" and "signal 11" in rows[0].reason and "Segmentation fault" in rows[0].reason


def test_a_hung_worker_becomes_a_failed_row(monkeypatch):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(runner.subprocess, "run", hang)
    rows = run_isolated(Job(kind="onnx", source="x.onnx", runtime="onnxruntime", precision="fp32", batches=(1, 2)), timeout=5)
    assert [r.status for r in rows] == ["failed", "failed"] and "timed out after 5 s" in rows[0].reason


def test_one_failing_job_does_not_stop_the_others(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"junk")
    jobs = [Job(kind="onnx", source=str(bad), runtime="onnxruntime", precision="fp32", preprocess=PRE),
            Job(kind="onnx", source=str(tmp_path / "missing.onnx"), runtime="onnxruntime", precision="int8", preprocess=PRE)]
    lines = []
    rows = run_jobs(jobs, isolate=False, progress=lines.append)
    assert [r.status for r in rows] == ["failed", "failed"] and "no such file" in rows[1].reason
    assert len(lines) == 4


def test_rows_sort_by_model_runtime_precision_batch():
    def row(m, rt, p, b):
        return BenchResult(model=m, source="s", runtime=rt, precision=p, batch=b, status="skipped", reason="r")

    rows = sort_rows([row("unet", "pytorch", "fp32", 1), row("egeunet", "onnxruntime", "int8", 8), row("egeunet", "onnxruntime", "fp32", 8),
                      row("egeunet", "pytorch", "fp32", 1), row("egeunet", "onnxruntime", "fp32", 1)])
    assert [(r.model, r.runtime, r.precision, r.batch) for r in rows] == [
        ("egeunet", "pytorch", "fp32", 1), ("egeunet", "onnxruntime", "fp32", 1), ("egeunet", "onnxruntime", "fp32", 8),
        ("egeunet", "onnxruntime", "int8", 8), ("unet", "pytorch", "fp32", 1)]
