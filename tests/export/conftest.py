"""Fixtures for the export tests (helpers in export_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import pytest
from export_helpers import fit_weights

from lightseg_edge.models._weights import has_pretrained


@pytest.fixture(scope="session")
def fitted_weights(sample_dir, tmp_path_factory):
    """name -> weights path (None = use the shipped pretrained weights)."""
    cache: Dict[str, Optional[Path]] = {}
    folder = tmp_path_factory.mktemp("fitted")

    def get(name: str) -> Optional[Path]:
        if name not in cache:
            cache[name] = None if has_pretrained(name) else fit_weights(name, sample_dir, folder)
        return cache[name]

    return get
