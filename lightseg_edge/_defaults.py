"""Defaults every layer shares that depend on the user's environment (standard library only, light to import)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def default_data_dir() -> Optional[str]:
    """``--data`` default: $LIGHTSEG_ISIC2018, else ``data/isic2018`` in the working folder, when present."""
    env = os.environ.get("LIGHTSEG_ISIC2018")
    if env:
        return env
    cand = Path.cwd() / "data" / "isic2018"
    return str(cand.resolve()) if cand.is_dir() else None
