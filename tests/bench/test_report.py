"""Console tables and the JSON / CSV / Markdown / PNG writers (atomic, parseable)."""

from __future__ import annotations

import csv
import json

import pytest

from lightseg_edge.bench.records import BenchReport, BenchResult, ClaimCheck, LatencyStats, MemoryStats
from lightseg_edge.bench.report import (
    claims_csv_path, format_claims, format_markdown, format_report, format_results, format_results_markdown, plot_points, write_outputs,
)
from lightseg_edge.errors import InvalidInputError


def _report() -> BenchReport:
    ok = BenchResult(model="ucmnet", source="ucmnet", runtime="onnxruntime", precision="fp32", batch=1, status="ok", img_size=(256, 256),
                     params=46188, macs=33_716_224, size_bytes=256_245, latency=LatencyStats.from_ns([7_500_000, 7_900_000]),
                     e2e=LatencyStats.from_ns([9_000_000]), memory=MemoryStats(load_delta_mb=12.9, inference_peak_delta_mb=20.2),
                     accuracy_note="accuracy not available: random weights", machine={"loadavg_before": [0.5, 0.4, 0.3], "other_cpu_share": 0.02})
    big = BenchResult(model="unext_s", source="unext_s", runtime="onnxruntime", precision="fp32", batch=1, status="ok", params=253561,
                      macs=99_229_696, latency=LatencyStats.from_ns([4_100_000]))
    skipped = BenchResult(model="ucmnet", source="ucmnet", runtime="tensorrt", precision="fp16", batch=1, status="skipped", reason="TensorRT is not installed")
    claim = ClaimCheck("ucmnet", "memory_mb", 1.19, 1.1762, "differs", "a formula, not a measurement", "MB",
                       extra={"measured": [{"runtime": "onnxruntime", "precision": "fp32", "batch": 1, "load_delta_mb": 12.9,
                                            "inference_peak_delta_mb": 20.2, "process_peak_mb": 82.0}]})
    return BenchReport(results=(ok, big, skipped), claims=(claim,), environment={"cpu": {"model": "test cpu", "usable_cores": 2}},
                       settings={"threads": 2, "timing_description": "x"}, notes=("a note",), created="now")


def test_console_tables_show_values_and_reasons():
    rep = _report()
    text = format_results(rep.results)
    assert "46,188" in text and "0.0337" in text and "7.70" in text and "20.2" in text
    assert "skipped [2]" in text and "[2] TensorRT is not installed" in text
    assert "[1] accuracy not available: random weights" in text
    claims = format_claims(rep.claims)
    assert "1.19" in claims and "1.1762" in claims and "onnxruntime fp32 +20.2" in claims and "formula, not a measurement" in claims
    assert "a note" in format_report(rep)


@pytest.mark.parametrize("verbosity, claims, reasons", [(0, False, False), (1, True, False), (2, True, True)])
def test_console_verbosity_decides_claims_and_their_reasons(verbosity, claims, reasons):
    text = format_report(_report(), verbosity)
    assert "7.70" in text  # the results are always there
    assert ("paper claims vs measured" in text) == claims
    assert ("a formula, not a measurement" in text) == reasons
    assert ("--verbose gives the reason" in text) == (claims and not reasons)


@pytest.mark.parametrize("other_cpu, calls_ms, flagged", [
    (0.02, [7.5, 7.6, 7.7, 7.9], None),
    (0.30, [7.5, 7.6, 7.7, 7.9], "other processes used 30% of the CPU"),
    (0.02, [7.0, 7.1, 7.2, 30.0, 31.0], "p90 is 4.2x p50"),
])
def test_rows_measured_under_load_or_with_a_wide_spread_are_flagged(other_cpu, calls_ms, flagged):
    row = _report().results[0].with_(machine={"other_cpu_share": other_cpu}, latency=LatencyStats.from_ns([int(ms * 1e6) for ms in calls_ms]))
    assert (row.noise is None) == (flagged is None)
    rep = BenchReport(results=(row,), environment=_report().environment, settings=_report().settings)
    text, md = format_report(rep), format_results_markdown(rep.results)
    if flagged:
        assert flagged in row.noise and flagged in text and flagged in md and "1 of 1 timed rows are unreliable" in text
    else:
        assert "unreliable" not in text and "unreliable" not in md


def test_a_report_reads_back_from_its_json(tmp_path):
    rep = _report()
    write_outputs(rep, tmp_path / "r.json")
    back = BenchReport.from_dict(json.loads((tmp_path / "r.json").read_text()))
    assert back == rep and format_markdown(back) == format_markdown(rep)


def test_all_files_are_written_and_parse(tmp_path):
    rep = _report()
    paths = write_outputs(rep, tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md", tmp_path / "r.png")
    assert [p.name for p in paths] == ["r.json", "r.csv", "r.claims.csv", "r.md", "r.png"]
    d = json.loads((tmp_path / "r.json").read_text())
    assert [r["status"] for r in d["results"]] == ["ok", "ok", "skipped"] and d["claims"][0]["verdict"] == "differs"
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 3 and rows[0]["compute_p50"] == "7.7" and rows[2]["reason"] == "TensorRT is not installed"
    claims = list(csv.DictReader(claims_csv_path(tmp_path / "r.csv").open()))
    assert claims[0]["paper"] == "1.19"
    md = (tmp_path / "r.md").read_text()
    assert "| model | runtime | prec |" in md and "## Paper claims vs measured" in md
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.claims.csv", "r.csv", "r.json", "r.md", "r.png"]  # no temp files left


def test_plot_places_only_measured_rows_with_params_and_still_writes_without_any(tmp_path):
    rep = _report()
    assert {(r.model, r.runtime) for r in plot_points(rep.results)} == {("ucmnet", "onnxruntime"), ("unext_s", "onnxruntime")}
    empty = BenchReport(results=(rep.results[2],), settings={})
    write_outputs(empty, plot_path=tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def test_a_folder_is_not_an_output_file(tmp_path):
    with pytest.raises(InvalidInputError, match="is a folder"):
        write_outputs(_report(), json_path=tmp_path)


def test_rows_measured_at_another_machine_speed_are_flagged():
    """A VM that switches speed between jobs: the row whose speed probe ran 2x slower than the run's median is
    flagged, the rows at the usual speed are not, and rows without a probe are left alone."""
    from lightseg_edge.bench.runner import mark_speed_drift

    base = _report().results[0]
    probes = [[1.0, 1.0], [1.02, 1.0], [2.1, 1.9], [0.98, 1.01]]
    rows = [base.with_(machine={"other_cpu_share": 0.0, "speed_probe_ms": p}) for p in probes] + [base.with_(machine={})]
    marked = mark_speed_drift(rows)
    flagged = [r.noise is not None for r in marked]
    assert flagged == [False, False, True, False, False]
    assert "1.99x as slow" in marked[2].noise and marked[4].machine == {}


def test_speed_probe_and_load_record():
    from lightseg_edge.bench.machine import load_between, snapshot, speed_probe_ms

    assert speed_probe_ms(repeats=3) > 0
    rec = load_between(snapshot(), snapshot())
    assert len(rec["speed_probe_ms"]) == 2 and all(p > 0 for p in rec["speed_probe_ms"])
