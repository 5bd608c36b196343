"""Running a script under benchmarks/ as ``python benchmarks/NAME.py ARGS`` would, in this process."""

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_script(monkeypatch):
    """``run_script(name, argv)`` -> the script's exit code (``SystemExit``'s code: 0, or the message it ended with)."""

    def run(name: str, argv):
        script = BENCHMARKS / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(script)] + [str(a) for a in argv])
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(script), run_name="__main__")
        return done.value.code

    return run
