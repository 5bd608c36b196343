"""benchmarks/train_speed.py runs end to end on the committed sample: fresh processes per variant, its JSON and
Markdown, and the page faults that show what keeping freed memory changes (times are not asserted)."""

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"


def test_train_speed_script_writes_its_tables(tmp_path, run_script, sample_dir):
    variants = "fp32@128,fp32@128 malloc-default"
    assert run_script("train_speed", ["--models", "malunet", "--variants", variants, "--rounds", "1", "--steps", "1",
                                      "--threads", "1", "--data", sample_dir, "--out", tmp_path]) == 0
    rows = json.loads((tmp_path / "train_speed.json").read_text())["models"]["malunet"]
    kept, default = rows["fp32@128"]["rounds"][0], rows["fp32@128 malloc-default"]["rounds"][0]
    for r in (kept, default):
        assert r["s_per_image"] > 0 and r["page_faults_per_image"] >= 0 and r["peak_rss_mib"] > 0
    assert default["memory"] == "memory: glibc's default allocator" and kept["memory"].startswith("memory: ")
    md = (tmp_path / "train_speed.md").read_text()
    assert "| malunet | fp32@128 malloc-default |" in md and "fp32@128 malloc-default: memory: glibc's default allocator." in md


@pytest.mark.parametrize("variant,squeeze_first,pair_below", [("fp32@128", True, 8), ("fp32@128 unpaired", True, 0),
                                                              ("fp32@128 literal", False, 0)])
def test_reordering_variants_put_back_the_released_order(variant, squeeze_first, pair_below):
    runner = runpy.run_path(str(SCRIPT))["_Runner"]("lmsaunet_n32", variant)
    modules = list(runner.model.modules())
    assert {m.squeeze_first for m in modules if hasattr(m, "squeeze_first")} == {squeeze_first}
    assert {m.pair_below for m in modules if hasattr(m, "pair_below")} == {pair_below}
