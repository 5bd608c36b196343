"""The claims table: every registry model's paper figures next to ours, with verdicts that follow from the numbers."""

from __future__ import annotations

import pytest

from lightseg_edge.bench.claims import _half_unit, check_claims, claims_table, memory_formula_mb, model_figures
from lightseg_edge.bench.records import BenchResult, MemoryStats
from lightseg_edge.models import get_model_config, list_models

VERDICTS = {"reproduced", "differs", "not claimed", "not measured"}


@pytest.fixture(scope="module")
def figures():
    # MACs only for ucmnet (about a second); U-Net's would take ~40 s of one core.
    return {name: model_figures(name, with_macs=(name == "ucmnet")) for name in list_models()}


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_its_paper_figures_and_a_verdict(name, figures):
    checks = {c.claim: c for c in check_claims(name, figures[name])}
    paper = get_model_config(name).claims
    assert list(checks) == ["params", "gmacs", "memory_mb"]
    assert checks["params"].paper == paper.params
    assert checks["params"].released == paper.released_code_params
    assert checks["gmacs"].paper == paper.gmacs
    assert checks["memory_mb"].paper == paper.memory_mb
    assert checks["params"].measured == figures[name].params
    assert checks["memory_mb"].measured == pytest.approx(memory_formula_mb(figures[name].params, (256, 256)))
    for c in checks.values():
        assert c.verdict in VERDICTS and c.why
    if paper.params is not None:
        assert checks["params"].verdict in ("reproduced", "differs")


def test_table_covers_the_whole_registry(figures):
    table = claims_table(figures=figures)
    assert {c.model for c in table} == set(list_models())
    assert len(table) == 3 * len(list_models())


def test_ucmnet_discrepancies_are_reported_with_their_reasons(figures):
    fig = figures["ucmnet"]
    by = {c.claim: c for c in check_claims("ucmnet", fig)}
    assert (by["params"].paper, by["params"].released, by["params"].measured) == (49_932, 47_436, 46_188)
    assert by["params"].verdict == "differs"
    assert "47,436" in by["params"].why and "1,248" in by["params"].why and "46,055" in by["params"].why
    assert by["gmacs"].measured == pytest.approx(fig.macs / 1e9)
    assert by["gmacs"].verdict == "differs" and "thop" in by["gmacs"].why
    assert by["memory_mb"].measured == pytest.approx(46_188 * 4 / 2**20 + 1.0)
    assert by["memory_mb"].verdict == "differs"
    assert "formula, not a measurement" in by["memory_mb"].why and "49,932" in by["memory_mb"].why


@pytest.mark.parametrize("name", ["egeunet", "malunet", "unext_s"])
def test_baselines_reproduce_params_and_memory_formula(name, figures):
    by = {c.claim: c for c in check_claims(name, figures[name])}
    assert by["params"].verdict == "reproduced"
    assert by["memory_mb"].verdict == "reproduced"


def test_lmsaunet_039m_is_the_n32_model(figures):
    n8 = {c.claim: c for c in check_claims("lmsaunet", figures["lmsaunet"])}
    n32 = {c.claim: c for c in check_claims("lmsaunet_n32", figures["lmsaunet_n32"])}
    assert n8["params"].verdict == "differs" and "N = 32" in n8["params"].why
    assert n32["params"].verdict == "reproduced" and n32["params"].measured == 387_878
    assert n8["gmacs"].verdict == "not measured" and n8["memory_mb"].verdict == "not claimed"


def test_memory_claim_shows_the_measured_inference_memory(figures):
    row = BenchResult(model="ucmnet", source="x", runtime="onnxruntime", precision="fp32", batch=1, status="ok",
                      memory=MemoryStats(load_delta_mb=13.0, inference_peak_delta_mb=20.2, process_peak_mb=82.0))
    mem = [c for c in check_claims("ucmnet", figures["ucmnet"], [row]) if c.claim == "memory_mb"][0]
    assert mem.extra["measured"][0]["inference_peak_delta_mb"] == 20.2
    assert "inference peak +20.2 MB" in mem.why


@pytest.mark.parametrize("value, tol", [(390_000, 5_000), (49_932, 0.0), (0.0465, 0.00005), (1.19, 0.005), (54.7378, 0.00005)])
def test_rounding_tolerance_of_printed_figures(value, tol):
    assert _half_unit(value) == pytest.approx(tol)
