"""Fixtures for the demo tests: the shipped models' reference masks, and a real ``lightseg-demo`` server.

The server is the console script's code run as a subprocess on 127.0.0.1 and a free port, with ``--device cpu``
and one torch thread, so the test process computes the very same masks with ``load_predictor``. It is shared by
the browser and the API tests and stopped with SIGTERM at the end, which must exit 0 (clean shutdown).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
from demo_helpers import IMAGE_NAME, MODELS, ROOT, SERVER_START_S, free_port, require_gradio

from lightseg_edge._optional import is_available


@pytest.fixture(scope="session")
def sample_image(sample_dir) -> Path:
    return sample_dir / "images" / IMAGE_NAME


@pytest.fixture(scope="session")
def reference_masks(sample_image) -> Dict[str, np.ndarray]:
    """What ``load_predictor(name, device='cpu').predict`` gives on the sample image, for each demo model."""
    if not is_available("torch"):
        pytest.skip("torch is not installed: the shipped models run on PyTorch")
    import torch

    from lightseg_edge.data.io import read_image
    from lightseg_edge.runtimes import load_predictor

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server runs (OMP_NUM_THREADS=1): the same kernels, the same bits
    try:
        image = read_image(sample_image)
        out = {}
        for name in MODELS:
            with load_predictor(name, device="cpu") as p:
                out[name] = p.predict(image)
        return out
    finally:
        torch.set_num_threads(before)


class DemoProcess:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: List[str] = []
        self.url: Optional[str] = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"serving .* on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()  # the process ended

    def wait_ready(self, timeout: float) -> str:
        self._ready.wait(timeout)
        if self.url is None:
            raise AssertionError("lightseg-demo did not start:\n" + "\n".join(self.lines[-40:]))
        return self.url

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="session")
def demo_server(reference_masks, tmp_path_factory):
    """A running ``lightseg-demo ucmnet egeunet --device cpu`` on 127.0.0.1 (``.url``).

    Teardown is a check too: SIGTERM must stop it within 30 s with exit code 0, and its upload folder is gone."""
    require_gradio()
    port = free_port()
    tmp = tmp_path_factory.mktemp("server_tmp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "lightseg_edge.cli.demo", *MODELS, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = DemoProcess(proc)
    try:
        server.wait_ready(SERVER_START_S)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server._reader.join(timeout=5)
    assert proc.returncode == 0, f"lightseg-demo exited {proc.returncode} on SIGTERM:\n{server.output}"
    assert server.lines[-1] == "lightseg-demo: stopped", server.output
    assert not list(tmp.glob("lightseg-demo-*")), "the server left its upload folder behind"
