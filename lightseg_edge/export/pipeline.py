"""``export(cfg)``: the export as a short sequence of steps, each timed and logged.

One flow for both origins. The plan (``_plan``) runs every check that can fail before work starts and fixes the
output folder, the input, the images and what to make. A front end then puts the checked FP32 ONNX into the
staging folder and hands the facts the rest needs to one shared sequence::

    from a registry model:  model (deploy form) -> onnx (torch.onnx.export + onnx.checker) -> simplify
                            -> deploy-check -> parity (ORT CPU vs PyTorch on real held-out images)
    from an ONNX file:      [plan: load-onnx -> tensorrt-preflight] -> the variants that the manifest beside it
                            lists and that are intact are reused (a skipped step each), the others made below
    then, for both:         accuracy-fp32 -> [fp16-keep -> fp16 -> accuracy-fp16] -> [int8 -> int8-keep -> accuracy-int8]
                            -> [targets] -> tensorrt-preflight -> tensorrt -> [accuracy-tensorrt-<precision>] -> manifest

The keep steps (``export.keep``) decide which layers stay in the higher precision (``--int8-keep``/``--fp16-keep``),
trying variants on held-out images apart from the reported ones. Every artifact is scored through its runtime's
predictor; the engine on the GPU it was built on (that path is written to TensorRT's API and has not been run here).

``--from-onnx`` is what runs on the target device to build the engine from an exported folder; into that folder
itself it keeps the earlier artifacts it did not replace. Its FP32 pre-flight runs in the plan, before anything is
copied, and is not repeated when the engine is FP32.

No TensorRT or no GPU here is the expected case on a CPU machine: every ONNX file is still produced, the
``tensorrt`` step is recorded as skipped with the reason, and ``ExportResult.target_command`` is the command that
builds the engine on the target. A failing step raises ``ExportError(step, message)``.

Atomicity: the output folder is replaced as a whole, in one step, or not at all (see ``staging``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .._version import __version__
from ..errors import ExportConfigError
from ..manifest import FORMAT, WEIGHTS_NAME, sha256_file
from ..types import DeployForm, InputSpec, PreprocessConfig, Runtime
from .accuracy import HeldoutScorer, VariantAccuracy
from .config import ExportConfig, check_fields, check_img_size, default_output, validate
from .keep import KeepDecision, KeepGate, KeepSpec, decide
from .images import ImageSet, calibration_set, default_image_root, heldout_set, load_inputs, load_masks, selection_set
from .metadata import deploy_metadata, embed_metadata
from .model_steps import build_model, copy_weights, deploy_check, deploy_form, weights_licence
from .onnx_source import check_input, check_makeable, engine_batch, intact, matching_manifest, preprocess_for, reusable
from .parity import ParityReport
from .staging import Staging, recover_output
from .steps import StepLog, StepRecord
from .target_flow import run_targets
from .targets import Target, TargetJob

log = logging.getLogger("lightseg_edge.export")

FILE_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
TIMING_CACHE = "timing.cache"
CALIB_LIST = "calibration.txt"
_TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "tensorrt", "numpy", "opencv-python-headless")


@dataclass(frozen=True)
class ExportResult:
    output: Path
    manifest: Path
    artifacts: Dict[str, Path]
    steps: Tuple[StepRecord, ...]
    parity: Optional[ParityReport] = None
    accuracy: Dict[str, VariantAccuracy] = field(default_factory=dict)
    engine: Optional[Path] = None
    engine_skipped: Optional[str] = None  # why no engine was built here
    target_command: Optional[str] = None  # how to build it on the target instead


@dataclass(frozen=True)
class Plan:
    """What the export will do, fixed before the first file is written: every check that can fail has run."""

    out: Path
    spec: InputSpec  # the FP32 graph's input; batch None = dynamic
    preprocess: Optional[PreprocessConfig]  # None only for an ONNX of unknown origin with nothing to make
    opset: int
    dynamic_batch: Optional[Tuple[int, int, int]]  # the engine's profile; None for a static batch
    make: Tuple[str, ...]  # the reduced precisions to produce, in order (--from-onnx reuses the others)
    heldout: Optional[ImageSet]  # None: nothing is scored
    calib: Optional[ImageSet]
    chunk: int  # held-out images per ONNX Runtime call
    pad: bool  # the last chunk is padded to the static batch
    calib_overlap: Optional[int] = None  # from a model: calibration images that are also held out (recorded)
    stride: Optional[int] = None  # from a model: the H/W multiple written into the ONNX metadata
    source: Optional[Path] = None  # --from-onnx: the FP32 file
    old: Optional[dict] = None  # --from-onnx: the manifest beside it, when it describes exactly that file
    reuse: Dict[str, dict] = field(default_factory=dict)  # --from-onnx: precision -> intact entry of ``old``
    in_place: bool = False  # --from-onnx into its own folder, as its model.onnx: the files are already there
    preflight: Optional[dict] = None  # --from-onnx: the source's TensorRT pre-flight
    selection: Optional[ImageSet] = None  # held-out images apart from the reported ones, for the keep trials


@dataclass(frozen=True)
class Source:
    """The front end's result: the checked FP32 ONNX and what the shared steps and the manifest take from its origin."""

    fp32: Path  # in the staging folder, or (in place) in the output folder
    names: Tuple[str, ...]  # the files the front end put into the staging folder
    x: Any  # the preprocessed held-out images (N x 3 x H x W); None when nothing is scored
    model_name: str
    weights: dict
    parity: Optional[dict]  # the manifest's parity record
    fp32_extra: Dict[str, Any] = field(default_factory=dict)  # more fields of the FP32 manifest entry
    reused: Dict[str, dict] = field(default_factory=dict)  # precision -> manifest entry of a variant kept as it is
    reused_paths: Dict[str, Path] = field(default_factory=dict)
    parity_report: Optional[ParityReport] = None
    metadata: Dict[str, Dict[str, str]] = field(default_factory=dict)  # precision -> lightseg.* ONNX metadata; none from an ONNX
    torch_model: Any = None  # the deploy form, for targets whose converter starts from PyTorch
    train_model: Any = None  # the training form, for the runtime-specific deploy forms of the targets
    extra: Dict[str, Any] = field(default_factory=dict)  # manifest keys after "tools"

    @property
    def form(self) -> Optional[DeployForm]:
        """The deploy form of ``fp32``; None when it is a given ONNX file (whatever form that holds)."""
        return DeployForm.DEFAULT if self.torch_model is not None else None


@dataclass
class _Made:
    """The artifacts put together so far (each shared step adds its own)."""

    artifacts: Dict[str, dict]
    paths: Dict[str, Path]  # where each ONNX variant is now
    names: List[str]  # files in the staging folder, synced to disk before the commit
    calibration: Optional[dict] = None
    cpu_default: Optional[dict] = None


@dataclass(frozen=True)
class _Engine:
    """The tensorrt step's outcome: the engine built here, or why not and the command that builds it on the target."""

    name: Optional[str] = None
    info: Any = None  # tensorrt_build.EngineInfo
    skipped: Optional[str] = None
    command: Optional[str] = None


def export(cfg: ExportConfig) -> ExportResult:
    """Run the export ``cfg`` describes; see the module docstring for the steps."""
    check_fields(cfg)
    recover_output(cfg.output or (str(Path(cfg.from_onnx).parent) if cfg.from_onnx else None))
    validate(cfg)
    with _torch_threads(cfg):
        steps = StepLog()
        return _run(cfg, _plan(cfg, steps), steps)


@contextlib.contextmanager
def _torch_threads(cfg: ExportConfig) -> Iterator[None]:
    """cfg.torch_threads for the PyTorch work of an export from a model. --from-onnx leaves torch alone: the target
    device that runs it often has none."""
    if cfg.from_onnx is not None:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------- the plan
def _plan(cfg: ExportConfig, steps: StepLog) -> Plan:
    """Every check that can fail before work starts, so that bad input leaves nothing behind. For --from-onnx that
    includes reading the graph (the load-onnx and tensorrt-preflight steps): its rules depend on the input shape."""
    return _plan_from_onnx(cfg, steps) if cfg.from_onnx is not None else _plan_from_model(cfg)


def _plan_from_model(cfg: ExportConfig) -> Plan:
    from ..models import get_model_config
    from .onnx_export import input_spec
    from .onnxrun import batch_plan

    mcfg = get_model_config(cfg.model)  # UnknownModelError with a suggestion
    h, w = (cfg.img_size, cfg.img_size) if cfg.img_size else mcfg.input_size
    check_img_size(h, cfg.model, mcfg.stride, min_size=mcfg.min_size)
    check_img_size(w, cfg.model, mcfg.stride, min_size=mcfg.min_size)
    pre = PreprocessConfig(size=(h, w), mode=mcfg.preprocess.mode, mean=mcfg.preprocess.mean, std=mcfg.preprocess.std)
    out = Path(cfg.output) if cfg.output else default_output(cfg, cfg.model, h)
    heldout = heldout_set(_data_root(cfg), max(cfg.parity_images, cfg.eval_images, cfg.fp16_check_images), cfg.seed)
    calib = calibration_set(cfg.calib_data, cfg.calib_images, cfg.seed) if cfg.int8 else None
    _say_data(heldout, calib)
    overlap = _warn_calibration(calib, cfg.calib_images, heldout) if calib is not None else None
    chunk, pad = batch_plan(None if cfg.dynamic else cfg.batch, cfg.dynamic_batch[2] if cfg.dynamic_batch else None)
    return Plan(
        out=out, spec=input_spec(cfg.batch, (h, w), cfg.dynamic), preprocess=pre, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
        make=cfg.precisions, heldout=heldout, calib=calib, chunk=chunk, pad=pad, calib_overlap=overlap, stride=mcfg.stride,
        selection=_selection(cfg, cfg.precisions, heldout),
    )


def _plan_from_onnx(cfg: ExportConfig, steps: StepLog) -> Plan:
    from .onnx_export import check_onnx, count_nodes, graph_io
    from .onnxrun import batch_plan

    src = Path(cfg.from_onnx)
    steps.run("load-onnx", lambda: check_onnx(src), lambda _: f"{src}: onnx.checker ok, {count_nodes(src)} nodes")
    preflight = _preflight(cfg, steps, src)  # before anything is copied: a parser gap is the first thing to know
    input_name, dims, output_name, opset = graph_io(src)
    old = matching_manifest(src)
    check_input(cfg, src, dims, old)
    pre = preprocess_for(cfg, old, (int(dims[2]), int(dims[3])))
    dyn = engine_batch(cfg, src, dims, old)
    reuse = reusable(cfg, src, old)
    make = tuple(p for p in cfg.precisions if p not in reuse)
    check_makeable(cfg, src, make, pre)
    heldout, calib = _onnx_images(cfg, make)
    chunk, pad = batch_plan(dims[0], dyn[2] if dyn else None)
    out = Path(cfg.output) if cfg.output else src.parent
    return Plan(
        out=out, spec=InputSpec(name=input_name, shape=(dims[0], 3, int(dims[2]), int(dims[3])), output_name=output_name),
        preprocess=pre, opset=opset, dynamic_batch=dyn, make=make, heldout=heldout, calib=calib, chunk=chunk, pad=pad, source=src,
        old=old, reuse=reuse, in_place=out.resolve() == src.parent.resolve() and src.name == FILE_NAMES["fp32"], preflight=preflight,
        selection=_selection(cfg, make, heldout),
    )


def _data_root(cfg: ExportConfig) -> str:
    root = cfg.data or default_image_root(cfg.calib_data)
    if root is None:
        raise ExportConfigError(
            "no images for the parity and accuracy checks: pass --data DIR (a dataset root with a 'val' split) or set LIGHTSEG_ISIC2018"
        )
    return root


def _onnx_images(cfg: ExportConfig, make: Tuple[str, ...]) -> Tuple[Optional[ImageSet], Optional[ImageSet]]:
    """(held-out, calibration) images for --from-onnx. Only a run that makes a variant scores (the earlier export's
    accuracy record stands otherwise), and it does without data rather than fail: on the target, building the
    engine is the point."""
    root = (cfg.data or default_image_root(cfg.calib_data)) if make else None
    heldout = heldout_set(root, max(cfg.eval_images, cfg.fp16_check_images), cfg.seed) if root else None
    calib = calibration_set(cfg.calib_data, cfg.calib_images, cfg.seed) if "int8" in make else None
    _say_data(heldout, calib)
    return heldout, calib


def _selection(cfg: ExportConfig, make: Tuple[str, ...], heldout: Optional[ImageSet]) -> Optional[ImageSet]:
    """The keep trials' images, when a precision to make asks for trials (``--int8-keep auto`` is the default)."""
    specs = cfg.keep_specs
    if heldout is None or not any(specs[p].needs_trials for p in make):
        return None
    return selection_set(heldout, cfg.select_images)


def _say_data(heldout: Optional[ImageSet], calib: Optional[ImageSet]) -> None:
    """Which images the checks and the calibration use (the default --data is picked from the environment)."""
    for what, images in (("held-out data", heldout), ("calibration data", calib)):
        if images is not None:
            log.info(images.describe(what))


def _warn_calibration(calib: ImageSet, requested: int, heldout: ImageSet) -> int:
    """Warn about a calibration set too small or overlapping the held-out images; the overlap is recorded."""
    if len(calib) < requested:
        log.warning("calibration: only %d %s images available in %s (asked for %d)", len(calib), calib.split, calib.root, requested)
    if len(calib) < 300:
        log.warning("calibration on %d images; 300-500 are recommended for stable INT8 ranges", len(calib))
    overlap = set(calib.case_ids) & set(heldout.case_ids)
    if overlap:
        log.warning("%d calibration images are also held-out images; the INT8 accuracy figure is optimistic", len(overlap))
    return len(overlap)


# ----------------------------------------------------------------------------------------------- front ends
def _from_model(cfg: ExportConfig, plan: Plan, s: Path, steps: StepLog) -> Source:
    """The deploy form exported to ONNX and simplified, then checked against PyTorch on real held-out images."""
    from .parity import check_parity

    train_form, model, weights, params = steps.run(
        "model",
        lambda: build_model(cfg.model, cfg.weights, cfg.seed),
        lambda r: f"{cfg.model} in deploy form, {r[3]:,} parameters, weights: {r[2]['source']}",
    )
    weights = copy_weights(train_form, cfg.model, weights, s)
    used = _onnx_and_simplify(cfg, plan.spec, model, s, steps)
    x = load_inputs(plan.heldout.samples, plan.preprocess)
    x_par = x[: cfg.parity_images]
    deploy = steps.run(
        "deploy-check",
        lambda: deploy_check(train_form, model, x_par, plan.chunk),
        lambda d: f"deploy() vs training form on {d['images']} real images: max|dlogit| {d['max_abs']:.2e}",
    )
    fp32 = s / FILE_NAMES["fp32"]
    parity = steps.run(
        "parity", lambda: check_parity(model, fp32, x_par, plan.chunk, plan.pad, _described(plan.heldout)), lambda r: r.summary()
    )
    licence = weights_licence(cfg.model, weights)
    return Source(
        fp32=fp32, names=(FILE_NAMES["fp32"],) + ((WEIGHTS_NAME,) if weights["source"] == WEIGHTS_NAME else ()), x=x,
        model_name=cfg.model, weights=weights, parity=dict(parity.to_dict(), deploy_check=deploy),
        fp32_extra={"simplifier": used, **_form_field(DeployForm.DEFAULT)},
        parity_report=parity, torch_model=model, train_model=train_form, extra={"parameters": params},
        metadata={p: deploy_metadata(cfg.model, p, plan.preprocess, plan.stride, weights, licence) for p in FILE_NAMES},
    )


def _form_field(form: Optional[DeployForm]) -> Dict[str, str]:
    """The manifest field naming the deploy form an artifact was made from; none for an export from an ONNX file."""
    return {} if form is None else {"deploy_form": form.value}


def _onnx_and_simplify(cfg: ExportConfig, spec: InputSpec, model, s: Path, steps: StepLog, name: str = FILE_NAMES["fp32"],
                       step: str = "") -> str:
    """The onnx and simplify steps (``step`` suffixes their names); the simplifier that was used (onnxslim when
    onnxsim fails)."""
    from .onnx_export import count_nodes, export_onnx
    from .simplify import simplify_onnx

    raw = s / f"{Path(name).stem}.raw.onnx"
    steps.run(
        f"onnx{step}",
        lambda: export_onnx(model, raw, spec, cfg.opset),
        lambda p: (
            f"opset {cfg.opset}, input {spec.name} {_shape(spec.shape)}, output {spec.output_name}, "
            f"{count_nodes(p)} nodes, onnx.checker ok"
        ),
    )
    _, used = steps.run(
        f"simplify{step}",
        lambda: simplify_onnx(raw, s / name, cfg.simplifier),
        lambda r: f"{r[0].name}: {r[1]}, {count_nodes(r[0])} nodes, onnx.checker ok",
    )
    os.unlink(raw)
    return used


def _from_onnx(cfg: ExportConfig, plan: Plan, s: Path, steps: StepLog) -> Source:
    """The file is the FP32 model, with the reusable variants beside it: copied into a new folder, used where they
    are in place (the commit keeps the folder's files)."""
    src, old = plan.source, plan.old or {}
    paths = {"fp32": src, **{p: src.parent / a["path"] for p, a in plan.reuse.items()}}
    names: List[str] = []
    if not plan.in_place:
        for p, path in list(paths.items()):
            shutil.copyfile(path, s / FILE_NAMES[p])
            paths[p] = s / FILE_NAMES[p]
            names.append(FILE_NAMES[p])
    reused = {p: dict(a, path=a["path"] if plan.in_place else FILE_NAMES[p]) for p, a in plan.reuse.items()}
    for p, a in plan.reuse.items():
        steps.skip(p, f"reusing {a['path']} from {src.parent} (its sha256 matches the manifest)")
    extra: Dict[str, Any] = {"source_onnx": str(src)}
    if plan.old is not None:  # the steps that made the model, beside the steps of this run
        extra["export_steps"] = old.get("export_steps") or old.get("steps", [])
    x = load_inputs(plan.heldout.samples, plan.preprocess) if plan.heldout is not None else None
    weights = old.get("weights") or {"source": str(src), "sha256": sha256_file(src)}
    return Source(
        fp32=paths.pop("fp32"), names=tuple(names), x=x, model_name=old.get("model") or cfg.model or src.stem, weights=weights,
        parity=old.get("parity"), reused=reused, reused_paths=paths, extra=extra,
    )


# ----------------------------------------------------------------------------------------------- shared steps
@dataclass(frozen=True)
class _Shared:
    """What every shared step reads."""

    cfg: ExportConfig
    plan: Plan
    src: Source
    stage: Path  # the staging folder
    steps: StepLog
    scorer: Optional[HeldoutScorer]  # None: nothing is scored
    selector: Optional[HeldoutScorer] = None  # the keep trials' scorer (plan.selection), its reference the FP32 ONNX


def _run(cfg: ExportConfig, plan: Plan, steps: StepLog) -> ExportResult:
    """The front end of the plan's origin, then the shared steps; the output folder changes only at the commit."""
    front = _from_onnx if plan.source is not None else _from_model
    with Staging(plan.out) as stage:
        src = front(cfg, plan, stage.dir, steps)
        run = _Shared(cfg, plan, src, stage.dir, steps, _scorer(cfg, plan, src.x), _selector(plan, src.fp32))
        made = _fp32(run)
        if "fp16" in plan.make:
            _fp16(run, made)
        if "int8" in plan.make:
            _int8(run, made)
        if cfg.targets:
            _targets(run, made)
        if cfg.cpu_default and run.scorer is not None:
            made.cpu_default = _cpu_default(run, made)
        preflight, engine = _engine(run, made)
        if plan.in_place and plan.old is not None:
            _keep_earlier(plan, made)
        path = _finish(steps, stage, made.names, _manifest(plan, src, made, run.scorer, engine, preflight))
    return _result(plan, path, made, steps, run.scorer, engine, src.parity_report)


def _scorer(cfg: ExportConfig, plan: Plan, x) -> Optional[HeldoutScorer]:
    if plan.heldout is None:
        return None
    n = min(cfg.eval_images, len(plan.heldout))
    return HeldoutScorer(x[:n], load_masks(plan.heldout.samples[:n]), plan.chunk, plan.pad, _described(plan.heldout),
                         plan.preprocess)


def _selector(plan: Plan, fp32: Path) -> Optional[HeldoutScorer]:
    sel = plan.selection
    if sel is None:
        return None
    scorer = HeldoutScorer(load_inputs(sel.samples, plan.preprocess), load_masks(sel.samples), plan.chunk, plan.pad, _described(sel),
                           plan.preprocess)
    scorer.measure(fp32, "fp32")  # the reference of every trial
    return scorer


def _keep(run: _Shared, precision: str, candidates: List[str], build: Callable[[Tuple[str, ...], Path], Path]) -> KeepDecision:
    """The ``--<precision>-keep`` decision for an ONNX variant, as a step; ``build(kept, path)`` writes a trial variant."""
    if not run.cfg.keep_specs[precision].needs_trials:
        return _decide_keep(run, precision, candidates, build)
    if run.selector is None:
        run.steps.skip(f"{precision}-keep", "no held-out images to try variants on (pass --data DIR); nothing kept")
        return _decide_keep(run, precision, candidates, build)
    return run.steps.run(f"{precision}-keep", lambda: _decide_keep(run, precision, candidates, build), lambda d: d.summary())


def _decide_keep(run: _Shared, precision: str, candidates: List[str], build: Callable[[Tuple[str, ...], Path], Path],
                 runtime: Runtime = Runtime.ONNXRUNTIME, variant: str = "") -> KeepDecision:
    """``export.keep.decide`` for ``precision``'s keep setting, each trial scored on the selection images with ``runtime``;
    without selection images (no --data) trials are impossible and nothing is kept."""
    spec, flag, sel = run.cfg.keep_specs[precision], f"--{precision}-keep", run.plan.selection
    gate = KeepGate(run.cfg.max_dice_drop, run.cfg.min_agreement)

    def measure(kept: Tuple[str, ...]) -> VariantAccuracy:
        with tempfile.TemporaryDirectory(prefix="lightseg-keep-") as work:
            trial = build(kept, Path(work) / f"trial.{variant or precision}")
            return run.selector.measure(trial, variant or precision, runtime, precision)

    if spec.needs_trials and run.selector is None:
        spec = KeepSpec()
    images, where = (len(sel), _selection_note(run.plan)) if spec.needs_trials else (0, "")
    return decide(spec, candidates, measure, gate, flag, images, where)


def _selection_note(plan: Plan) -> str:
    sel, held = plan.selection, plan.heldout
    apart = not set(sel.case_ids) & set(held.case_ids)
    return f"{len(sel)} {_described(sel)} images, " + ("apart from the reported ones" if apart else "the reported ones (no others)")


def _score(run: _Shared, path: Path, variant: str) -> None:
    if run.scorer is not None:
        run.steps.run(f"accuracy-{variant}", lambda: run.scorer.score(path, variant), _acc_line)


def _fp32(run: _Shared) -> _Made:
    """Score the FP32 graph (the reference of every other variant); its entry comes first, then the reused ones."""
    src, plan = run.src, run.plan
    _score(run, src.fp32, "fp32")
    entry = _artifact(src.fp32.parent, src.fp32.name, "fp32", src.metadata.get("fp32"), **src.fp32_extra)
    calibration = (plan.old or {}).get("calibration") if "int8" in plan.reuse else None  # it describes the reused INT8 model
    return _Made({"fp32": entry, **src.reused}, {"fp32": src.fp32, **src.reused_paths}, list(src.names), calibration)


def _fp16(run: _Shared, made: _Made) -> None:
    from .fp16 import convert_fp16, keepable_nodes

    x, path, fp32 = run.src.x, run.stage / FILE_NAMES["fp16"], made.paths["fp32"]
    x_check = x[: run.cfg.fp16_check_images] if x is not None else None
    decision = _keep(run, "fp16", keepable_nodes(fp32), lambda kept, dst: convert_fp16(fp32, dst, x_check, kept).path)
    r = run.steps.run("fp16", lambda: convert_fp16(fp32, path, x_check, decision.kept), lambda r: r.summary())
    made.paths["fp16"] = path
    _score(run, path, "fp16")
    made.artifacts["fp16"] = _artifact(
        run.stage, path.name, "fp16", run.src.metadata.get("fp16"), keep_io_types=True, overflow_check=r.to_dict(), keep=decision.to_dict(),
        **_form_field(run.src.form),
    )
    made.names.append(path.name)


def _int8(run: _Shared, made: _Made) -> None:
    from .int8 import keep_float, quantize_int8, quantized_layers, recount

    cfg, plan, calib, path = run.cfg, run.plan, run.plan.calib, run.stage / FILE_NAMES["int8"]
    batch = plan.spec.shape[0] or 1  # a dynamic graph is calibrated at batch 1
    q = run.steps.run(
        "int8",
        lambda: quantize_int8(made.paths["fp32"], path, calib, plan.preprocess, batch, cfg.calib_method, cfg.progress, cfg.int8_method),
        lambda r: r.summary(),
    )
    decision = _keep(run, "int8", quantized_layers(path), lambda kept, dst: keep_float(path, dst, kept))
    if decision.kept:
        q = recount(q, keep_float(path, path, decision.kept))
    made.paths["int8"] = path
    _score(run, path, "int8")
    quant = {"quantize_linear": q.quantize_linear, "per_channel_weights": q.per_channel_weights, "keep": decision.to_dict(),
             **_form_field(run.src.form)}
    made.artifacts["int8"] = _artifact(run.stage, path.name, "int8", run.src.metadata.get("int8"), **quant)
    made.calibration = dict(q.calibration, list_file=CALIB_LIST)
    if plan.calib_overlap is not None:
        made.calibration["overlap_with_heldout"] = plan.calib_overlap
    # the images the ranges came from, listed so that the calibration can be audited or repeated
    used = ImageSet(calib.root, calib.layout, calib.split, calib.samples[: q.calibration["images"]], calib.available, calib.seed)
    (run.stage / CALIB_LIST).write_text(used.listing())
    made.names += [path.name, CALIB_LIST]


def _targets(run: _Shared, made: _Made) -> None:
    cfg, plan = run.cfg, run.plan
    job = TargetJob(onnx_fp32=made.paths["fp32"], stage=run.stage, precisions=("fp32",) + cfg.precisions, preprocess=plan.preprocess,
                    input_spec=plan.spec, model_name=cfg.model, model=run.src.torch_model, calibration=plan.calib, progress=cfg.progress,
                    keep=functools.partial(_decide_keep, run), deploy_form=run.src.form)
    forms: Dict[DeployForm, TargetJob] = {}

    def job_for(target: Target) -> TargetJob:
        form = run.src.train_model.form_for(target.runtime) if run.src.train_model is not None else DeployForm.DEFAULT
        if form is DeployForm.DEFAULT:
            return job
        if form not in forms:
            forms[form] = _form_job(run, job, form)
        return forms[form]

    try:
        artifacts, files = run_targets(cfg.targets, job_for, run.steps, run.scorer)
    finally:
        for form_job in forms.values():  # a step's input, not an artifact: it must not reach the output folder
            form_job.onnx_fp32.unlink(missing_ok=True)
    made.artifacts.update(artifacts)
    made.names += files


def _form_job(run: _Shared, job: TargetJob, form: DeployForm) -> TargetJob:
    """The job of the targets whose runtime has a deploy form of its own: that form, checked against the training form
    on the parity images as the default one is, exported and simplified as the default one is."""
    src, name = run.src, f".{form.value}-form.onnx"
    model = run.steps.run(f"model-{form.value}", lambda: deploy_form(src.train_model, form), lambda m: f"{src.model_name} in the {form.value} deploy form")
    x_par = src.x[: run.cfg.parity_images]
    run.steps.run(f"deploy-check-{form.value}", lambda: deploy_check(src.train_model, model, x_par, run.plan.chunk),
                  lambda d: f"deploy({form.value}) vs training form on {d['images']} real images: max|dlogit| {d['max_abs']:.2e}")
    _onnx_and_simplify(run.cfg, run.plan.spec, model, run.stage, run.steps, name, f"-{form.value}")
    return replace(job, onnx_fp32=run.stage / name, model=model, deploy_form=form)


def _cpu_default(run: _Shared, made: _Made) -> Optional[dict]:
    """The artifact and thread count that ran fastest here with FP32's accuracy (see ``export.cpu_default``)."""
    from ..bench.environment import collect_environment, cpu_label
    from ..bench.machine import usable_cores
    from .cpu_default import candidates, choose

    cores = usable_cores()
    paths = {key: made.paths.get(key, run.stage / entry["path"]) for key, entry in made.artifacts.items()}  # in place: the folder's
    cands = candidates(run.scorer.results, made.artifacts, paths, cores)
    if len(cands) < 2:
        run.steps.skip("cpu-default", "one CPU candidate only: nothing to choose")
        return None
    cpu = cpu_label(collect_environment().get("cpu"))
    x = run.src.x[:1]
    chosen = run.steps.run("cpu-default", lambda: choose(cands, x, run.plan.preprocess, cpu, cores), lambda d: d.summary())
    return chosen.to_dict()


def _engine(run: _Shared, made: _Made) -> Tuple[Optional[dict], _Engine]:
    """(pre-flight record, engine) for the lowest requested precision."""
    precision, plan = run.cfg.engine_precision, run.plan
    onnx_path = made.paths[precision]
    checked_in_plan = precision == "fp32" and plan.preflight is not None
    preflight = plan.preflight if checked_in_plan else _preflight(run.cfg, run.steps, onnx_path)
    engine = _build_engine(run, onnx_path, precision)
    if engine.name is not None:
        # EngineInfo carries path and precision too; they are _artifact's own arguments, not extra fields
        info = {k: v for k, v in engine.info.to_dict().items() if k not in ("path", "precision")}
        made.artifacts["engine"] = _artifact(run.stage, engine.name, precision, **info, **_form_field(run.src.form))
        made.names.append(engine.name)
        if run.scorer is not None:  # the engine on the GPU it was built on; written to TensorRT's API, not run here (no GPU)
            run.steps.run(f"accuracy-tensorrt-{precision}", lambda: run.scorer.score(
                run.stage / engine.name, f"tensorrt-{precision}", Runtime.TENSORRT, precision, device="cuda"), _acc_line)
    return preflight, engine


def _preflight(cfg: ExportConfig, steps: StepLog, onnx_path: Path) -> Optional[dict]:
    """The TensorRT ONNX-parser check of the graph an engine is built from, for the TensorRT versions users have; a
    finding is reported, not fatal (a Jetson on TensorRT 10 does not care what 8.5 lacks)."""
    from .trt_preflight import preflight

    if "tensorrt" not in cfg.formats:
        return None
    report = steps.run("tensorrt-preflight", lambda: preflight(onnx_path), lambda r: r.summary())
    if not report.ok:
        log.warning("%s", report.summary())
    return dict(report.to_dict(), source=onnx_path.name)  # the file's name in the folder, not the staging path


def _build_engine(run: _Shared, onnx_path: Path, precision: str) -> _Engine:
    """The tensorrt step: build here when possible, otherwise record why not and the command for the target."""
    from .tensorrt_build import build_engine, target_command, target_status

    cfg, plan, steps = run.cfg, run.plan, run.steps
    if not cfg.builds_engine:
        reason = "engine build disabled (engine='off')" if cfg.engine == "off" else "tensorrt is not in --formats"
        steps.skip("tensorrt", reason)
        return _Engine(skipped=reason)
    ok, reason = target_status()
    if not ok:
        command = target_command(plan.out / FILE_NAMES["fp32"], precision, plan.dynamic_batch, cfg.workspace_mb)
        steps.skip("tensorrt", f"{reason}. Build the engine on the target with: {command}")
        return _Engine(skipped=reason, command=command)
    name = f"model.{precision}.plan"
    profile = _profile(plan.spec.hw, plan.dynamic_batch)
    info = steps.run(
        "tensorrt",
        lambda: build_engine(onnx_path, run.stage / name, precision, plan.spec.name, profile, cfg.workspace_mb, plan.out / TIMING_CACHE),
        lambda i: i.summary(),
    )
    return _Engine(name=name, info=info)


def _keep_earlier(plan: Plan, made: _Made) -> None:
    """In place, the folder's earlier artifacts that this run did not replace stay listed (an engine built before,
    other formats), and a kept INT8 model keeps its calibration record."""
    for kind, art in plan.old.get("artifacts", {}).items():
        if kind not in made.artifacts and intact(plan.out / art["path"], art.get("sha256")):
            made.artifacts[kind] = art
    if made.calibration is None and "int8" in made.artifacts:
        made.calibration = plan.old.get("calibration")


# ----------------------------------------------------------------------------------------------- manifest
def _manifest(plan: Plan, src: Source, made: _Made, scorer: Optional[HeldoutScorer], engine: _Engine, preflight) -> dict:
    old = plan.old or {}  # --from-onnx without new figures keeps the earlier export's
    return {
        "format": FORMAT,
        "model": src.model_name,
        "created": _now(),
        "weights": src.weights,
        "input": plan.spec.to_dict(),
        "preprocess": plan.preprocess.to_dict() if plan.preprocess is not None else None,
        "output": plan.spec.output_name,
        "opset": plan.opset,
        "batch": _batch_record(plan.spec.shape[0], plan.dynamic_batch),
        "artifacts": made.artifacts,
        "parity": src.parity,
        "calibration": made.calibration,
        "accuracy": scorer.to_dict() if scorer is not None else old.get("accuracy", {}),
        "cpu_default": made.cpu_default,
        "tensorrt": (_trt_record(engine) or old.get("tensorrt")) if "engine" in made.artifacts else None,
        "tensorrt_preflight": preflight,
        "engine_build": {"status": "built" if engine.name else "skipped", "reason": engine.skipped, "command": engine.command},
        "tools": _tool_versions(),
        **src.extra,
    }


def _finish(steps: StepLog, stage: Staging, names: List[str], manifest: dict) -> Path:
    manifest["steps"] = [r.to_dict() for r in steps.records]
    n = len(manifest["artifacts"])
    return steps.run(
        "manifest", lambda: stage.commit(names, manifest), lambda p: f"{p} written last; its {n} artifact(s) verified by sha256"
    )


def _result(plan: Plan, manifest: Path, made: _Made, steps: StepLog, scorer, engine: _Engine, parity) -> ExportResult:
    out = plan.out
    return ExportResult(
        output=out,
        manifest=manifest,
        artifacts={k: out / v["path"] for k, v in made.artifacts.items()},
        steps=tuple(steps.records),
        parity=parity,
        accuracy=dict(scorer.results) if scorer is not None else {},
        engine=out / engine.name if engine.name else None,
        engine_skipped=engine.skipped,
        target_command=engine.command,
    )


# ----------------------------------------------------------------------------------------------- small helpers
def _artifact(stage_dir: Path, name: str, precision: str, metadata: Optional[Dict[str, str]] = None, **extra) -> dict:
    """The manifest entry of a finished file; ``metadata`` is embedded in the ONNX first (the sha256 covers it)."""
    path = stage_dir / name
    if metadata is not None:
        embed_metadata(path, metadata)
    return {"path": name, "precision": precision, "sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}


def _described(images: ImageSet) -> str:
    return f"{images.split} split of {images.root}"


def _shape(shape) -> str:
    return "x".join("N" if d is None else str(d) for d in shape)


def _acc_line(r: VariantAccuracy) -> str:
    base = f"{r.variant} on {r.images} held-out images: mDice {r.mdice:.4f}, Dice* {r.dice_star:.4f}"
    return base if r.variant == "fp32" else f"{base}, delta mDice {r.delta_mdice:+.4f} vs fp32, mask agreement {r.agreement_dice:.4f}"


def _profile(spec_hw: Tuple[int, int], dynamic_batch) -> Optional[tuple]:
    if dynamic_batch is None:
        return None
    h, w = spec_hw
    return tuple((int(n), 3, h, w) for n in dynamic_batch)


def _batch_record(static: Optional[int], dynamic_batch) -> dict:
    if dynamic_batch is None:
        return {"dynamic": False, "size": static}
    lo, opt, hi = dynamic_batch
    return {"dynamic": True, "min": lo, "opt": opt, "max": hi}


def _trt_record(engine: _Engine) -> Optional[dict]:
    if engine.info is None:
        return None
    i = engine.info
    return {
        "version": i.tensorrt,
        "gpu": i.gpu,
        "compute_capability": i.compute_capability,
        "mode": i.mode,
        "workspace_mb": i.workspace_mb,
        "profile": i.profile,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _tool_versions() -> Dict[str, str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return {}
    out = {"python": platform.python_version(), "lightseg-edge": __version__}
    for pkg in _TOOLS:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
