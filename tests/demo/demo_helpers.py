"""Helpers shared by the demo tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Optional

import pytest

from lightseg_edge._optional import is_available

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("ucmnet", "egeunet")  # A and B of the side-by-side tab, in this order
IMAGE_NAME = "ISIC_0000000.jpg"
SERVER_START_S = 90

# The Debian packages' real binaries first (the /usr/bin names are shell wrappers), then whatever is on PATH.
BROWSER_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium/chromium",
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
)


def find_chromium() -> Optional[str]:
    """$LIGHTSEG_CHROMIUM, else the system Chromium (Debian's chromium-headless-shell or chromium package)."""
    env = os.environ.get("LIGHTSEG_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in BROWSER_CANDIDATES:
        path = cand if os.path.isabs(cand) else shutil.which(cand)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def require_gradio() -> None:
    if not is_available("gradio"):
        pytest.skip("gradio is not installed (pip install 'lightseg-edge[demo]')")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
