"""Fixtures for the benchmark tests: a fake clock, and one real (tiny) ucmnet export."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def ucmnet_export(sample_dir, tmp_path_factory) -> Path:
    """A real lightseg-export folder of ucmnet (random weights, seed 0): fp32 + fp16 + INT8 ONNX and manifest.json.

    Kept small: no simplifier, 4 calibration and 2 check images (the committed 8-image sample)."""
    from lightseg_edge.export import ExportConfig, export

    out = tmp_path_factory.mktemp("bench-export") / "ucmnet"
    cfg = ExportConfig(model="ucmnet", weights="random", fp16=True, int8=True, calib_data=str(sample_dir), calib_images=4,
                       output=str(out), data=str(sample_dir), parity_images=2, eval_images=2, fp16_check_images=2,
                       simplifier="none", engine="off", progress=False)
    return export(cfg).output
