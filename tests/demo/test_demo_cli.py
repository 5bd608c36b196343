"""lightseg-demo's command line: argument errors, one-line failures, the optional dependency, lazy imports."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from demo_helpers import ROOT, require_gradio

from lightseg_edge.cli.demo import main


def test_bad_port_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--port", "70000"])
    assert exc.value.code == 2 and "expected a TCP port 1-65535, got '70000'" in capsys.readouterr().err


def test_missing_gradio_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError, as when it is not installed
    assert main(["ucmnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: the 'gradio' package is needed for the web demo")
    assert "pip install 'lightseg-edge[demo]'" in err


def test_unknown_source_is_one_line(capsys, tmp_path):
    require_gradio()
    pytest.importorskip("torch")
    assert main(["no_such_model"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "no_such_model" in err
    assert main([str(tmp_path / "missing.onnx")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_busy_port_is_one_line(capsys):
    require_gradio()
    pytest.importorskip("torch")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ucmnet", "--port", str(port), "--no-warmup", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot serve on 127.0.0.1:{port}: the port is in use (or not allowed); pick another with --port"


def test_importing_the_package_and_cli_loads_no_gradio_or_torch():
    code = ("import sys, lightseg_edge, lightseg_edge.demo, lightseg_edge.demo.analysis, lightseg_edge.demo.sources, "
            "lightseg_edge.demo.app, lightseg_edge.cli.demo; "
            "print(sorted(m for m in ('gradio', 'gradio_client', 'torch', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(ROOT), check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_and_extra_are_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads(Path(ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["lightseg-demo"] == "lightseg_edge.cli.demo:main"
    assert any(req.startswith("gradio") for req in meta["optional-dependencies"]["demo"])
