"""Every reliability module runs with one torch thread (see the root conftest's ``one_torch_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _reliability_threads(one_torch_thread):
    yield
