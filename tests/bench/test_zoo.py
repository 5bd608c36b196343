"""The zoo table: one row per registry model, accuracy only from shipped cards, latency only from ORT fp32 batch-1 rows."""

from __future__ import annotations

import json

import pytest

from lightseg_edge.bench import zoo
from lightseg_edge.cli import zoo as zoo_cli
from lightseg_edge.bench.records import BenchReport, BenchResult, LatencyStats
from lightseg_edge.models import list_models
from lightseg_edge.models._weights import has_pretrained


def _report(tmp_path, rows):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BenchReport(results=tuple(rows)).to_dict()))
    return path


def _row(model, runtime="onnxruntime", precision="fp32", batch=1, status="ok", ms=(10, 12, 14), tta="none"):
    lat = LatencyStats.from_ns([int(m * 1e6) for m in ms], batch=batch)
    return BenchResult(model=model, source="x", runtime=runtime, precision=precision, batch=batch, status=status, latency=lat,
                       reason=None if status == "ok" else "it broke", tta=tta)


def test_latency_comes_only_from_ort_fp32_batch1(tmp_path):
    path = _report(tmp_path, [_row("ucmnet"), _row("ucmnet", runtime="pytorch", ms=(1, 1, 1)), _row("ucmnet", precision="int8", ms=(2, 2, 2)),
                              _row("ucmnet", batch=8, ms=(3, 3, 3)), _row("egeunet", status="failed"), _row("malunet", tta="flips")])
    assert zoo._latencies(path) == {"ucmnet": pytest.approx(12.0)}  # a test-time-augmented row is not the model's latency


def test_table_has_every_model_and_only_shipped_accuracy(tmp_path, monkeypatch):
    monkeypatch.setattr("lightseg_edge.models.complexity.complexity", lambda name: _FakeComplexity())
    rows = zoo.zoo_rows(_report(tmp_path, [_row("ucmnet")]))
    assert [r.model for r in rows] == list_models()
    for r in rows:
        assert (r.card is not None) == has_pretrained(r.model)
    text = zoo.zoo_markdown(rows)
    for name in list_models():
        assert f"| `{name}` |" in text
    card = next(r for r in rows if r.model == "ucmnet").card
    assert f"{card['metrics']['test']['mdice']:.4f}" in text and "| 12.0 |" in text
    assert "not trained (48 GMACs" in text  # unet says why it has no weights


def test_a_fine_tuned_card_says_so():
    card = {"training": {"epochs_run": 30, "config": {"init_weights": "egeunet.safetensors", "init_sha256": "ab" * 32}}}
    assert zoo._epochs(card) == "30, fine-tuned"
    assert zoo._epochs({"training": {"epochs_run": 18, "config": {}}}) == "18"
    card["training"]["interpolation"] = {"chosen_alpha": 0.75}
    assert zoo._epochs(card) == "30, fine-tuned, WiSE-FT 0.75"
    row = zoo.ZooRow("egeunet", 1, 0.1, {**card, "metrics": {}}, None, None, None, None)
    assert "WiSE-FT 0.75 |" in zoo.zoo_markdown([row]) and "a chosen on val" in zoo.zoo_markdown([row])
    assert "WiSE-FT" not in zoo.zoo_markdown([zoo.ZooRow("ucmnet", 1, 0.1, None, None, None, None, None)])
    card["training"]["config"]["augment"] = "dermoscope"
    card["training"]["interpolation"] = {"chosen_alpha": 0.5, "selection": "val-shifts"}
    assert zoo._epochs(card) == "30, fine-tuned, `dermoscope` augmentations, WiSE-FT 0.5 on val + shifts"
    assert "\"on val + shifts\": on its mean over" in zoo.zoo_markdown([zoo.ZooRow("egeunet", 1, 0.1, {**card, "metrics": {}}, None, None, None, None)])


def test_bad_latency_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert zoo_cli.main(["--latency", str(bad)]) == 2
    assert "x.json: not a lightseg-bench JSON report" in capsys.readouterr().err


class _FakeComplexity:
    """Counting MACs of U-Net takes seconds; the counts have their own tests in tests/models."""

    params, macs = 1000, 2e9


def test_readme_block_is_replaced_and_nothing_else(tmp_path):
    begin, end = zoo.markers(zoo.ZOO_BLOCK)
    doc = f"intro\n{begin}\nold table\n{end}\noutro\n"
    assert zoo.replace_block(doc, "| new |\n", zoo.ZOO_BLOCK) == f"intro\n{begin}\n| new |\n{end}\noutro\n"
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert zoo_cli.main(["--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers here\n"
