"""The export folder contract: ``<out>/manifest.json``, written last and atomically.

Runtimes and benchmarks read an export folder only through ``read_manifest``. This module needs nothing beyond the
standard library (it runs on the Jetson, Python 3.8).

Keys: format, model, created, weights {source, sha256}, input (InputSpec.to_dict), preprocess
(PreprocessConfig.to_dict), output, opset, artifacts {fp32|fp16|int8|engine: {path, sha256, ...}} with paths relative
to the folder, parity, calibration, accuracy, tensorrt, tools, steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Union

from ..errors import ManifestError
from .._hashing import sha256_file  # noqa: F401  (re-exported)

FORMAT = "lightseg-export/1"
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = (
    "format",
    "model",
    "created",
    "weights",
    "input",
    "preprocess",
    "output",
    "opset",
    "artifacts",
    "parity",
    "calibration",
    "accuracy",
    "tensorrt",
    "tools",
    "steps",
)
ARTIFACT_KINDS = ("fp32", "fp16", "int8", "engine")

PathLike = Union[str, Path]




def _manifest_path(folder: PathLike) -> Path:
    p = Path(folder)
    return p if p.name == MANIFEST_NAME else p / MANIFEST_NAME


def _check(data: object, where: Path) -> Dict:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ManifestError(f"{where}: not a lightseg export manifest (format {data.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ManifestError(f"{where}: missing keys {', '.join(missing)}")
    arts = data["artifacts"]
    if not isinstance(arts, dict) or "fp32" not in arts:
        raise ManifestError(f"{where}: 'artifacts' must be an object with at least the 'fp32' model")
    for kind, art in arts.items():
        if kind not in ARTIFACT_KINDS:
            raise ManifestError(f"{where}: unknown artifact kind {kind!r}; expected one of {', '.join(ARTIFACT_KINDS)}")
        rel = art.get("path") if isinstance(art, dict) else None
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ManifestError(f"{where}: artifact {kind!r} needs a 'path' relative to the folder, got {rel!r}")
    return data


def read_manifest(folder: PathLike) -> Dict:
    """The manifest of an export folder (or the path of a manifest.json); ManifestError if missing or malformed."""
    path = _manifest_path(folder)
    if not path.is_file():
        raise ManifestError(f"{path}: no export manifest here; export a model with `lightseg-export --model NAME` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({type(exc).__name__}: {exc})") from exc
    return _check(data, path)


def verify_artifacts(folder: PathLike, manifest: Dict) -> List[str]:
    """Problems with the files a manifest lists (missing, or sha256 differs); empty when the folder is consistent."""
    folder = _manifest_path(folder).parent
    problems = []
    for kind, art in manifest["artifacts"].items():
        path = folder / art["path"]
        if not path.is_file():
            problems.append(f"{kind}: {path} is missing")
        elif art.get("sha256") and sha256_file(path) != art["sha256"]:
            problems.append(f"{kind}: {path} does not match its sha256 in the manifest (changed after export?)")
    return problems


def write_manifest(folder: PathLike, manifest: Dict) -> Path:
    """Check ``manifest`` against the contract and write it atomically (temp file, fsync, rename)."""
    path = _manifest_path(folder)
    data = _check(json.loads(json.dumps(manifest)), path)  # round trip: only JSON types reach the file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot write the manifest ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def remove_manifest(folder: PathLike) -> None:
    """Withdraw a folder's manifest before its artifacts are replaced, so a crash cannot leave a stale one."""
    path = _manifest_path(folder)
    if path.exists():
        os.unlink(path)
