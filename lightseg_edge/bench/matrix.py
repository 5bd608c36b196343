"""Which jobs a run consists of, from what the user pointed at (a model, an ONNX file, an engine, an export folder,
or the whole registry), and the rows that are decided without running anything (a runtime that is not installed, a
combination that does not exist, an export that failed).

ONNX and TensorRT runs of a registry model need an export first. The benchmark makes it with the export pipeline
(``lightseg_edge.export``) into a scratch folder: same seeded weights as the PyTorch row, FP16 with FP32 I/O, INT8
Q/DQ calibrated on ``calib_images`` training images. That calibration is small on purpose (the INT8 *speed* does
not depend on it); for deployment-grade INT8 accuracy, benchmark a ``lightseg-export`` folder with ``--export-dir``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._hashing import shown
from .._optional import is_available
from ..errors import CheckpointError, InvalidInputError, LightsegError, ManifestError
from ..runtimes.registry import RUNTIMES, RuntimeSpec, artifact_key, get_runtime, runtime_names
from ..types import PRECISION_NAMES, Runtime
from .environment import cpu_label
from .jobs import Job, base_row
from .memory import DEFAULT_MEMORY_RUNS
from .records import BenchResult
from .timing import TimingConfig

PRECISIONS = PRECISION_NAMES
BENCH_CALIB_IMAGES = 16
EXPORT_CHECK_IMAGES = 4
Progress = Optional[Callable[[str], None]]


@dataclass(frozen=True)
class BenchOptions:
    runtimes: Optional[Tuple[str, ...]] = None  # None: what the source offers
    precisions: Optional[Tuple[str, ...]] = None
    batches: Tuple[int, ...] = (1,)
    img_size: Optional[int] = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    threads: Optional[int] = None
    tta: str = "none"  # types.TTA value, for every predictor of the run
    data: Optional[str] = None
    split: str = "test"
    max_images: Optional[int] = None
    memory_runs: int = DEFAULT_MEMORY_RUNS
    device: Optional[str] = None
    calib_images: int = BENCH_CALIB_IMAGES
    work_dir: Optional[str] = None  # where benchmark exports go; None: a temporary folder removed afterwards
    models: Optional[Tuple[str, ...]] = None  # --all: restrict the registry (tests, quick runs)
    env: Dict[str, Any] = field(default_factory=dict)  # compact environment summary copied into every row
    gpu: bool = False  # a CUDA GPU is present (from the environment probe)


@dataclass
class Plan:
    jobs: List[Job] = field(default_factory=list)
    rows: List[BenchResult] = field(default_factory=list)
    models: List[str] = field(default_factory=list)  # registry models: parameters, MACs and claims
    notes: List[str] = field(default_factory=list)
    temp_dirs: List[str] = field(default_factory=list)
    exports: Dict[str, Any] = field(default_factory=dict)  # model -> ExportResult or the exception
    random_models: List[str] = field(default_factory=list)  # models benchmarked with random weights (none shipped)

    def add_model(self, name: Optional[str]) -> None:
        if name and name not in self.models:
            self.models.append(name)

    def cleanup(self) -> None:
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.temp_dirs.clear()


def _say(progress: Progress, text: str) -> None:
    if progress is not None:
        progress(text)


def _job(opts: BenchOptions, **kw: Any) -> Job:
    base = dict(batches=tuple(opts.batches), img_size=opts.img_size, threads=opts.threads, tta=opts.tta, device=opts.device,
                timing=opts.timing.to_dict(), memory_runs=opts.memory_runs, data=opts.data, split=opts.split,
                max_images=opts.max_images, env=dict(opts.env))
    base.update(kw)
    return Job(**base)


def _skip(plan: Plan, opts: BenchOptions, reason: str, status: str = "skipped", **kw: Any) -> None:
    job = _job(opts, **kw)
    for b in job.batches:
        plan.rows.append(base_row(job, b, status, reason))


def _registry_has(name: Optional[str]) -> bool:
    if not name or not is_available("torch"):
        return False
    from ..models import list_models

    return name in list_models()


# ------------------------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Weights:
    value: Optional[str]  # for Job.weights: None (shipped), "random:SEED", or a path
    label: str  # "pretrained", "random:SEED" or the path
    meaningful: bool  # accuracy makes sense
    note: Optional[str]
    problem: Optional[str] = None  # why an export's weights file cannot be loaded (outside its folder, wrong sha256)


def resolve_weights(name: str, weights: Optional[str]) -> Weights:
    """``--weights`` for ``--model``: shipped weights, explicit random weights, or a file (which must exist)."""
    if weights is None:
        from ..models._weights import pretrained_path

        try:
            pretrained_path(name)
            return Weights(None, "pretrained", True, None)
        except CheckpointError:
            return Weights("random:0", "random:0", False,
                           "accuracy not available: no shipped weights, so random weights were benchmarked "
                           "(latency and memory are valid; pass --weights CKPT for accuracy)")
    if weights == "random" or weights.startswith("random:"):
        seed = weights.partition(":")[2] or "0"
        if not seed.isdigit():
            raise InvalidInputError(f"--weights {weights}: expected 'random' or 'random:SEED' with an integer seed")
        return Weights(f"random:{seed}", f"random:{seed}", False, "accuracy not available: random weights")
    if not Path(weights).is_file():
        raise InvalidInputError(f"--weights {weights}: file not found (expected a lightseg-train checkpoint or a .safetensors file, or 'random')")
    return Weights(str(weights), str(weights), True, None)


def _manifest_weights(man: Dict[str, Any], folder: Path) -> Weights:
    from ..manifest import weights_file

    w = man.get("weights") or {}
    source = w.get("source")
    if source == "pretrained":
        return Weights(None, "pretrained", True, None)
    if source == "random":
        seed = w.get("seed")
        label = f"random:{seed}" if seed is not None else "random"
        return Weights(label if seed is not None else None, label, False, "accuracy not available: the export holds random weights")
    try:  # the file is held to the same rules as load_predictor's: inside the folder, matching its sha256
        return Weights(str(weights_file(folder, man)), str(source), True, None)
    except ManifestError as exc:
        return Weights(source, str(source), True, None, problem=str(exc))


# ------------------------------------------------------------------------------------------------------- exports
def _work_dir(plan: Plan, opts: BenchOptions) -> Path:
    if opts.work_dir:
        Path(opts.work_dir).mkdir(parents=True, exist_ok=True)
        return Path(opts.work_dir)
    if not plan.temp_dirs:
        plan.temp_dirs.append(tempfile.mkdtemp(prefix="lightseg-bench-"))
    return Path(plan.temp_dirs[0])


def _dynamic_batch(opts: BenchOptions) -> Optional[Tuple[int, int, int]]:
    top = max(opts.batches)
    return None if top == 1 else (1, top, top)


def _calib_root(opts: BenchOptions) -> Optional[str]:
    from ..export.images import default_image_root

    return opts.data or default_image_root()


def _target_formats(opts: BenchOptions) -> Tuple[str, ...]:
    """The export formats the requested artifact runtimes need (those that can run here, at a static batch)."""
    if _dynamic_batch(opts) is not None:
        return ()
    specs = [get_runtime(rt) for rt in (opts.runtimes or ())]
    return tuple(s.artifact_prefix for s in specs if s.artifact_prefix and s.unusable_reason(opts.device) is None)


def export_model(plan: Plan, opts: BenchOptions, name: str, w: Weights, precisions: Sequence[str], progress: Progress) -> Any:
    """The export folder for ``name`` (made once per plan) with the ONNX variants in ``precisions`` and the formats
    of the requested artifact runtimes."""
    if name in plan.exports:
        return plan.exports[name]
    from ..export import ExportConfig, export

    want = [p for p in PRECISIONS if p in precisions]
    out = _work_dir(plan, opts) / f"{name}-{opts.img_size or 'default'}"
    seed = int(w.value.partition(":")[2] or 0) if w.value and w.value.startswith("random") else 0
    cfg = ExportConfig(
        model=name, weights="random" if w.value and w.value.startswith("random") else w.value, fp16="fp16" in want, int8="int8" in want,
        calib_data=_calib_root(opts) if "int8" in want else None, calib_images=opts.calib_images, img_size=opts.img_size,
        dynamic_batch=_dynamic_batch(opts), output=str(out), data=opts.data, parity_images=EXPORT_CHECK_IMAGES,
        eval_images=EXPORT_CHECK_IMAGES, fp16_check_images=EXPORT_CHECK_IMAGES, seed=seed, engine="off", progress=False,
        formats=("onnx",) + _target_formats(opts),
    )
    _say(progress, f"exporting {name} ({', '.join(want)}; {', '.join(cfg.formats)}) for the benchmark's rows -> {out}")
    try:
        result: Any = export(cfg)
    except Exception as exc:  # noqa: BLE001 - an export that fails is this model's ONNX rows' result
        result = exc
    plan.exports[name] = result
    return result


def _calibration_images(result: Any) -> str:
    from ..manifest import read_manifest

    try:
        return str((read_manifest(result.output).get("calibration") or {}).get("images", "?"))
    except LightsegError:
        return "?"


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def _tensorrt_status(opts: BenchOptions) -> Optional[str]:
    """None when engines can be built and run here, else why not."""
    why = RUNTIMES[Runtime.TENSORRT].unusable_reason(opts.device)
    return why or (None if opts.gpu else "no CUDA GPU here: TensorRT engines need one")


# ------------------------------------------------------------------------------------------------------- sources
def plan_model(plan: Plan, opts: BenchOptions, name: str, weights: Optional[str] = None, progress: Progress = None,
               lenient: bool = False) -> None:
    """Rows for one registry model on each requested runtime and precision.

    ``lenient`` (``--all``): an input size the model cannot take becomes skipped rows instead of an error.
    """
    from ..export.config import check_img_size
    from ..models import get_model_config

    cfg = get_model_config(name)  # UnknownModelError (a user error) with a suggestion
    plan.add_model(name)
    runtimes = opts.runtimes or ("pytorch",)
    precisions = opts.precisions or ("fp32",)
    w = resolve_weights(name, weights)
    common = dict(model=name, source=name, weights=w.value, weights_label=w.label, accuracy=w.meaningful, accuracy_note=w.note)
    if opts.img_size:
        try:
            check_img_size(opts.img_size, name, cfg.stride, min_size=cfg.min_size)
        except LightsegError as exc:
            if not lenient:
                raise
            _skip(plan, opts, str(exc), kind="model", runtime="pytorch", precision=",".join(precisions), **common)
            return
    if w.label.startswith("random") and weights is None:
        plan.random_models.append(name)
    for rt in runtimes:
        if rt == "pytorch":
            for p in precisions:
                if p == "int8":
                    if not lenient:
                        _skip(plan, opts, "the PyTorch runtime has no INT8 mode; INT8 runs as a Q/DQ ONNX on onnxruntime or tensorrt",
                              kind="model", runtime="pytorch", precision=p, **common)
                elif p == "fp16" and not opts.gpu:
                    _skip(plan, opts, "fp16 on the PyTorch runtime is CUDA autocast; no CUDA device here", kind="model", runtime="pytorch",
                          precision=p, **common)
                else:
                    plan.jobs.append(_job(opts, kind="model", runtime="pytorch", precision=p, **common))
        elif rt == "onnxruntime":
            result = export_model(plan, opts, name, w, precisions, progress)
            for p in precisions:
                common_onnx = dict(common, weights=None)
                if isinstance(result, BaseException):
                    _skip(plan, opts, f"export: {_exc_text(result)}", status="failed", kind="onnx", runtime="onnxruntime", precision=p, **common_onnx)
                    continue
                path = result.artifacts.get(p)
                note = f"{p} ONNX made by the benchmark's own export"
                if p == "int8":
                    note += f" (INT8 calibrated on {_calibration_images(result)} training images)"
                plan.jobs.append(_job(opts, kind="export-dir", runtime="onnxruntime", precision=p, files={p: str(path)},
                                      notes=(note,), **dict(common_onnx, source=str(result.output))))
        elif rt == "tensorrt":
            _plan_tensorrt_for_model(plan, opts, name, w, precisions, common, progress)
        else:
            _plan_target_for_model(plan, opts, get_runtime(rt), name, w, precisions, dict(common, weights=None), progress, lenient)


def _target_precisions(spec: RuntimeSpec, precisions: Sequence[str], lenient: bool) -> Tuple[List[str], List[str]]:
    """(precisions the runtime's export target makes, those it does not; the latter are omitted under --all)."""
    from ..export.targets import get_target

    made = get_target(spec.artifact_prefix).precisions
    return [p for p in precisions if p in made], [] if lenient else [p for p in precisions if p not in made]


def _plan_target_for_model(plan: Plan, opts: BenchOptions, spec: RuntimeSpec, name: str, w: Weights, precisions: Sequence[str],
                           common: Dict[str, Any], progress: Progress, lenient: bool) -> None:
    """Rows of a runtime with its own export format (OpenVINO, LiteRT, Core ML), from the benchmark's export."""
    rt = spec.runtime.value
    have, missing = _target_precisions(spec, precisions, lenient)
    for p in missing:
        _skip(plan, opts, f"the {spec.artifact_prefix} export has no {p} variant", kind="export-dir", runtime=rt, precision=p, **common)
    why = spec.unusable_reason(opts.device)
    if why is None and _dynamic_batch(opts) is not None:
        why = f"{spec.label} exports take a static batch; benchmark them with --batch 1"
    if why is not None:
        for p in have:
            _skip(plan, opts, why, kind="export-dir", runtime=rt, precision=p, **common)
        return
    result = export_model(plan, opts, name, w, precisions, progress)
    for p in have:
        key = artifact_key(spec, p)
        if isinstance(result, BaseException):
            _skip(plan, opts, f"export: {_exc_text(result)}", status="failed", kind="export-dir", runtime=rt, precision=p, **common)
        elif key not in result.artifacts:
            _skip(plan, opts, f"the export made no {key}", status="failed", kind="export-dir", runtime=rt, precision=p, **common)
        else:
            plan.jobs.append(_job(opts, kind="export-dir", runtime=rt, precision=p, files={key: str(result.artifacts[key])},
                                  notes=(f"{key} made by the benchmark's own export",), **dict(common, source=str(result.output))))


def _plan_tensorrt_for_model(plan: Plan, opts: BenchOptions, name: str, w: Weights, precisions: Sequence[str],
                             common: Dict[str, Any], progress: Progress) -> None:
    """Engines built from the model's FP32 ONNX, one per precision. UNVERIFIED: needs TensorRT and a GPU."""
    why = _tensorrt_status(opts)
    common_trt = dict(common, weights=None)
    if why:
        _skip(plan, opts, why, kind="engine", runtime="tensorrt", precision=",".join(precisions), **common_trt)
        return
    from ..export import ExportConfig, export

    base = export_model(plan, opts, name, w, precisions, progress)
    for p in precisions:
        if isinstance(base, BaseException):
            _skip(plan, opts, f"export: {_exc_text(base)}", status="failed", kind="engine", runtime="tensorrt", precision=p, **common_trt)
            continue
        out = _work_dir(plan, opts) / f"{name}-{opts.img_size or 'default'}-trt-{p}"
        cfg = ExportConfig(from_onnx=str(base.artifacts["fp32"]), fp16=p == "fp16", int8=p == "int8",
                           calib_data=_calib_root(opts) if p == "int8" else None, calib_images=opts.calib_images,
                           dynamic_batch=_dynamic_batch(opts), output=str(out), data=opts.data, eval_images=EXPORT_CHECK_IMAGES,
                           fp16_check_images=EXPORT_CHECK_IMAGES, engine="auto", progress=False)
        _say(progress, f"building a TensorRT {p} engine for {name} -> {out}")
        try:
            res = export(cfg)
        except Exception as exc:  # noqa: BLE001 - one engine failing keeps the other rows
            _skip(plan, opts, f"engine build: {_exc_text(exc)}", status="failed", kind="engine", runtime="tensorrt", precision=p, **common_trt)
            continue
        if res.engine is None:
            _skip(plan, opts, f"engine not built: {res.engine_skipped}", kind="engine", runtime="tensorrt", precision=p, **common_trt)
            continue
        plan.jobs.append(_job(opts, kind="export-dir", runtime="tensorrt", precision=p, files={"engine": str(res.engine)},
                              **dict(common_trt, source=str(res.output))))


def _graph_facts(path: Path) -> Dict[str, Any]:
    """Input size and precision of an ONNX graph, read with onnx when installed (no manifest beside the file)."""
    if not is_available("onnx"):
        return {}
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise InvalidInputError(f"--onnx {shown(path)}: not a readable ONNX file ({type(exc).__name__}); expected a .onnx written by lightseg-export") from None
    if not model.graph.input:
        raise InvalidInputError(f"--onnx {shown(path)}: the graph has no input; expected a .onnx written by lightseg-export")
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    ops = {n.op_type for n in model.graph.node}
    fp16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    fp32 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    precision = "int8" if "QuantizeLinear" in ops else "fp16" if fp16 > fp32 else "fp32"
    hw = (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None
    return {"hw": hw, "precision": precision}


def _listing_manifest(path: Path) -> Optional[Tuple[Dict[str, Any], str]]:
    """(manifest, artifact key) of the export folder that lists ``path``, if any."""
    folder = path.parent
    if not (folder / "manifest.json").is_file():
        return None
    from ..manifest import read_manifest

    man = read_manifest(folder)  # a corrupt manifest is an error: guessing the preprocessing would be worse
    for key, art in (man.get("artifacts") or {}).items():
        if (folder / art["path"]).resolve() == path.resolve():
            return man, key
    return None


def _check_fixed_size(opts: BenchOptions, size: Optional[int], what: str) -> None:
    if opts.img_size and size and int(size) != int(opts.img_size):
        raise InvalidInputError(f"--img-size {opts.img_size}: {what} is fixed at {size}x{size}; re-export it with lightseg-export --img-size {opts.img_size}")


def _single_precision(opts: BenchOptions, what: str) -> Optional[str]:
    if opts.precisions and len(opts.precisions) > 1:
        raise InvalidInputError(f"--precision {','.join(opts.precisions)}: {what} holds one precision; give one value or none")
    return opts.precisions[0] if opts.precisions else None


def _check_runtimes(opts: BenchOptions, allowed: Sequence[str], what: str) -> None:
    bad = [r for r in (opts.runtimes or ()) if r not in allowed]
    if bad:
        raise InvalidInputError(f"--runtime {','.join(bad)}: {what} runs on {' or '.join(allowed)} only")


def _add_reference(plan: Plan, opts: BenchOptions, model: Optional[str], w: Weights, img_size: Optional[int]) -> None:
    """With --data, the fp32 PyTorch row of the same weights is the accuracy reference: add it when it can be built."""
    if not (opts.data and w.meaningful and _registry_has(model)):
        return
    if w.problem or (w.value is not None and not Path(w.value).is_file()):
        return
    plan.add_model(model)
    plan.jobs.insert(0, _job(opts, kind="model", source=model, model=model, runtime="pytorch", precision="fp32", weights=w.value,
                             weights_label=w.label, img_size=img_size, notes=("fp32 PyTorch reference for the accuracy deltas",)))


def plan_onnx(plan: Plan, opts: BenchOptions, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"--onnx {path}: file not found")
    _check_runtimes(opts, ("onnxruntime",), "an .onnx file")
    precision = _single_precision(opts, "an .onnx file")
    listed = _listing_manifest(p)
    if listed is not None:
        man, key = listed
        model = man.get("model")
        w = _manifest_weights(man, p.parent)
        img = (man.get("input") or {}).get("shape", [None, None, None])[2]
        _check_fixed_size(opts, img, str(p))
        plan.jobs.append(_job(opts, kind="onnx", source=str(p), model=model if _registry_has(model) else None, runtime="onnxruntime",
                              precision=precision or (key if key in PRECISIONS else "fp32"), weights_label=w.label, accuracy=w.meaningful,
                              accuracy_note=w.note, files={key: str(p)}, img_size=None))
        if _registry_has(model):
            plan.add_model(model)
            _add_reference(plan, opts, model, w, img)
        return
    facts = _graph_facts(p)
    if facts.get("hw"):
        _check_fixed_size(opts, facts["hw"][0], str(p))
    hw = facts.get("hw") or ((opts.img_size, opts.img_size) if opts.img_size else None)
    if hw is None:
        raise InvalidInputError(f"--onnx {path}: no manifest.json beside it and its input size is not fixed in the graph; pass --img-size")
    pre = {"size": [int(hw[0]), int(hw[1])], "mode": "scale", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    note = "no manifest.json beside the file: preprocessing assumed to be x/255 at the graph's size (latency is unaffected)"
    plan.notes.append(f"{p.name}: {note}")
    plan.jobs.append(_job(opts, kind="onnx", source=str(p), runtime="onnxruntime", precision=precision or facts.get("precision", "fp32"),
                          preprocess=pre, weights_label="file", accuracy=False,
                          accuracy_note="accuracy not available: the file's preprocessing is unknown (no manifest.json)",
                          files={"onnx": str(p)}, notes=(note,), img_size=None))


def plan_engine(plan: Plan, opts: BenchOptions, path: str) -> None:
    """A serialized TensorRT engine, through the runtime layer's TensorRT predictor. UNVERIFIED here (no TensorRT)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"--engine {path}: file not found")
    _check_runtimes(opts, ("tensorrt",), "a TensorRT engine")
    precision = _single_precision(opts, "an engine")
    listed = _listing_manifest(p)
    if listed is not None:
        man, key = listed
        model = man.get("model")
        art = man["artifacts"][key]
        w = _manifest_weights(man, p.parent)
        _check_fixed_size(opts, (man.get("input") or {}).get("shape", [None] * 3)[2], str(p))
        plan.jobs.append(_job(opts, kind="engine", source=str(p), model=model if _registry_has(model) else None, runtime="tensorrt",
                              precision=precision or art.get("precision") or "fp16", weights_label=w.label, accuracy=w.meaningful,
                              accuracy_note=w.note, files={"engine": str(p)}, img_size=None))
        if _registry_has(model):
            plan.add_model(model)
            _add_reference(plan, opts, model, w, (man.get("input") or {}).get("shape", [None] * 3)[2])
        return
    size = opts.img_size or 256
    pre = {"size": [size, size], "mode": "scale", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    note = f"no manifest.json beside the engine: preprocessing assumed to be x/255 at {size}x{size} (--img-size)"
    plan.jobs.append(_job(opts, kind="engine", source=str(p), runtime="tensorrt", precision=precision or "fp16", preprocess=pre,
                          weights_label="file", accuracy=False, accuracy_note="accuracy not available: preprocessing unknown",
                          files={"engine": str(p)}, notes=(note,), img_size=None))


def plan_export_dir(plan: Plan, opts: BenchOptions, folder: str) -> None:
    from ..manifest import check_artifacts, read_manifest

    d = Path(folder)
    if not d.is_dir():
        raise InvalidInputError(f"--export-dir {folder}: folder not found")
    man = read_manifest(d)  # ManifestError for a missing or corrupt manifest
    check_artifacts(d, man)  # and for a listed file that is missing or does not match its sha256
    model = man.get("model")
    known = _registry_has(model)
    arts = man.get("artifacts") or {}
    w = _manifest_weights(man, d)
    img = (man.get("input") or {}).get("shape", [None, None, None])[2]
    _check_fixed_size(opts, img, f"the export in {d}")
    default_rt = (["pytorch"] if known and not w.problem and (w.value is None or w.value.startswith("random") or Path(w.value).is_file()) else []) + ["onnxruntime"]
    if "engine" in arts:
        default_rt.append("tensorrt")
    default_rt += [spec.runtime.value for spec in RUNTIMES.values()
                   if spec.artifact_prefix and any(artifact_key(spec, p) in arts for p in PRECISIONS)]
    runtimes = opts.runtimes or tuple(default_rt)
    precisions = opts.precisions
    common = dict(model=model if known else (model or d.name), weights_label=w.label, accuracy=w.meaningful, accuracy_note=w.note)
    if known:
        plan.add_model(model)
    for rt in runtimes:
        if rt == "pytorch":
            if not known:
                _skip(plan, opts, f"model {model!r} is not in this installation's registry", kind="model", runtime="pytorch", precision="fp32", source=str(d), **common)
            elif w.problem:
                raise ManifestError(w.problem)  # asked for by name: refusing is clearer than a skipped row
            elif w.value is not None and not w.value.startswith("random") and not Path(w.value).is_file():
                _skip(plan, opts, f"the export's weights file {w.value} is not here", kind="model", runtime="pytorch", precision="fp32", source=model, **common)
            elif w.value is None and w.label == "random":
                _skip(plan, opts, "the export's random weights record no seed, so PyTorch cannot rebuild them", kind="model", runtime="pytorch",
                      precision="fp32", source=model, **common)
            else:
                plan.jobs.append(_job(opts, kind="model", source=model, runtime="pytorch", precision="fp32", weights=w.value, img_size=img,
                                      notes=("the export's weights, rebuilt in PyTorch",), **common))
        elif rt == "onnxruntime":
            have = [p for p in PRECISIONS if p in arts]
            for p in (precisions or tuple(have)):
                if p not in arts:
                    _skip(plan, opts, f"this export has no {p} ONNX (it has {', '.join(have)}); re-export with lightseg-export --{p}",
                          kind="export-dir", runtime="onnxruntime", precision=p, source=str(d), **common)
                    continue
                plan.jobs.append(_job(opts, kind="export-dir", source=str(d), runtime="onnxruntime", precision=p,
                                      files={p: str(d / arts[p]["path"])}, img_size=None, **common))
        elif rt == "tensorrt":
            eng = arts.get("engine")
            if eng is None:
                build = (man.get("engine_build") or {}).get("command")
                _skip(plan, opts, "this export has no TensorRT engine" + (f"; build it on the target with: {build}" if build else ""),
                      kind="export-dir", runtime="tensorrt", precision=",".join(precisions or ("fp16",)), source=str(d), **common)
                continue
            plan.jobs.append(_job(opts, kind="export-dir", source=str(d), runtime="tensorrt", precision=eng.get("precision") or "fp16",
                                  files={"engine": str(d / eng["path"])}, img_size=None, **common))
        else:
            _plan_target_in_folder(plan, opts, get_runtime(rt), d, arts, precisions, common)


def _plan_target_in_folder(plan: Plan, opts: BenchOptions, spec: RuntimeSpec, d: Path, arts: Dict[str, Any],
                           precisions: Optional[Sequence[str]], common: Dict[str, Any]) -> None:
    rt = spec.runtime.value
    have = [p for p in PRECISIONS if artifact_key(spec, p) in arts]
    why = spec.unusable_reason(opts.device)
    for p in (precisions or tuple(have) or ("fp32",)):
        key = artifact_key(spec, p)
        if key not in arts:
            _skip(plan, opts, f"this export has no {key} (it has {', '.join(arts)}); re-export with lightseg-export --formats "
                  f"{spec.artifact_prefix}", kind="export-dir", runtime=rt, precision=p, source=str(d), **common)
        elif why is not None:
            _skip(plan, opts, f"exported, not runnable here: {why}", kind="export-dir", runtime=rt, precision=p, source=str(d), **common)
        else:
            plan.jobs.append(_job(opts, kind="export-dir", source=str(d), runtime=rt, precision=p, files={key: str(d / arts[key]["path"])},
                                  img_size=None, **common))


def plan_all(plan: Plan, opts: BenchOptions, progress: Progress = None) -> None:
    """Every registry model (or ``opts.models``) on every runtime and precision that exists, skipped rows included."""
    from ..models import list_models

    models = list(opts.models or list_models())
    all_opts = replace(opts, runtimes=opts.runtimes or runtime_names(), precisions=opts.precisions or PRECISIONS)
    for name in models:
        plan_model(plan, all_opts, name, None, progress, lenient=True)


def make_plan(source: str, value: Optional[str], opts: BenchOptions, weights: Optional[str] = None, progress: Progress = None) -> Plan:
    """``source`` is one of model, onnx, engine, export-dir, all."""
    plan = Plan()
    try:
        if source == "model":
            plan_model(plan, opts, str(value), weights, progress)
        elif source == "onnx":
            plan_onnx(plan, opts, str(value))
        elif source == "engine":
            plan_engine(plan, opts, str(value))
        elif source == "export-dir":
            plan_export_dir(plan, opts, str(value))
        elif source == "all":
            plan_all(plan, opts, progress)
        else:
            raise InvalidInputError(f"unknown benchmark source {source!r}")
        if plan.random_models:
            plan.notes.append(f"no shipped weights for {', '.join(plan.random_models)}: random weights (seed 0) were benchmarked; "
                              f"latency and memory are valid, accuracy is not available")
    except BaseException:
        plan.cleanup()
        raise
    return plan


def env_summary(env: Dict[str, Any]) -> Dict[str, Any]:
    """The few environment facts every row carries (the full probe goes once into the report)."""
    gpu = env.get("gpu") or {}
    torch = env.get("torch") or {}
    jetson = env.get("jetson") or {}
    return {
        "cpu": cpu_label(env.get("cpu")), "cores": (env.get("cpu") or {}).get("usable_cores"),
        "os": (env.get("os") or {}).get("distribution") or (env.get("os") or {}).get("system"),
        "python": (env.get("python") or {}).get("version"), "torch": torch.get("version"),
        "onnxruntime": (env.get("onnxruntime") or {}).get("version"), "tensorrt": (env.get("tensorrt") or {}).get("version"),
        "gpu": ", ".join(d.get("name") or "?" for d in gpu.get("devices", [])) or None, "driver": gpu.get("driver"),
        "cuda": torch.get("build_cuda") or (env.get("nvml") or {}).get("cuda_driver"),
        "jetpack": jetson.get("jetpack") if jetson.get("detected") else None,
    }

