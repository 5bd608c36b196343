"""Shared fixtures and capability-based skipping (gpu, tensorrt, slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightseg_edge._optional import is_available

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "assets" / "isic_sample"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def _cuda() -> bool:
    if not is_available("torch"):
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("LIGHTSEG_RUN_SLOW") == "1"
    has_cuda = _cuda()
    has_trt = is_available("tensorrt")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow or LIGHTSEG_RUN_SLOW=1"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none here"))
        if "tensorrt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA GPU; not installed/available here"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """Eight real ISIC 2018 pairs (192x192) committed to the repo, images/ + masks/ with a test split.csv."""
    return SAMPLE_DIR


def _isic_root():
    env = os.environ.get("LIGHTSEG_ISIC2018")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "isic2018"]:
        if (cand / "split.csv").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def isic_root() -> Path:
    """The full shared ISIC 2018 copy ($LIGHTSEG_ISIC2018 or ../shared/data/isic2018); skips when absent."""
    root = _isic_root()
    if root is None:
        pytest.skip("ISIC 2018 data not found: set LIGHTSEG_ISIC2018 or place it at ../shared/data/isic2018")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared cores and often a training job beside the tests: one torch thread is several times faster than two
    for the tiny inputs of CLI-level tests. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

