"""The code that runs on Jetson (JetPack 5 ships Python 3.8) must not need a newer Python.

vermin finds the syntax and stdlib APIs newer than 3.8. Two things it cannot judge alone:

- Annotations under ``from __future__ import annotations`` are never evaluated, so ``int | None`` and ``list[int]``
  there are fine on 3.8; without that import (or where the module evaluates them with ``typing.get_type_hints`` /
  ``singledispatch``) they run at definition time and are not. vermin's ``--eval-annotations`` treats every
  annotation as evaluated (noisy on postponed ones); without it, it also stops flagging ``list[int]`` in ordinary
  code (a miss). So each postponed annotation is blanked out, keeping line numbers, and vermin runs with
  ``--eval-annotations`` on the result: whatever it flags is evaluated on 3.8.
- ``X | Y`` between types at run time (3.10): vermin's ``--feature union-types`` heuristic also flags integer flags
  such as ``os.O_WRONLY | os.O_CREAT``, so a small AST check flags only ``|`` next to ``None`` or a builtin type, in
  ``isinstance``/``issubclass`` type arguments, and anywhere inside an evaluated annotation.
- Methods called on a variable whose type vermin cannot infer (``name.removeprefix(...)``, ``path.is_relative_to``):
  the same AST check flags the few 3.9+ method names that no older stdlib type uses.

Every file present under the listed folders is scanned, so new runtime modules are covered without editing this test.
"""

from __future__ import annotations

import ast
import builtins
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightseg_edge"

# The Jetson-side code: the runtime layer and what it imports, plus the doctor and its probe.
TARGETS = (
    "runtimes",
    "data/transforms.py",
    "data/io.py",
    "types.py",
    "errors.py",
    "_optional.py",
    "_progress.py",
    "__init__.py",
    "_version.py",
    "bench/environment.py",
    "cli/doctor.py",
)

VERMIN_ARGS = (
    "--no-config-file",  # a vermin.ini / setup.cfg elsewhere must not change the verdict
    "-t=3.8-",  # everything must run on 3.8 or older
    "--violations",  # report only what breaks that target
    "--eval-annotations",  # safe: postponed annotations are blanked out first (see the module docstring)
    "--no-tips",
    "--format",
    "parsable",  # file:line:col:py2:py3:feature
    "--processes=1",  # the machine's cores belong to training jobs; a few files do not need more
)

_TYPE_NAMES = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type) and not n[0].isupper()}
_EVALUATES_ANNOTATIONS = ("get_type_hints", "singledispatch")
# 3.9+ methods of str/bytes, pathlib.Path and int whose names older stdlib types do not use.
_NEWER_METHODS = {
    "removeprefix": "3.9",
    "removesuffix": "3.9",
    "is_relative_to": "3.9",
    "with_stem": "3.9",
    "bit_count": "3.10",
    "hardlink_to": "3.10",
}


def target_files() -> List[Path]:
    files = []
    for rel in TARGETS:
        path = PACKAGE / rel
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts))
        else:
            files.append(path)  # a listed file that disappeared fails loudly in the test below
    return files


def _annotation_nodes(tree: ast.AST) -> List[ast.expr]:
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            nodes.append(node.returns)
        elif (isinstance(node, ast.arg) and node.annotation is not None) or isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return nodes


def _postponed(tree: ast.Module, source: str) -> bool:
    future = any(
        isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names) for n in tree.body
    )
    return future and not any(word in source for word in _EVALUATES_ANNOTATIONS)


def blank_postponed_annotations(source: str) -> str:
    """``source`` with each never-evaluated annotation replaced by ``0`` plus spaces (line and column layout kept)."""
    tree = ast.parse(source)
    if not _postponed(tree, source):
        return source
    data = bytearray(source.encode("utf-8"))  # AST columns are UTF-8 byte offsets
    starts = [0]
    for line in bytes(data).splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = sorted((starts[n.lineno - 1] + n.col_offset, starts[n.end_lineno - 1] + n.end_col_offset) for n in _annotation_nodes(tree))
    last_end = -1
    for begin, end in spans:
        if begin < last_end:  # nested inside one already blanked
            continue
        for i in range(begin, end):
            keep_newline = data[i] in b"\r\n" or (data[i] == ord("\\") and i + 1 < len(data) and data[i + 1] in b"\r\n")
            if not keep_newline:
                data[i] = ord(" ")
        data[begin] = ord("0")
        last_end = end
    out = data.decode("utf-8")
    ast.parse(out)  # the blanked copy must still be valid Python
    return out


def ast_findings(source: str) -> List[Tuple[int, str]]:
    """What vermin cannot see: evaluated ``X | Y`` type unions and 3.9+ methods on untyped names."""
    tree = ast.parse(source)
    skip = set()
    if _postponed(tree, source):
        for ann in _annotation_nodes(tree):
            skip.update(id(n) for n in ast.walk(ann))
    evaluated_annotations = set() if _postponed(tree, source) else {id(n) for a in _annotation_nodes(tree) for n in ast.walk(a)}

    def is_type_operand(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value is None:
            return True
        if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
            return True
        return (
            isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and (is_type_operand(node.left) or is_type_operand(node.right))
        )

    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            if id(node) in evaluated_annotations or is_type_operand(node):
                found.append((node.lineno, "`X | Y` type union (evaluated here) requires 3.10"))
        elif isinstance(node, ast.Attribute) and node.attr in _NEWER_METHODS:
            found.append(
                (node.lineno, f"'.{node.attr}' (a method added in Python {_NEWER_METHODS[node.attr]}) requires {_NEWER_METHODS[node.attr]}")
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
        ):
            arg = node.args[1]
            if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.BitOr) and not is_type_operand(arg):
                found.append((arg.lineno, f"`X | Y` in {node.func.id}() requires 3.10"))
    return sorted(set(found))


def check_py38(files: List[Path], workdir: Path) -> Dict[Path, List[str]]:
    """Problems per file ("line N: feature requires 3.x"); an empty list means the file runs on 3.8."""
    copies: Dict[str, Path] = {}
    problems: Dict[Path, List[str]] = {f: [] for f in files}
    for i, f in enumerate(files):
        source = f.read_text(encoding="utf-8")
        copy = workdir / f"{i:03d}_{f.name}"
        copy.write_text(blank_postponed_annotations(source), encoding="utf-8")
        copies[str(copy)] = f
        problems[f].extend(f"line {line}: {what}" for line, what in ast_findings(source))
    cmd = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", *VERMIN_ARGS, *copies]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=workdir)
    seen_violation = False
    for line in res.stdout.splitlines():
        parts = line.split(":", 5)  # path:line:col:py2:py3:feature
        if len(parts) == 6 and parts[0] in copies and parts[1]:
            problems[copies[parts[0]]].append(f"line {parts[1]}: {parts[5]} requires {parts[4]}")
            seen_violation = True
    # vermin exits 1 when the target is not met; a failure we could not attribute to a line must not pass silently.
    assert res.returncode in (0, 1), f"vermin failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    assert res.returncode == 0 or seen_violation, f"vermin reports the 3.8 target unmet without a line:\n{res.stdout}\n{res.stderr}"
    return problems


@pytest.fixture(scope="module")
def vermin_available():
    if shutil.which("vermin") is None and not _importable("vermin"):
        pytest.skip("vermin is not installed (pip install vermin)")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def project_report(vermin_available, tmp_path_factory) -> Dict[Path, List[str]]:
    files = [f for f in target_files() if f.is_file()]
    return check_py38(files, tmp_path_factory.mktemp("py38"))


@pytest.mark.parametrize("path", target_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_runs_on_python38(path, project_report):
    assert path.is_file(), f"{path} is listed as Jetson-side code but does not exist; update TARGETS"
    assert project_report[path] == [], f"{path.relative_to(ROOT)} needs a Python newer than 3.8:\n  " + "\n  ".join(project_report[path])


# --- the checker itself: each case must be judged the way Python 3.8 would ---------------------------------------

CASES = {
    # name: (source, runs on 3.8)
    "postponed_annotations": (
        "from __future__ import annotations\ndef f(x: list[int] | None) -> dict[str, int]:\n    y: tuple[int, ...] = ()\n    return {}\n",
        True,
    ),
    "typing_generics_at_runtime": ("from typing import List, Optional\nAlias = Optional[List[int]]\n", True),
    "int_flags": ("import os\nflags = os.O_WRONLY | os.O_CREAT | 0\nmask = 1 << 3 | 4\n", True),
    "set_union": ("a = {1} | {2}\n", True),
    "evaluated_generic_annotation": ("def f(x: list[int]) -> None:\n    pass\n", False),
    "evaluated_union_annotation": ("class A: ...\nclass B: ...\ndef f(x: A | B) -> None:\n    pass\n", False),
    "runtime_builtin_generic": ("from __future__ import annotations\nAlias = dict[str, int]\n", False),
    "runtime_union": ("from __future__ import annotations\nAlias = int | None\n", False),
    "isinstance_union": ("from __future__ import annotations\nclass A: ...\nclass B: ...\nok = isinstance(1, A | B)\n", False),
    "get_type_hints_evaluates": (
        "from __future__ import annotations\nimport typing\ndef f(x: list[int]): ...\ntyping.get_type_hints(f)\n",
        False,
    ),
    "removeprefix": ("from __future__ import annotations\nname = 'x_y'.removeprefix('x_')\n", False),
    "removesuffix_on_variable": ("def stem(name: str) -> str:\n    return name.removesuffix('.onnx')\n", False),
    "is_relative_to_on_variable": ("def inside(p, root):\n    return p.is_relative_to(root)\n", False),
    "functools_cache": ("import functools\n@functools.cache\ndef f():\n    return 1\n", False),
    "match_statement": ("def f(v):\n    match v:\n        case 1:\n            return 1\n", False),
    "parenthesised_with": ("with (open(__file__) as a, open(__file__) as b):\n    pass\n", False),
    "dataclass_slots": ("from dataclasses import dataclass\n@dataclass(slots=True)\nclass A:\n    x: int = 0\n", False),
    "multiline_postponed_annotation": (
        "from __future__ import annotations\ndef f(\n    x: dict[\n        str, int | None\n    ],\n) -> (\n    list[str]\n):\n    return []\n",
        True,
    ),
    "unicode_before_annotation": ("from __future__ import annotations\nlabel = 'Läsion'; x: list[int] = []\n", True),
}


@pytest.fixture(scope="module")
def case_report(vermin_available, tmp_path_factory) -> Dict[str, List[str]]:
    src = tmp_path_factory.mktemp("cases")
    files = {}
    for name, (code, _) in CASES.items():
        files[name] = src / f"{name}.py"
        files[name].write_text(code, encoding="utf-8")
    report = check_py38(list(files.values()), tmp_path_factory.mktemp("cases_work"))
    return {name: report[path] for name, path in files.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_checker_judges_like_python38(name, case_report):
    ok = CASES[name][1]
    assert (case_report[name] == []) is ok, f"{name}: expected {'no problems' if ok else 'a problem'}, got {case_report[name]}"


def test_blanking_keeps_lines_and_columns():
    src = CASES["multiline_postponed_annotation"][0]
    out = blank_postponed_annotations(src)
    assert len(out.splitlines()) == len(src.splitlines())
    assert "dict" not in out and "list" not in out and "return []" in out
    assert blank_postponed_annotations("def f(x: list[int]): ...\n") == "def f(x: list[int]): ...\n"  # evaluated: untouched
