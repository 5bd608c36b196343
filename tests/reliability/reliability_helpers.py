"""What every reliability case checks: the exit code, one line that names the culprit, and what was left on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import pytest


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def run_main(main: Callable[[List[str]], int], argv: Sequence[str], capsys: pytest.CaptureFixture) -> Outcome:
    """Run a CLI's ``main`` in this process; argparse's own exits count as exit codes."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_one_line_error(outcome: Outcome, *names: object, code: int = 2) -> str:
    """Exit ``code``; stderr ends in exactly one 'error:' line naming every one of ``names``; no traceback."""
    assert outcome.code == code, f"exit {outcome.code}, expected {code}; stderr: {outcome.err[-2000:]}"
    assert "Traceback" not in outcome.err, outcome.err[-2000:]
    errors = [line for line in outcome.err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}: {outcome.err[-2000:]}"
    line = errors[0]
    assert len(line) < 600, f"error line of {len(line)} characters: {line[:300]}..."
    for name in names:
        assert str(name) in line, f"{name!s} not named in: {line}"
    return line


def snapshot(folder: Path) -> Dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (hidden ones included), to prove nothing changed."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
