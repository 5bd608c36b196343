"""lightseg-bench: every argument is checked before anything is measured, and measurements that cannot be written
where asked (a full disk) are saved elsewhere, with one error line saying where."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from reliability_helpers import assert_one_line_error, run_main, snapshot

from lightseg_edge.bench import runner
from lightseg_edge.cli.bench import main

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "isic_sample"
M = ["--model", "ucmnet", "--weights", "random"]
QUICK = ["--iters", "1", "--warmup", "0", "--threads", "1"]

BAD = [
    (["--warmup", "-1"], ["--warmup", "an integer >= 0"]),
    (["--warmup", "ten"], ["--warmup"]),
    (["--iters", "0"], ["--iters", "a positive integer"]),
    (["--iters", "3", "--min-time", "1"], ["--iters", "--min-time"]),
    (["--min-time", "0"], ["--min-time", "a positive number"]),
    (["--min-time", "nan"], ["--min-time"]),
    (["--threads", "0"], ["--threads"]),
    (["--img-size", "0"], ["--img-size"]),
    (["--img-size", "100"], ["--img-size", "100", "stride 64"]),
    (["--batch", "0"], ["--batch", "positive integers separated by commas"]),
    (["--batch", "1,,8"], ["--batch", "1,,8"]),
    (["--batch", "-1"], ["--batch"]),
    (["--precision", "fp64"], ["--precision", "fp64", "fp32,fp16,int8"]),
    (["--runtime", "pytorch,paddle"], ["--runtime", "paddle", "pytorch,onnxruntime,tensorrt,openvino,litert,coreml"]),
    (["--max-images", "0", "--data", str(SAMPLE)], ["--max-images"]),
    (["--max-images", "3"], ["--max-images", "--data"]),
    (["--split", "val"], ["--split", "--data"]),
    (["--data", "{tmp}/no-data"], ["--data", "no-data"]),
    (["--data", str(SAMPLE), "--split", "holdout"], ["--split", "holdout"]),
    (["--json", "{tmp}"], ["--json", "{tmp}", "is a folder"]),
    (["--csv", "{file}/r.csv"], ["--csv", "{file}/r.csv", "is a file"]),
    (["--markdown", "{tmp}/missing/r.md"], ["--markdown", "missing/r.md", "does not exist"]),
    (["--plot", "{tmp}/sub"], ["--plot", "{tmp}/sub"]),
    (["--json", "{tmp}/r.out", "--csv", "{tmp}/r.out"], ["--csv", "--json", "r.out"]),
    (["--csv", "{tmp}/r.csv"], ["--csv", "r.claims.csv", "is a folder"]),  # the claims table's sibling is in the way
    (["--export-dir", "{file}"], ["--export-dir"]),
]


@pytest.fixture
def no_measuring(monkeypatch):
    """A bad argument must stop the run before any model is loaded, exported or timed."""

    def refuse(*args, **kwargs):
        raise AssertionError("measured despite a bad argument")

    monkeypatch.setattr(runner, "run_jobs", refuse)
    monkeypatch.setattr("lightseg_edge.bench.matrix.export_model", refuse)


@pytest.mark.parametrize("argv, names", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_argument_is_one_line_before_any_measurement(argv, names, tmp_path, capsys, no_measuring):
    (tmp_path / "sub").mkdir()
    (tmp_path / "r.claims.csv").mkdir()
    (tmp_path / "a-file").write_bytes(b"x")
    fill = {"{tmp}": str(tmp_path), "{file}": str(tmp_path / "a-file")}
    argv = [_fill(a, fill) for a in argv]
    before = snapshot(tmp_path)
    source = [] if any(a in argv for a in ("--export-dir", "--onnx")) else M
    assert_one_line_error(run_main(main, source + argv, capsys), *[_fill(n, fill) for n in names])
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "r.claims.csv", "sub"]


def _fill(text: str, fill: dict) -> str:
    for k, v in fill.items():
        text = text.replace(k, v)
    return text


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_output_folder_is_refused_up_front(tmp_path, capsys, no_measuring):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_one_line_error(run_main(main, M + ["--json", str(ro / "r.json")], capsys), "--json", "not writable")
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------------------------- a full disk
@pytest.fixture
def in_process(monkeypatch, tmp_path):
    """Jobs in this process (a worker process costs seconds); the fallback file goes to a test folder."""
    real = runner.run_jobs
    monkeypatch.setattr(runner, "run_jobs", lambda jobs, **kw: real(jobs, **dict(kw, isolate=False)))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def _full_disk_for(suffix: str, monkeypatch) -> None:
    """Writes of files ending in ``suffix`` fail with ENOSPC when the written temporary file is renamed into place
    (the real atomic writer runs up to there, so its clean-up is tested too)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _measured(report: dict) -> None:
    (row,) = report["results"]
    assert row["status"] == "ok" and row["latency"]["n"] == 1


def test_a_full_disk_at_the_end_keeps_the_measurements_in_a_fallback_file(tmp_path, capsys, monkeypatch, in_process):
    (tmp_path / "tmp").mkdir()
    _full_disk_for(".md", monkeypatch)
    md, js = tmp_path / "out" / "r.md", tmp_path / "out" / "r.json"
    md.parent.mkdir()
    res = run_main(main, M + QUICK + ["--json", str(js), "--markdown", str(md)], capsys)
    line = assert_one_line_error(res, "--markdown", str(md), os.strerror(errno.ENOSPC))
    fallback = Path(re.search(r"saved in (\S+\.json)", line).group(1))
    assert fallback.parent == tmp_path / "tmp"
    _measured(json.loads(fallback.read_text()))
    _measured(json.loads(js.read_text()))  # written before the disk filled
    assert "ucmnet  pytorch" in res.out  # the table is printed as well
    assert sorted(p.name for p in md.parent.iterdir()) == ["r.json"]  # no half or temporary Markdown file


def test_when_no_fallback_file_can_be_written_the_json_goes_to_stdout(tmp_path, capsys, monkeypatch, in_process):
    _full_disk_for(".json", monkeypatch)  # the requested JSON and the fallback file both fail
    js = tmp_path / "r.json"
    res = run_main(main, M + QUICK + ["--json", str(js)], capsys)
    line = assert_one_line_error(res, "--json", str(js), "standard output")
    report, _ = json.JSONDecoder().raw_decode(res.out[res.out.index("{"):])
    _measured(report)
    assert "ucmnet  pytorch" in res.out
    assert [p.name for p in tmp_path.iterdir()] == ["tmp"] and list((tmp_path / "tmp").iterdir()) == []  # no temporary files
    assert "saved in" in line
