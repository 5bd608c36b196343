"""What every reliability case checks: the exit code, one line that names the culprit, and what was left on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import pytest

# A real training run, as small as it gets (two images, one epoch at 64x64, one thread).
TRAIN_TINY = ["--max-train-images", "2", "--max-val-images", "2", "--epochs", "1", "--img-size", "64", "--batch-size", "2",
              "--threads", "1", "--no-progress", "--device", "cpu"]


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


def tiny_onnx(path: Path, h: object = 32, w: object = 32) -> Path:
    """A valid one-node ONNX (1x1 conv, 3 -> 1 channels) taking N x 3 x h x w; h and w may be symbolic names."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.01, np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(1, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, h, w])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by every onnxruntime the project supports
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path

