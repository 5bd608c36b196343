"""The library layers import no command-line or training code: export, bench, runtimes and serve are usable without
cli/ (and without train/), so an app embedding them gets none of the command lines' code."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightseg_edge"
LAYERS = ("export", "bench", "runtimes", "serve")
FORBIDDEN = ("cli", "train")


def _package_imports(path: Path) -> Iterator[str]:
    """Every lightseg_edge module the file imports, as a dotted name inside the package (relative imports resolved)."""
    here = path.relative_to(PACKAGE).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[: len(here) - (node.level - 1)])
            yield ".".join(base + ([node.module] if node.module else []))
        else:
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])]
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield from (n[len("lightseg_edge."):] for n in names if n.startswith("lightseg_edge."))


@pytest.mark.parametrize("layer", LAYERS)
def test_library_layers_do_not_import_the_command_line(layer):
    bad = [f"{p.relative_to(PACKAGE)} imports {m}" for p in sorted((PACKAGE / layer).rglob("*.py"))
           for m in _package_imports(p) if m.split(".")[0] in FORBIDDEN]
    assert not bad, bad


def test_the_check_sees_relative_imports(tmp_path):
    bench = PACKAGE / "bench" / "triton_load.py"
    assert "errors" in set(_package_imports(bench)) and "_optional" in set(_package_imports(bench))
