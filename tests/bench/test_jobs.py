"""Job specs, inputs and machine-load records; the benchmark modules import no torch on their own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from lightseg_edge.bench import machine
from lightseg_edge.bench.jobs import Job, base_row, synthetic_image


def test_job_round_trips_through_json():
    job = Job(kind="export-dir", source="/x", runtime="onnxruntime", precision="int8", batches=(1, 8), model="ucmnet", threads=2,
              files={"int8": "/x/model.int8.onnx"}, notes=("n",))
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    row = base_row(job, 8, "skipped", "why")
    assert (row.model, row.batch, row.threads, row.notes) == ("ucmnet", 8, 2, ("n",))


def test_synthetic_image_is_deterministic_and_image_like():
    a, b = synthetic_image((96, 128), seed=3), synthetic_image((96, 128), seed=3)
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a[48, 64].mean() < a[2, 2].mean()  # a darker lesion in the middle of lighter skin


def test_load_record_counts_other_processes_work():
    before = machine.snapshot()
    after = dict(before, wall=before["wall"] + 2.0)
    if before["busy_s"] is not None:
        after.update(busy_s=before["busy_s"] + 3.0, own_s=before["own_s"] + 1.0)  # 3 CPU-s busy, 1 of them ours
    rec = machine.load_between(before, after, threads=2)
    assert rec["wall_s"] == 2.0 and rec["threads"] == 2 and "current_mhz" in rec["cpu"]
    if before["busy_s"] is not None:
        assert rec["other_cpu_s"] == 2.0 and rec["other_cpu_share"] == round(2.0 / (2.0 * rec["cores"]), 3)


def test_benchmark_modules_do_not_import_torch():
    code = ("import sys; import lightseg_edge.bench.runner, lightseg_edge.bench.matrix, lightseg_edge.bench.report, "
            "lightseg_edge.bench.worker, lightseg_edge.bench.claims, lightseg_edge.cli.bench; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
