"""Memory measurement: RSS deltas follow real allocations; tegrastats lines parse; file sizes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from lightseg_edge.bench.memory import file_sizes, measure_inference, parse_tegrastats



def _in_fresh_process(code: str) -> dict:
    """Run ``code`` (which prints one JSON object) in a new interpreter, as the bench runs each job.

    In a process that has run other tests, freed heap pages stay resident when an earlier library raised glibc's
    mmap/trim thresholds, so a new allocation can reuse them without RSS moving: deltas only mean something from a
    fresh process.
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_load_delta_sees_memory_kept_by_the_loader():
    mem = _in_fresh_process("""
        import json
        import numpy as np
        from lightseg_edge.bench.memory import measure_load
        kept = []
        _, mem = measure_load(lambda: kept.append(np.ones(48 << 20, np.uint8)))  # 48 MiB touched and kept
        print(json.dumps(mem))
    """)
    assert mem["load_delta_mb"] > 40
    assert mem["load_peak_delta_mb"] >= mem["load_delta_mb"] - 1


def test_inference_peak_sees_temporary_memory():
    mem = _in_fresh_process("""
        import json
        import numpy as np
        from lightseg_edge.bench.memory import measure_inference
        def run():
            a = np.ones(64 << 20, np.uint8)  # touched, then freed when the call returns
            a.sum()
        print(json.dumps(measure_inference(run, runs=5)))
    """)
    assert mem["inference_peak_delta_mb"] > 50
    assert mem["runs"] == 5 and mem["samples"] >= 2
    assert mem["process_peak_mb"] >= mem["rss_before_inference_mb"] + 50


def test_inference_loop_stops_early_on_a_time_budget():
    calls = []
    mem = measure_inference(lambda: calls.append(1), runs=1000, max_seconds=0.0)
    assert mem["runs"] == 3 and len(calls) == 3  # at least MIN_MEMORY_RUNS, then the (zero) budget ends it


@pytest.mark.parametrize("line, want", [
    ("RAM 2915/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729] EMC_FREQ 0% GR3D_FREQ 12% cpu@48.5C VDD_IN 4467mW/4467mW",
     {"ram_used_mb": 2915, "ram_total_mb": 7620, "swap_used_mb": 0, "gr3d_percent": 12, "gr3d_mhz": None}),
    ("RAM 1500/3964MB (lfb 188x4MB) SWAP 10/1982MB CPU [5%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 45%@921 APE 25",
     {"ram_used_mb": 1500, "ram_total_mb": 3964, "swap_used_mb": 10, "gr3d_percent": 45, "gr3d_mhz": 921}),
])
def test_parse_tegrastats(line, want):
    assert parse_tegrastats(line) == want


def test_parse_tegrastats_ignores_other_lines():
    assert parse_tegrastats("tegrastats: permission denied") is None


def test_file_sizes(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x" * 1234)
    assert file_sizes({"fp32": str(tmp_path / "a.onnx"), "missing": str(tmp_path / "b.onnx"), "none": None}) == {"fp32": 1234}


@pytest.mark.gpu
def test_nvml_probe_reads_device_memory():  # needs an NVIDIA driver
    from lightseg_edge.bench.memory import nvml_probe_for

    probe = nvml_probe_for("cuda:0")
    assert probe is not None
    try:
        proc, device = probe.read()
        assert device is None or device > 0
    finally:
        probe.close()
