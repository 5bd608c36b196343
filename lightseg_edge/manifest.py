"""The export folder contract: ``<out>/manifest.json``, written last and atomically, and its typed reading.

Export, runtimes and benchmarks read an export folder only through this module (``read_manifest`` for the JSON,
``read_deploy_manifest`` for typed objects): ``check_manifest`` holds every rule once, so no reader can accept a
folder another refuses. This module needs nothing beyond the standard library (it runs on the Jetson, Python 3.8).

Keys: format, model, created, weights {source, sha256}, input (InputSpec.to_dict), preprocess
(PreprocessConfig.to_dict), output, opset, artifacts {fp32|fp16|int8|engine: {path, sha256, ...}} with paths relative
to the folder, parity, calibration, accuracy, tensorrt, tools, steps. Artifact keys: ``fp32``, ``fp16``, ``int8``
(ONNX), ``engine`` (TensorRT), and ``<target>-<precision>`` for the other targets (``openvino-fp16``,
``tflite-int8``, ``coreml-fp32``); an entry may list ``companions`` ({path, sha256} files its main file needs, such as
OpenVINO's weights .bin), held to the same rules. A Core ML ``.mlpackage`` is a folder; its sha256 covers every file
in it (``_hashing.sha256_file``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from ._atomic import write_text_atomic
from ._hashing import brief_repr, check_sha256, file_problem, is_regular_file, member_path, sha256_file, shown, verify_file  # noqa: F401  (sha256_file re-exported)
from .errors import ManifestError, OutputError
from .types import MAX_INPUT_SIDE, NORMALIZE_MODES, PRECISION_NAMES, InputSpec, PreprocessConfig

FORMAT = "lightseg-export/1"
FORMAT_PREFIX = "lightseg-export/"
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"  # a copy of --weights, so the folder alone rebuilds the model in PyTorch
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few KB; refuse to parse anything near memory-sized
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
ARTIFACT_KINDS = ("fp32", "fp16", "int8", "engine")  # the ONNX variants and the TensorRT engine
ONNX_VARIANTS = PRECISION_NAMES
PRECISIONS = PRECISION_NAMES
TARGET_KIND = re.compile(r"[a-z][a-z0-9]*-(?:fp32|fp16|int8)")  # another target's artifact: "<target>-<precision>"

PathLike = Union[str, Path]


def _manifest_path(folder: PathLike) -> Path:
    p = Path(folder)
    return p if p.name == MANIFEST_NAME else p / MANIFEST_NAME


# ---------------------------------------------------------------------------------------------------------------------
# the rules: every reader (this module's, runtimes.manifest's) and the writer go through check_manifest
# ---------------------------------------------------------------------------------------------------------------------
def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_format(data: Dict, where: Path) -> None:
    fmt = data.get("format")
    if fmt == FORMAT:
        return
    if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX):
        raise ManifestError(f"{where}: unsupported manifest format {brief_repr(fmt)}, expected {FORMAT!r} (written by a newer lightseg-edge; upgrade)")
    raise ManifestError(f"{where}: unsupported manifest format {brief_repr(fmt)}: not a lightseg export manifest (expected {FORMAT!r})")


def _check_input(spec: object, where: Path) -> None:
    ok = isinstance(spec, dict) and isinstance(spec.get("name"), str) and bool(spec.get("name"))
    shape = spec.get("shape") if isinstance(spec, dict) else None
    ok = ok and isinstance(shape, list) and all(d is None or _is_count(d) for d in shape)
    ok = ok and all(isinstance(spec.get(k, ""), str) for k in ("dtype", "output_name"))
    if not ok:
        raise ManifestError(f"{where}: invalid 'input' or 'preprocess' entry: 'input' must be {{name, shape: [N, C, H, W]}} with positive or null sizes, found {brief_repr(spec)}")
    if len(shape) != 4:
        raise ManifestError(f"{where}: input shape {shape} is not NCHW")


def _check_preprocess(pre: object, where: Path) -> None:
    """null (an export from a bare ONNX without --model: the user passes preprocessing) or a PreprocessConfig dict,
    held to PreprocessConfig's own rules (sizes within MAX_INPUT_SIDE, three finite means and non-zero stds)."""
    if pre is None:
        return
    try:
        ok = isinstance(pre, dict) and isinstance(pre.get("size"), list) and bool(PreprocessConfig.from_dict(pre))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ManifestError(
            f"{where}: invalid 'input' or 'preprocess' entry: 'preprocess' must be null or {{size: [H, W] (1..{MAX_INPUT_SIDE}), "
            f"mode: one of {', '.join(NORMALIZE_MODES)}, mean: [3 numbers], std: [3 non-zero numbers]}}, found {brief_repr(pre)}"
        )


def _check_weights(weights: object, where: Path) -> None:
    """The weights record is provenance (its file usually lies outside the folder); only its form is checked here.

    The PyTorch runtime, before it loads the file, checks that it lies inside the folder and matches this sha256."""
    if weights is None:
        return
    if not isinstance(weights, dict) or not (weights.get("source") is None or isinstance(weights.get("source"), str)):
        raise ManifestError(f"{where}: 'weights' must be null or {{source, sha256}}, found {brief_repr(weights)}")
    if weights.get("sha256") is not None:
        check_sha256(weights["sha256"], "the weights record", where)


def artifact_file(folder: Path, kind: str, entry: object, where: Path) -> Path:
    """The resolved file of one artifact entry: inside ``folder`` (symlinks resolved) with a well-formed sha256.

    The one rule for artifact entries; every manifest reader calls it, so they accept and refuse the same folders."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: artifact {kind!r} must be an object {{path, sha256, ...}}, found {brief_repr(entry)}")
    path = member_path(folder, entry.get("path"), f"artifact {kind!r}", where)
    check_sha256(entry.get("sha256"), f"artifact {kind!r} ({brief_repr(entry.get('path'))})", where)
    if entry.get("precision") is not None and entry.get("precision") not in PRECISIONS:
        raise ManifestError(f"{where}: artifact {kind!r} has precision {brief_repr(entry.get('precision'))}; expected one of {', '.join(PRECISIONS)}")
    companion_files(folder, kind, entry, where)
    return path


def companion_files(folder: Path, kind: str, entry: Dict, where: Path) -> List[Tuple[Path, str]]:
    """(resolved path, sha256) of the files an artifact's main file needs beside it, under the artifacts' rules."""
    companions = entry.get("companions", [])
    if not isinstance(companions, list):
        raise ManifestError(f"{where}: artifact {kind!r}: 'companions' must be a list of {{path, sha256}}, found {brief_repr(companions)}")
    out = []
    for item in companions:
        if not isinstance(item, dict):
            raise ManifestError(f"{where}: artifact {kind!r}: a companion must be {{path, sha256}}, found {brief_repr(item)}")
        path = member_path(folder, item.get("path"), f"artifact {kind!r} companion", where)
        out.append((path, check_sha256(item.get("sha256"), f"artifact {kind!r} companion ({brief_repr(item.get('path'))})", where)))
    return out


def check_manifest(data: object, where: Path) -> Dict[str, Path]:
    """Every rule a manifest must pass; the artifact kind -> its resolved file. ``where`` is the manifest.json path."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    _check_format(data, where)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ManifestError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                            f"expected a {FORMAT} manifest written by lightseg-export")
    if not isinstance(data["model"], str) or not data["model"]:
        raise ManifestError(f"{where}: 'model' must be the model's name, found {brief_repr(data['model'])}")
    _check_input(data["input"], where)
    _check_preprocess(data["preprocess"], where)
    _check_weights(data["weights"], where)
    arts = data["artifacts"]
    if isinstance(arts, dict) and not arts:
        raise ManifestError(f"{where}: 'artifacts' is empty; the export produced no model file")
    if not isinstance(arts, dict) or "fp32" not in arts:
        raise ManifestError(f"{where}: 'artifacts' must be an object with at least the 'fp32' model, found {brief_repr(arts)}")
    unknown = [k for k in arts if k not in ARTIFACT_KINDS and not (isinstance(k, str) and TARGET_KIND.fullmatch(k))]
    if unknown:
        raise ManifestError(f"{where}: unknown artifact kind {brief_repr(unknown[0])}; expected one of {', '.join(ARTIFACT_KINDS)} "
                            f"or '<target>-<precision>' (e.g. 'openvino-fp16')")
    return {kind: artifact_file(where.parent, kind, entry, where) for kind, entry in arts.items()}


def load_manifest(path: Path) -> object:
    """The parsed JSON of a manifest file (not yet checked); ManifestError when it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: {size:,} bytes is far too large for a manifest (limit {MAX_MANIFEST_BYTES:,}); expected the manifest.json lightseg-export writes")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({type(exc).__name__}: {str(exc)[:200]})") from exc


def read_manifest(folder: PathLike) -> Dict:
    """The manifest of an export folder (or the path of a manifest.json); ManifestError if missing or malformed.

    Checks the form and that every artifact path stays inside the folder with a well-formed sha256; the files'
    contents are checked by ``verify_artifacts`` / ``check_artifacts`` (hashing them all on every read would be slow).
    """
    path = _manifest_path(folder)
    if not path.is_file():
        raise ManifestError(f"{path}: no export manifest here; export a model with `lightseg-export --model NAME` first")
    data = load_manifest(path)
    check_manifest(data, path)
    return data


def verify_artifacts(folder: PathLike, manifest: Dict) -> List[str]:
    """Problems with the files a manifest lists (outside the folder, missing, or sha256 differs); empty when consistent."""
    where = _manifest_path(folder)
    files = check_manifest(manifest, where)
    problems = []
    for kind, path in files.items():
        entry = manifest["artifacts"][kind]
        for file, sha in [(path, entry["sha256"])] + companion_files(where.parent, kind, entry, where):
            problem = file_problem(file, sha)
            if problem:
                problems.append(f"{kind}: {problem}")
    return problems


def check_artifacts(folder: PathLike, manifest: Dict) -> None:
    """Raise ManifestError for the first artifact that is missing or does not match its sha256 (one line)."""
    problems = verify_artifacts(folder, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ManifestError(problems[0].split(": ", 1)[1] + more)


def weights_file(folder: PathLike, manifest: Dict) -> Path:
    """The weights file an export was made from, for rebuilding it in PyTorch; ManifestError unless it can be trusted.

    The record is provenance: lightseg-export writes the path it was given, usually outside the folder (where the
    model was trained). Loading that would run bytes nobody checked, so the file is held to the artifacts' rules:
    inside the folder after symlinks are resolved (an absolute path is accepted only when it points there), present,
    and matching the recorded sha256. Call it only for a file source (not 'pretrained' or 'random').
    """
    where = _manifest_path(folder)
    folder = where.parent
    rec = manifest.get("weights") or {}
    source = rec.get("source")
    if not isinstance(source, str) or not source or source in ("pretrained", "random"):
        raise ManifestError(f"{where}: the export's weights ({brief_repr(source)}) are not a file; use the ONNX artifacts instead")
    name = source
    if Path(source).is_absolute():
        try:
            name = str(Path(source).resolve().relative_to(folder.resolve()))
        except (OSError, RuntimeError, ValueError):
            raise ManifestError(
                f"{where}: the export's weights {shown(source)} lie outside the export folder {folder}; copy the file into the "
                f"folder and set weights.source to its name there, or use the ONNX artifacts (runtime='onnxruntime')"
            ) from None
    path = member_path(folder, name, "the weights record", where)
    sha = check_sha256(rec.get("sha256"), f"the weights file {shown(source)}", where)
    if not is_regular_file(path):
        raise ManifestError(f"{shown(path)}: the export's weights file (weights.source {brief_repr(source)}) is not in the export folder; "
                            f"copy it there, or use the ONNX artifacts (runtime='onnxruntime')")
    problem = file_problem(path, sha)
    if problem:
        raise ManifestError(problem)
    return path


def write_manifest(folder: PathLike, manifest: Dict) -> Path:
    """Check ``manifest`` against the contract and write it atomically (temp file, fsync, rename)."""
    path = _manifest_path(folder)
    data = json.loads(json.dumps(manifest))  # round trip: only JSON types reach the file
    check_manifest(data, path)
    try:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n", durable=True)
    except OutputError as exc:
        raise ManifestError(f"{path}: cannot write the manifest ({exc.__cause__ or exc})") from exc
    return path


def listed_files(manifest: object) -> Set[str]:
    """The files a manifest describes: its artifacts, the calibration list and the copied weights."""
    if not isinstance(manifest, dict):
        return set()
    arts = manifest.get("artifacts")
    calib, weights = manifest.get("calibration"), manifest.get("weights")
    entries = [a for a in arts.values() if isinstance(a, dict)] if isinstance(arts, dict) else []
    names = [a.get("path") for a in entries]
    names += [c.get("path") for a in entries if isinstance(a.get("companions"), list) for c in a["companions"] if isinstance(c, dict)]
    names.append(calib.get("list_file") if isinstance(calib, dict) else None)
    names.append(WEIGHTS_NAME if isinstance(weights, dict) and weights.get("source") == WEIGHTS_NAME else None)
    return {n for n in names if isinstance(n, str)}


# ---------------------------------------------------------------------------------------------------------------------
# typed reading, for load_predictor and the bench
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuChoice:
    """A manifest's ``cpu_default``: the artifact ``load_predictor(folder)`` runs on a CPU and how."""

    artifact: str
    threads: int  # 0: the runtime's own choice
    options: Tuple[Tuple[str, Any], ...] = ()  # predictor settings besides threads, e.g. ONNX Runtime's graph_optimization_level


@dataclass(frozen=True)
class Artifact:
    key: str  # "fp32" | "fp16" | "int8" | "engine"
    path: Path  # absolute, symlinks resolved, inside the folder
    sha256: str
    precision: Optional[str] = None  # engines record the precision they were built for
    companions: Tuple[Tuple[Path, str], ...] = ()  # (path, sha256) of files the main file needs (OpenVINO's .bin)

    @property
    def effective_precision(self) -> Optional[str]:
        """The recorded precision, else the one its key names ('fp16', 'openvino-fp16'); None for an engine without one."""
        tail = self.key.rsplit("-", 1)[-1]
        return self.precision or (tail if tail in PRECISIONS else None)


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

    @property
    def cpu_default(self) -> Optional[CpuChoice]:
        """The artifact and predictor settings that the export measured fastest on its CPU with FP32's accuracy
        (``export.cpu_default``); None when it records none, or names an artifact it does not list."""
        d = self.raw.get("cpu_default")
        if not isinstance(d, dict) or d.get("artifact") not in self.artifacts:
            return None
        threads, options = d.get("threads"), d.get("options") or {}
        if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in options.items()):
            return None  # settings this version cannot read: the choice is a speed hint, never worth a wrong load
        return CpuChoice(d["artifact"], threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else 0,
                         tuple(sorted(options.items())))

    def artifact_for(self, path: Union[str, Path]) -> Optional[Artifact]:
        """The artifact entry whose file is ``path`` (None when the manifest does not list it)."""
        target = Path(path).resolve()
        for art in self.artifacts.values():
            if art.path == target:
                return art
        return None


def verify_artifact(art: Artifact) -> None:
    """Refuse a missing file or one whose sha256 differs from the manifest (truncated copy, wrong file)."""
    for path, sha in ((art.path, art.sha256),) + art.companions:
        verify_file(path, sha)


def read_deploy_manifest(folder: Union[str, Path]) -> DeployManifest:
    """Parse ``<folder>/manifest.json``; every problem is a ManifestError naming the file."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME} here; expected an export folder written by lightseg-export")
    d = load_manifest(path)
    files = check_manifest(d, path)
    arts = d["artifacts"]
    artifacts = {key: Artifact(key=key, path=files[key], sha256=arts[key]["sha256"].lower(), precision=arts[key].get("precision"),
                               companions=tuple(companion_files(folder, key, arts[key], path)))
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
