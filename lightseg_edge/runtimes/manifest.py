"""Reading an export folder's ``manifest.json`` for deployment, as typed objects.

The rules are ``lightseg_edge.export.manifest.check_manifest``'s, applied here unchanged, so ``load_predictor`` and
``lightseg-bench --export-dir`` accept and refuse the same folders: every artifact lies inside the folder after
symlinks are resolved and has a well-formed sha256, which ``verify_artifact`` checks the file against before use.
Both modules are standard library only (``lightseg_edge.export`` loads nothing heavy on import), so a device that
ships only numpy + onnxruntime (or tensorrt) still loads an export folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import ManifestError
from ..export.manifest import FORMAT, MANIFEST_NAME, check_manifest, load_manifest
from ..types import InputSpec, PreprocessConfig
from .._hashing import sha256_file, verify_file  # noqa: F401  (sha256_file re-exported)

SUPPORTED_FORMATS = (FORMAT,)
ONNX_VARIANTS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Artifact:
    key: str  # "fp32" | "fp16" | "int8" | "engine"
    path: Path  # absolute, symlinks resolved, inside the folder
    sha256: str
    precision: Optional[str] = None  # engines record the precision they were built for


@dataclass(frozen=True)
class DeployManifest:
    folder: Path
    model: str
    input_spec: InputSpec
    preprocess: Optional[PreprocessConfig]  # None: exported from a bare ONNX; the caller must pass preprocess=
    artifacts: Dict[str, Artifact]
    tensorrt: Optional[Dict[str, Any]] = None  # {"version", "gpu", "compute_capability"} of the engine build
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @property
    def headline(self) -> str:
        """The precision the export was made for, the one its folder is named after (``ucmnet-256-fp16``): the lowest
        ONNX precision it holds, as its engine is built from that one."""
        for precision in ("int8", "fp16"):
            if precision in self.artifacts:
                return precision
        return "fp32"

    def artifact_for(self, path: Union[str, Path]) -> Optional[Artifact]:
        """The artifact entry whose file is ``path`` (None when the manifest does not list it)."""
        target = Path(path).resolve()
        for art in self.artifacts.values():
            if art.path == target:
                return art
        return None


def verify_artifact(art: Artifact) -> None:
    """Refuse a missing file or one whose sha256 differs from the manifest (truncated copy, wrong file)."""
    verify_file(art.path, art.sha256)


def read_deploy_manifest(folder: Union[str, Path]) -> DeployManifest:
    """Parse ``<folder>/manifest.json``; every problem is a ManifestError naming the file."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME} here; expected an export folder written by lightseg-export")
    d = load_manifest(path)
    files = check_manifest(d, path)
    arts = d["artifacts"]
    artifacts = {key: Artifact(key=key, path=files[key], sha256=arts[key]["sha256"].lower(), precision=arts[key].get("precision"))
                 for key in files}
    pre = PreprocessConfig.from_dict(d["preprocess"]) if d["preprocess"] is not None else None
    trt_info = d.get("tensorrt") if isinstance(d.get("tensorrt"), dict) else None
    return DeployManifest(folder=folder, model=d["model"], input_spec=InputSpec.from_dict(d["input"]), preprocess=pre,
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
