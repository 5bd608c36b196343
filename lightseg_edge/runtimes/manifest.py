"""Reading an export folder's ``manifest.json`` for deployment: json + hashlib only.

``lightseg_edge.export.manifest`` owns the format and writes it. This read-only view does not import it because
importing ``lightseg_edge.export.manifest`` runs ``lightseg_edge/export/__init__.py``, which may pull in the export
pipeline's dependencies; a device that ships only numpy + onnxruntime (or tensorrt) must still load an export
folder. It checks just what a predictor relies on (format tag, input spec, preprocessing, artifact table) and raises
the same ``ManifestError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import ManifestError
from ..types import InputSpec, PreprocessConfig
from .._hashing import sha256_file  # noqa: F401  (re-exported)

MANIFEST_NAME = "manifest.json"
FORMAT_PREFIX = "lightseg-export/"
SUPPORTED_FORMATS = ("lightseg-export/1",)
ONNX_VARIANTS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Artifact:
    key: str  # "fp32" | "fp16" | "int8" | "engine"
    path: Path  # absolute
    sha256: Optional[str] = None
    precision: Optional[str] = None  # engines record the precision they were built for


@dataclass(frozen=True)
class DeployManifest:
    folder: Path
    model: str
    input_spec: InputSpec
    preprocess: PreprocessConfig
    artifacts: Dict[str, Artifact]
    tensorrt: Optional[Dict[str, Any]] = None  # {"version", "gpu", "compute_capability"} of the engine build
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    def artifact_for(self, path: Union[str, Path]) -> Optional[Artifact]:
        """The artifact entry whose file is ``path`` (None when the manifest does not list it)."""
        target = Path(path).resolve()
        for art in self.artifacts.values():
            if art.path.resolve() == target:
                return art
        return None




def verify_artifact(art: Artifact) -> None:
    """Refuse a missing file or one whose sha256 differs from the manifest (truncated copy, wrong file)."""
    if not art.path.is_file():
        raise ManifestError(f"{art.path}: the manifest lists the {art.key} artifact but the file is missing")
    if art.sha256:
        got = sha256_file(art.path)
        if got != art.sha256:
            raise ManifestError(
                f"{art.path}: sha256 {got[:12]}... does not match the manifest's {art.sha256[:12]}... "
                f"({art.path.stat().st_size} bytes); the file is truncated, corrupted or from another export. "
                f"Copy the export folder again or re-run lightseg-export"
            )


def _get(d: Dict[str, Any], key: str, path: Path) -> Any:
    if key not in d:
        raise ManifestError(f"{path}: missing key {key!r}; expected a {SUPPORTED_FORMATS[-1]} manifest written by lightseg-export")
    return d[key]


def read_deploy_manifest(folder: Union[str, Path]) -> DeployManifest:
    """Parse ``<folder>/manifest.json``; every problem is a ManifestError naming the file."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME} here; expected an export folder written by lightseg-export")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from exc
    if not isinstance(d, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(d).__name__}")
    fmt = _get(d, "format", path)
    if fmt not in SUPPORTED_FORMATS:
        hint = " (written by a newer lightseg-edge; upgrade)" if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX) else ""
        raise ManifestError(f"{path}: unsupported manifest format {fmt!r}; expected one of {SUPPORTED_FORMATS}{hint}")
    try:
        spec = InputSpec.from_dict(_get(d, "input", path))
        pre = PreprocessConfig.from_dict(_get(d, "preprocess", path))
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: invalid 'input' or 'preprocess' entry ({type(exc).__name__}: {exc})") from exc
    if len(spec.shape) != 4:
        raise ManifestError(f"{path}: input shape {list(spec.shape)} is not NCHW")
    arts_raw = _get(d, "artifacts", path)
    if not isinstance(arts_raw, dict) or not arts_raw:
        raise ManifestError(f"{path}: 'artifacts' is empty; the export produced no model file")
    artifacts = {}
    for key, entry in arts_raw.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ManifestError(f"{path}: artifact {key!r} has no 'path'")
        rel = Path(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ManifestError(f"{path}: artifact {key!r} path {entry['path']!r} must be relative to the export folder")
        artifacts[key] = Artifact(key=key, path=(folder / rel), sha256=entry.get("sha256"), precision=entry.get("precision"))
    trt_info = d.get("tensorrt") if isinstance(d.get("tensorrt"), dict) else None
    return DeployManifest(folder=folder, model=str(d.get("model", "?")), input_spec=spec, preprocess=pre,
                          artifacts=artifacts, tensorrt=trt_info, raw=d)


def find_manifest_for(file: Union[str, Path]) -> Optional[Tuple[DeployManifest, Artifact]]:
    """The manifest in ``file``'s folder that lists ``file`` as an artifact, if any.

    A manifest that is present but unreadable is an error: silently ignoring it would run the model with guessed
    preprocessing.
    """
    file = Path(file)
    if not (file.parent / MANIFEST_NAME).is_file():
        return None
    man = read_deploy_manifest(file.parent)
    art = man.artifact_for(file)
    if art is None:
        return None
    return man, art
