"""A backend that fails or is missing becomes a row with its status and reason, never a crash."""

from __future__ import annotations

import os
import subprocess
import sys

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
    def crash(cmd, env, timeout, on_progress):
        return -11, "Fatal Python error: Segmentation fault\n"

    monkeypatch.setattr(runner, "_run_worker", crash)
    rows = run_isolated(Job(kind="onnx", source="x.onnx", runtime="onnxruntime", precision="fp32"))
    assert rows[0].status == "failed" and "signal 11" in rows[0].reason and "Segmentation fault" in rows[0].reason


def test_a_hung_worker_becomes_a_failed_row(monkeypatch):
    def hang(cmd, env, timeout, on_progress):
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(runner, "_run_worker", hang)
    rows = run_isolated(Job(kind="onnx", source="x.onnx", runtime="onnxruntime", precision="fp32", batches=(1, 2)), timeout=5)
    assert [r.status for r in rows] == ["failed", "failed"] and "timed out after 5 s" in rows[0].reason


def _python(code: str):
    return [sys.executable, "-c", "import sys; from lightseg_edge.bench.worker import progress_line; " + code]


def test_worker_progress_lines_go_to_the_callback_not_into_its_stderr():
    seen = []
    code, err = runner._run_worker(_python("sys.stderr.write(progress_line(0, 5) + 'RuntimeError: boom\\n' + progress_line(5, 5)); "
                                           "sys.exit(3)"), dict(os.environ), 60, lambda done, total: seen.append((done, total)))
    assert (code, err, seen) == (3, "RuntimeError: boom\n", [(0, 5), (5, 5)])


def test_a_worker_past_its_timeout_is_killed(monkeypatch):
    started = []
    real_popen = runner.subprocess.Popen
    monkeypatch.setattr(runner.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    with pytest.raises(subprocess.TimeoutExpired):
        runner._run_worker(_python("import time; time.sleep(120)"), dict(os.environ), 0.5, None)
    assert started[0].poll() is not None  # killed and reaped, not left running


def test_job_lines_show_elapsed_time_and_an_eta_from_the_jobs_done(monkeypatch):
    now = [0.0]
    bars = []

    def job_of_30_s(job, environment=None, on_accuracy=None):
        bars.append(on_accuracy)
        now[0] += 30.0
        return [BenchResult(model="m", source="s", runtime=job.runtime, precision=job.precision, batch=1, status="skipped", reason="r")]

    monkeypatch.setattr(runner, "run_in_process", job_of_30_s)
    jobs = [Job(kind="onnx", source="m.onnx", runtime="onnxruntime", precision=p, preprocess=PRE) for p in ("fp32", "fp16", "int8")]
    lines = []
    run_jobs(jobs, isolate=False, progress=lines.append, clock=lambda: now[0])
    heads = [ln for ln in lines if ln.startswith("[")]
    assert heads == ["[1/3] m.onnx onnxruntime fp32 (batch 1)  elapsed 0s",
                     "[2/3] m.onnx onnxruntime fp16 (batch 1)  elapsed 30s, ETA 1m00s",
                     "[3/3] m.onnx onnxruntime int8 (batch 1)  elapsed 1m00s, ETA 30s"]
    assert all(callable(b) for b in bars)  # each job's accuracy step gets a bar to report to
    bars.clear()
    run_jobs(jobs[:1], isolate=False, progress=None, clock=lambda: now[0])
    assert bars == [None]  # nobody reads progress: none is asked for


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
