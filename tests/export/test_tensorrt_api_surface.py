"""Every ``tensorrt`` attribute the project uses exists in TensorRT 10.3, 10.16 and 11.4, and names that exist in only
some releases are reached only behind a feature check (``hasattr``/``getattr`` or ``except AttributeError``).

The TensorRT code cannot run here (no GPU), so this static check is what keeps it honest. It parses (``ast``) every
module under ``lightseg_edge/`` that mentions ``tensorrt`` and follows values derived from the ``tensorrt`` module
(``trt.Builder(...)`` -> ``builder`` -> ``builder.create_network(...)`` -> ``network`` ...; also ``self.x = ...``),
then checks each attribute read on them against the binding name lists in
``shared/reference/tensorrt-api/<release>{.txt,.tokens.txt}`` (format: that folder's README).

Name lists are flat and some short names survive only inside longer strings, so a name counts as present in a
release if it is in either file, minus the removals the releases' own docstrings document (``KNOWN_REMOVED``; e.g.
``BuilderFlag.FP16`` is gone in 11.x although "FP16" still appears in its docstrings, while ``DataType.INT8``
exists everywhere). The code also supports TensorRT 8.5/8.6 (JetPack 5/6.0), so names introduced after 8.6
(``NEWER_THAN_8_6``) must be feature-checked too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lightseg_edge"
RELEASES = ("10.3.0", "10.16.1.11", "11.4.0.106")


def _api_dir() -> Optional[Path]:
    for cand in (ROOT.parent / "shared" / "reference" / "tensorrt-api", ROOT / "tests" / "assets" / "tensorrt-api"):
        if all((cand / f"{r}.txt").is_file() and (cand / f"{r}.tokens.txt").is_file() for r in RELEASES):
            return cand
    return None


# Documented removals (11.x bindings docstrings, NVIDIA's 10.x->11.x migration tables; tensorrt-api/README.md).
# Qualified as (class, attribute) where the bare name also exists elsewhere (DataType.INT8 is still there).
KNOWN_REMOVED: Dict[str, Set[Tuple[Optional[str], str]]] = {
    "11.4.0.106": {
        ("BuilderFlag", "FP16"),
        ("BuilderFlag", "INT8"),
        ("BuilderFlag", "BF16"),
        ("BuilderFlag", "FP8"),
        ("BuilderFlag", "INT4"),
        ("BuilderFlag", "FP4"),
        ("BuilderFlag", "OBEY_PRECISION_CONSTRAINTS"),
        ("BuilderFlag", "PREFER_PRECISION_CONSTRAINTS"),
        ("BuilderFlag", "DIRECT_IO"),
        (None, "IInt8EntropyCalibrator2"),
        (None, "IInt8EntropyCalibrator"),
        (None, "IInt8MinMaxCalibrator"),
        (None, "IInt8LegacyCalibrator"),
        (None, "IInt8Calibrator"),
        (None, "CalibrationAlgoType"),
        (None, "int8_calibrator"),
        (None, "EXPLICIT_BATCH"),
        (None, "device_memory_size"),
        (None, "get_device_memory_size_for_profile"),
        (None, "create_execution_context_without_device_memory"),
        (None, "set_calibration_profile"),
        (None, "get_calibration_profile"),
    },
}
# Introduced after TensorRT 8.6: absent on JetPack 5 / 6.0.
NEWER_THAN_8_6 = {"STRONGLY_TYPED", "device_memory_size_v2", "get_device_memory_size_for_profile_v2"}
# Older-release names that may legitimately be probed although no listed release has them.
LEGACY_NAMES = {
    "num_bindings",
    "max_workspace_size",
    "get_binding_index",
    "execute_async_v2",
    "max_batch_size",
    "EXPLICIT_BATCH",
    "platform_has_fast_fp16",
}
_IGNORED = {"__class__", "__name__", "__doc__", "__init__", "__enter__", "__exit__"}


@dataclass(frozen=True)
class Use:
    file: str
    line: int
    name: str
    owner: Optional[str]  # the attribute it is read from when that is itself a tensorrt name (trt.BuilderFlag.FP16 -> BuilderFlag)
    guarded: bool
    probe: bool = False  # a hasattr()/getattr(.., default) test rather than a direct read


class _Lists:
    """Names per release. Enum members can also survive only as the tail of a longer string (the linker merges
    suffixes: ``TensorIOMode.INPUT`` is stored inside ``CONDITIONAL_INPUT``), so an upper-case name that ends another
    token after an underscore counts as present too."""

    def __init__(self, folder: Path) -> None:
        self.names: Dict[str, Set[str]] = {}
        self.enum_tails: Dict[str, Set[str]] = {}
        for r in RELEASES:
            names = set((folder / f"{r}.txt").read_text().split()) | set((folder / f"{r}.tokens.txt").read_text().split())
            self.names[r] = names
            self.enum_tails[r] = {t[i + 1 :] for t in names if t.isupper() for i, ch in enumerate(t) if ch == "_"}

    def has(self, release: str, name: str, owner: Optional[str]) -> bool:
        removed = KNOWN_REMOVED.get(release, set())
        if (owner, name) in removed or (None, name) in removed:
            return False
        return name in self.names[release] or (name.isupper() and name in self.enum_tails[release])

    def missing_in(self, name: str, owner: Optional[str]) -> List[str]:
        return [r for r in RELEASES if not self.has(r, name, owner)]


# ------------------------------------------------------------------------------------------------ the analyser
def _root(node: ast.AST) -> Optional[str]:
    """'trt' for trt.A.b(...)[0].c; 'self.x' for self.x.y; None for anything else."""
    while True:
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return f"self.{node.attr}"
            node = node.value
        elif isinstance(node, (ast.Call,)):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def _target_keys(target: ast.AST) -> List[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return [f"self.{target.attr}"]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [k for elt in target.elts for k in _target_keys(elt)]
    return []


def _is_tensorrt_import(value: ast.AST) -> bool:
    """require("tensorrt", ...), _optional.require("tensorrt"), importlib.import_module("tensorrt")."""
    if not isinstance(value, ast.Call) or not value.args:
        return False
    first = value.args[0]
    name = value.func.attr if isinstance(value.func, ast.Attribute) else getattr(value.func, "id", "")
    return name in ("require", "import_module", "__import__") and isinstance(first, ast.Constant) and first.value == "tensorrt"


def _tainted(tree: ast.AST) -> Set[str]:
    """Names (and self attributes) that hold the tensorrt module or objects derived from it."""
    tainted = {"trt"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tainted |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
        elif isinstance(node, ast.Assign) and _is_tensorrt_import(node.value):
            tainted |= {k for t in node.targets for k in _target_keys(t)}
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            pairs: List[Tuple[List[str], ast.AST]] = []
            if isinstance(node, ast.Assign):
                pairs.append(([k for t in node.targets for k in _target_keys(t)], node.value))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                pairs.append((_target_keys(node.target), node.value))
            elif isinstance(node, ast.NamedExpr):
                pairs.append((_target_keys(node.target), node.value))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                pairs.append((_target_keys(node.optional_vars), node.context_expr))
            elif isinstance(node, ast.For):
                pairs.append((_target_keys(node.target), node.iter))
            for keys, value in pairs:
                if _root(value) in tainted:
                    new = set(keys) - tainted
                    if new:
                        tainted |= new
                        changed = True
    return tainted


def _probe_names(test: ast.AST) -> Set[str]:
    """Attribute names a condition tests with hasattr(x, "n") / getattr(x, "n", default)."""
    out = set()
    for node in ast.walk(test):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and len(node.args) >= 2
        ):
            if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                out.add(node.args[1].value)
    return out


def _catches_attribute_error(handler: ast.ExceptHandler) -> bool:
    t = handler.type
    names = [t] if not isinstance(t, ast.Tuple) else list(t.elts)
    return any(isinstance(n, ast.Name) and n.id == "AttributeError" for n in names)


def analyse(source: str, filename: str = "<src>") -> List[Use]:
    tree = ast.parse(source)
    tainted = _tainted(tree)
    parents: Dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def guarded(node: ast.AST) -> bool:
        """Inside a branch chosen by a hasattr/getattr feature check, or a try that catches AttributeError."""
        child, cur = node, parents.get(node)
        while cur is not None:
            if isinstance(cur, (ast.If, ast.IfExp, ast.While)) and _probe_names(cur.test) and child is not cur.test:
                return True
            if isinstance(cur, ast.BoolOp) and any(_probe_names(v) for v in cur.values if v is not child):
                return True
            if isinstance(cur, ast.Try) and child in cur.body and any(_catches_attribute_error(h) for h in cur.handlers):
                return True
            child, cur = cur, parents.get(cur)
        return False

    uses: List[Use] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _root(node.value) in tainted
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            if node.attr in _IGNORED:
                continue
            owner = node.value.attr if isinstance(node.value, ast.Attribute) and _root(node.value.value) in tainted else None
            if isinstance(node.value, ast.Name):
                owner = None
            uses.append(Use(filename, node.lineno, node.attr, owner, guarded(node)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and len(node.args) >= 2
        ):
            obj, attr = node.args[0], node.args[1]
            if _root(obj) in tainted and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                owner = obj.attr if isinstance(obj, ast.Attribute) else None
                is_probe = node.func.id == "hasattr" or len(node.args) == 3
                uses.append(Use(filename, node.lineno, attr.value, owner, is_probe or guarded(node), probe=is_probe))
    return uses


def violations(uses: Iterable[Use], lists: _Lists) -> List[str]:
    out = []
    for u in uses:
        where = f"{u.file}:{u.line}: {'' if u.owner is None else u.owner + '.'}{u.name}"
        missing = lists.missing_in(u.name, u.owner)
        if u.guarded or u.probe:
            if len(missing) == len(RELEASES) and u.name not in LEGACY_NAMES:
                out.append(f"{where} is feature-checked but exists in no known TensorRT release (typo?)")
        elif missing:
            out.append(f"{where} is missing in TensorRT {', '.join(missing)}; reach it only behind hasattr()/getattr()")
        elif u.name in NEWER_THAN_8_6:
            out.append(f"{where} does not exist in TensorRT 8.5/8.6 (JetPack 5/6.0); reach it only behind hasattr()/getattr()")
    return out


# ------------------------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def lists() -> _Lists:
    folder = _api_dir()
    if folder is None:
        pytest.skip("TensorRT API name lists not found (../shared/reference/tensorrt-api or tests/assets/tensorrt-api)")
    return _Lists(folder)


def _tensorrt_files() -> List[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "tensorrt" in p.read_text(encoding="utf-8"))


def test_discovers_the_projects_tensorrt_code():
    files = {p.relative_to(PACKAGE).as_posix() for p in _tensorrt_files()}
    assert "export/tensorrt_build.py" in files
    uses = analyse((PACKAGE / "export/tensorrt_build.py").read_text(), "export/tensorrt_build.py")
    names = {u.name for u in uses}
    # the builder's core calls must be seen, or the analyser is blind and every other assertion is vacuous
    assert {
        "Builder",
        "OnnxParser",
        "create_network",
        "create_builder_config",
        "build_serialized_network",
        "set_timing_cache",
        "create_optimization_profile",
        "set_shape",
        "STRONGLY_TYPED",
        "WORKSPACE",
    } <= names


@pytest.mark.parametrize("path", _tensorrt_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_tensorrt_attributes_exist_in_10_3_10_16_and_11_4(path: Path, lists: _Lists):
    rel = path.relative_to(PACKAGE).as_posix()
    problems = violations(analyse(path.read_text(encoding="utf-8"), rel), lists)
    assert not problems, "TensorRT API surface problems:\n" + "\n".join(problems)


# The analyser itself must catch what it is meant to catch.
_BAD = """
import tensorrt as trt
def build(path):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.int8_calibrator = None
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    engine = trt.Runtime(None).deserialize_cuda_engine(b"")
    size = engine.device_memory_size
    return trt.__version__, trt.NoSuchClass, net
"""
_GOOD = """
from lightseg_edge._optional import require
def build(path):
    trt = require("tensorrt")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    kinds = trt.NetworkDefinitionCreationFlag
    flags = 1 << int(kinds.STRONGLY_TYPED) if hasattr(kinds, "STRONGLY_TYPED") else 1 << int(kinds.EXPLICIT_BATCH)
    engine = trt.Runtime(None).deserialize_cuda_engine(b"")
    size = engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size
    try:
        cal = trt.IInt8EntropyCalibrator2
    except AttributeError:
        cal = None
    return getattr(trt, "__version__", "unknown"), builder.create_network(flags), size, cal, trt.DataType.INT8
"""


def test_analyser_flags_unguarded_version_specific_and_unknown_names(lists: _Lists):
    found = "\n".join(violations(analyse(_BAD), lists))
    for name in ("BuilderFlag.FP16", "int8_calibrator", "STRONGLY_TYPED", "device_memory_size ", "__version__", "NoSuchClass"):
        assert name in found + " ", f"{name} not flagged:\n{found}"


def test_analyser_accepts_feature_checked_code(lists: _Lists):
    assert violations(analyse(_GOOD), lists) == []
