"""benchmarks/prepost.py runs end to end: it exports, checks that predict(), the float reference path and the
earlier wide band give the same masks, and writes its JSON and Markdown with the per-stage figures (the timings
themselves are not asserted)."""

import json

import pytest

pytest.importorskip("onnxruntime")


def test_prepost_script_writes_its_tables(tmp_path, run_script):
    assert run_script("prepost", ["--models", "ucmnet", "--size", "320", "--rounds", "1", "--iters", "2", "--out", tmp_path]) == 0
    result = json.loads((tmp_path / "prepost.json").read_text())
    m = result["models"]["ucmnet"]
    assert m["masks_identical"] is True
    assert set(m["stages_ms"]) == {"pre", "infer", "post"} and all(v > 0 for v in m["stages_ms"].values())
    assert set(m["median_ms"]) >= {"infer", "predict", "predict (band 1e-3)", "pre", "post"}
    assert m["wide_band_over_infer"] > 0 and m["post_over_wide_band_post"] > 0
    for setting in ("scratch", "no scratch"):  # each from two fresh processes that timed infer and predict on new images
        app = m["new_image"][setting]
        assert len(app["processes"]) == 2 and app["predict_over_infer"] > 0
        assert set(app["page_faults_per_call"]) == {"infer", "predict"}
    assert "| ucmnet |" in (tmp_path / "prepost.md").read_text()
