"""``export(cfg)``: the export as a short sequence of steps, each timed and logged.

From a registry model::

    model (deploy form) -> onnx (torch.onnx.export + onnx.checker) -> simplify -> parity (ORT CPU vs PyTorch on
    real held-out images) -> accuracy-fp32 -> [fp16 -> accuracy-fp16] -> [int8 -> accuracy-int8] -> tensorrt
    -> manifest

From an existing ONNX (``--from-onnx``, what runs on the target device): the FP32 graph is checked, precision
variants listed in the folder's manifest are reused (or made), and the engine is built.

No TensorRT or no GPU here is the expected case on a CPU machine: every ONNX file is still produced, the
``tensorrt`` step is recorded as skipped with the reason, and ``ExportResult.target_command`` is the command that
builds the engine on the target. A failing step raises ``ExportError(step, message)``.

Atomicity: the output folder is replaced as a whole, in one step, or not at all (see ``staging``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .._version import __version__
from ..errors import ExportConfigError, ExportError
from ..types import InputSpec, PreprocessConfig
from .accuracy import HeldoutScorer, VariantAccuracy
from .config import RANDOM_WEIGHTS, ExportConfig, check_fields, check_img_size, default_output, validate
from .images import ImageSet, calibration_set, default_image_root, heldout_set, load_inputs, load_masks
from ..manifest import FORMAT, MANIFEST_NAME, WEIGHTS_NAME, read_manifest, sha256_file
from .metadata import deploy_metadata, embed_metadata
from .staging import Staging, recover_output
from .parity import ParityReport
from .steps import StepLog, StepRecord
from .target_flow import run_targets
from .targets import TargetJob

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


# ----------------------------------------------------------------------------------------------- step bodies
def _build_model(name: str, weights: Optional[str], seed: int):
    """(training form, deploy form, weights record). The training form is kept to check deploy() against it."""
    import copy

    import torch

    from ..errors import CheckpointError
    from ..models import create_model
    from ..models._weights import pretrained_path

    if weights is None:
        try:
            path: Optional[Path] = pretrained_path(name)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}. Pass --weights CKPT (a lightseg-train checkpoint or .safetensors file), or --weights random to export "
                f"randomly initialised weights (for testing the pipeline only)"
            ) from exc
        source = "pretrained"
    elif weights == RANDOM_WEIGHTS:
        path, source = None, RANDOM_WEIGHTS
    else:
        path, source = Path(weights), str(weights)
    torch.manual_seed(seed)  # random weights are reproducible; loaded weights overwrite every parameter anyway
    model = create_model(name, checkpoint=path) if path is not None else create_model(name)
    model.eval()
    train_form = copy.deepcopy(model)
    deployed = model.deploy()
    if deployed is None or deployed.training:
        raise ExportError("model", f"{name}.deploy() must return the model in eval mode")
    record = {"source": source, "sha256": sha256_file(path) if path is not None else None}
    if source == RANDOM_WEIGHTS:
        record["seed"] = seed
    params = sum(p.numel() for p in deployed.parameters())
    return train_form, deployed, record, params


def _copy_weights(train_form, name: str, record: dict, stage_dir: Path) -> dict:
    """A weights file given by path is copied into the folder as tensors only; the record keeps where it came from.

    Readers load weights only from inside an export folder (verified by sha256), so an export that pointed at the
    training run's file could not be run in PyTorch once copied elsewhere.
    """
    from ..models._weights import save_safetensors

    if record["source"] in ("pretrained", RANDOM_WEIGHTS):
        return record
    path = save_safetensors(train_form, stage_dir / WEIGHTS_NAME, name)
    return {"source": WEIGHTS_NAME, "sha256": sha256_file(path), "origin": record["source"], "origin_sha256": record["sha256"]}


def _weights_licence(name: str, weights: dict) -> Optional[str]:
    """The shipped weights' licence from their model card; None for weights this project did not train."""
    from ..models._weights import has_pretrained, model_card

    return model_card(name).get("licence") if weights.get("source") == "pretrained" and has_pretrained(name) else None


def _deploy_check(train_form, deployed, x, chunk: int) -> dict:
    """The deploy form must compute what the training form computes (same tolerance as ONNX parity)."""
    import numpy as np

    from ..errors import ParityError
    from .parity import PARITY_ATOL, PARITY_RTOL, torch_logits

    a, b = torch_logits(train_form, x, chunk), torch_logits(deployed, x, chunk)
    diff = float(np.abs(a.astype(np.float64) - b).max())
    tol = PARITY_ATOL + PARITY_RTOL * float(np.abs(a).max())
    if diff > tol:
        raise ParityError(f"deploy() changes the model's output: max|dlogit| {diff:.2e} > {tol:.1e} on {len(x)} real images")
    return {"max_abs": diff, "tolerance": tol, "images": len(x)}


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


def _artifact(stage_dir: Path, name: str, precision: str, metadata: Optional[Dict[str, str]] = None, **extra) -> dict:
    """The manifest entry of a finished file; ``metadata`` is embedded in the ONNX first (the sha256 covers it)."""
    path = stage_dir / name
    if metadata is not None:
        embed_metadata(path, metadata)
    return {"path": name, "precision": precision, "sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def _data_root(cfg: ExportConfig) -> str:
    root = cfg.data or default_image_root()
    if root is None:
        raise ExportConfigError(
            "no images for the parity and accuracy checks: pass --data DIR (a dataset root with a 'val' split) or set LIGHTSEG_ISIC2018"
        )
    return root


class _Engine:
    """The tensorrt step: build here when possible, otherwise record why not and the command for the target."""

    def __init__(self, cfg: ExportConfig, steps: StepLog) -> None:
        self.cfg, self.steps = cfg, steps
        self.info = None
        self.skipped: Optional[str] = None
        self.command: Optional[str] = None

    def run(
        self, onnx_path: Path, stage_dir: Path, out: Path, precision: str, input_name: str, profile, fp32_target: Path, dynamic_batch
    ) -> Optional[str]:
        from .tensorrt_build import build_engine, target_command, target_status

        if not self.cfg.builds_engine:
            self.skipped = "engine build disabled (engine='off')" if self.cfg.engine == "off" else "tensorrt is not in --formats"
            self.steps.skip("tensorrt", self.skipped)
            return None
        ok, reason = target_status()
        if not ok:
            self.skipped = reason
            self.command = target_command(fp32_target, precision, dynamic_batch, self.cfg.workspace_mb)
            self.steps.skip("tensorrt", f"{reason}. Build the engine on the target with: {self.command}")
            return None
        name = f"model.{precision}.plan"
        self.info = self.steps.run(
            "tensorrt",
            lambda: build_engine(onnx_path, stage_dir / name, precision, input_name, profile, self.cfg.workspace_mb, out / TIMING_CACHE),
            lambda info: info.summary(),
        )
        return name


def _result(out: Path, manifest: Path, artifacts: dict, steps: StepLog, scorer, plan, engine, parity: Optional[ParityReport] = None) -> ExportResult:
    return ExportResult(
        output=out,
        manifest=manifest,
        artifacts={k: out / v["path"] for k, v in artifacts.items()},
        steps=tuple(steps.records),
        parity=parity,
        accuracy=dict(scorer.results) if scorer is not None else {},
        engine=out / plan if plan else None,
        engine_skipped=engine.skipped,
        target_command=engine.command,
    )


def _finish(steps: StepLog, stage: Staging, names: List[str], manifest: dict) -> Path:
    manifest["steps"] = [r.to_dict() for r in steps.records]
    n = len(manifest["artifacts"])
    return steps.run(
        "manifest", lambda: stage.commit(names, manifest), lambda p: f"{p} written last; its {n} artifact(s) verified by sha256"
    )


# ----------------------------------------------------------------------------------------------- from a model
def _export_model(cfg: ExportConfig) -> ExportResult:
    from ..models import get_model_config
    from .fp16 import convert_fp16
    from .int8 import quantize_int8
    from .onnx_export import count_nodes, export_onnx, input_spec
    from .onnxrun import batch_plan
    from .parity import check_parity
    from .simplify import simplify_onnx

    mcfg = get_model_config(cfg.model)  # UnknownModelError with a suggestion
    h, w = (cfg.img_size, cfg.img_size) if cfg.img_size else mcfg.input_size
    check_img_size(h, cfg.model, mcfg.stride, min_size=mcfg.min_size)
    check_img_size(w, cfg.model, mcfg.stride, min_size=mcfg.min_size)
    pre = PreprocessConfig(size=(h, w), mode=mcfg.preprocess.mode, mean=mcfg.preprocess.mean, std=mcfg.preprocess.std)
    spec = input_spec(cfg.batch, (h, w), cfg.dynamic)
    out = Path(cfg.output) if cfg.output else default_output(cfg, cfg.model, h)
    # Everything that can be checked before work starts is checked here, so bad input leaves nothing behind.
    root = _data_root(cfg)
    heldout = heldout_set(root, max(cfg.parity_images, cfg.eval_images, cfg.fp16_check_images), cfg.seed)
    calib: Optional[ImageSet] = calibration_set(cfg.calib_data, cfg.calib_images, cfg.seed) if cfg.int8 else None
    _say_data(heldout, calib)
    if calib is not None:
        _warn_calibration(calib, cfg.calib_images, heldout)
    chunk, pad = batch_plan(None if cfg.dynamic else cfg.batch, cfg.dynamic_batch[2] if cfg.dynamic_batch else None)
    steps = StepLog()
    with Staging(out) as stage:
        s = stage.dir
        train_form, model, weights, params = steps.run(
            "model",
            lambda: _build_model(cfg.model, cfg.weights, cfg.seed),
            lambda r: f"{cfg.model} in deploy form, {r[3]:,} parameters, weights: {r[2]['source']}",
        )
        weights = _copy_weights(train_form, cfg.model, weights, s)
        steps.run(
            "onnx",
            lambda: export_onnx(model, s / "model.raw.onnx", spec, cfg.opset),
            lambda p: (
                f"opset {cfg.opset}, input {spec.name} {_shape(spec.shape)}, output {spec.output_name}, "
                f"{count_nodes(p)} nodes, onnx.checker ok"
            ),
        )
        _, used = steps.run(
            "simplify",
            lambda: simplify_onnx(s / "model.raw.onnx", s / FILE_NAMES["fp32"], cfg.simplifier),
            lambda r: f"{r[0].name}: {r[1]}, {count_nodes(r[0])} nodes, onnx.checker ok",
        )
        os.unlink(s / "model.raw.onnx")
        x_all = load_inputs(heldout.samples, pre)
        source = f"{heldout.split} split of {heldout.root}"
        x_par = x_all[: cfg.parity_images]
        deploy = steps.run(
            "deploy-check",
            lambda: _deploy_check(train_form, model, x_par, chunk),
            lambda d: f"deploy() vs training form on {d['images']} real images: max|dlogit| {d['max_abs']:.2e}",
        )
        parity = steps.run("parity", lambda: check_parity(model, s / FILE_NAMES["fp32"], x_par, chunk, pad, source), lambda r: r.summary())
        train_form = None  # the training-form copy is only needed for the deploy check
        n_eval = min(cfg.eval_images, len(heldout))
        scorer = HeldoutScorer(x_all[:n_eval], load_masks(heldout.samples[:n_eval]), chunk, pad, source)
        steps.run("accuracy-fp32", lambda: scorer.score(s / FILE_NAMES["fp32"], "fp32"), _acc_line)
        licence = _weights_licence(cfg.model, weights)

        def meta(precision: str) -> Dict[str, str]:
            return deploy_metadata(cfg.model, precision, pre, mcfg.stride, weights, licence)

        artifacts = {"fp32": _artifact(s, FILE_NAMES["fp32"], "fp32", meta("fp32"), simplifier=used)}
        if cfg.fp16:
            fp16 = steps.run(
                "fp16",
                lambda: convert_fp16(s / FILE_NAMES["fp32"], s / FILE_NAMES["fp16"], x_all[: cfg.fp16_check_images]),
                lambda r: r.summary(),
            )
            steps.run("accuracy-fp16", lambda: scorer.score(s / FILE_NAMES["fp16"], "fp16"), _acc_line)
            artifacts["fp16"] = _artifact(s, FILE_NAMES["fp16"], "fp16", meta("fp16"), keep_io_types=True, overflow_check=fp16.to_dict())
        calibration = None
        names = [FILE_NAMES["fp32"]] + [FILE_NAMES[p] for p in cfg.precisions]
        if weights["source"] == WEIGHTS_NAME:
            names.append(WEIGHTS_NAME)
        if calib is not None:
            q = steps.run(
                "int8",
                lambda: quantize_int8(
                    s / FILE_NAMES["fp32"], s / FILE_NAMES["int8"], calib, pre, cfg.batch, cfg.calib_method, cfg.progress
                ),
                lambda r: r.summary(),
            )
            steps.run("accuracy-int8", lambda: scorer.score(s / FILE_NAMES["int8"], "int8"), _acc_line)
            artifacts["int8"] = _artifact(
                s, FILE_NAMES["int8"], "int8", meta("int8"), quantize_linear=q.quantize_linear, per_channel_weights=q.per_channel_weights
            )
            calibration = dict(q.calibration, list_file=CALIB_LIST, overlap_with_heldout=len(set(calib.case_ids) & set(heldout.case_ids)))
            used_set = ImageSet(
                calib.root, calib.layout, calib.split, calib.samples[: q.calibration["images"]], calib.available, calib.seed
            )
            (s / CALIB_LIST).write_text(used_set.listing())
            names.append(CALIB_LIST)
        if cfg.targets:
            job = TargetJob(onnx_fp32=s / FILE_NAMES["fp32"], stage=s, precisions=("fp32",) + cfg.precisions, preprocess=pre,
                            input_spec=spec, model_name=cfg.model, model=model, calibration=calib, progress=cfg.progress)
            target_artifacts, target_files = run_targets(cfg.targets, job, steps, scorer)
            artifacts.update(target_artifacts)
            names += target_files
        precision = cfg.engine_precision
        preflight = _preflight(cfg, steps, s / FILE_NAMES[precision])
        engine = _Engine(cfg, steps)
        plan = engine.run(
            s / FILE_NAMES[precision],
            s,
            out,
            precision,
            spec.name,
            _profile((h, w), cfg.dynamic_batch),
            out / FILE_NAMES["fp32"],
            cfg.dynamic_batch,
        )
        if plan is not None:
            artifacts["engine"] = _artifact(s, plan, precision, **{k: v for k, v in engine.info.to_dict().items() if k != "path"})
            names.append(plan)
        manifest = {
            "format": FORMAT,
            "model": cfg.model,
            "created": _now(),
            "weights": weights,
            "input": spec.to_dict(),
            "preprocess": pre.to_dict(),
            "output": spec.output_name,
            "opset": cfg.opset,
            "batch": _batch_record(cfg.batch, cfg.dynamic_batch),
            "artifacts": artifacts,
            "parity": dict(parity.to_dict(), deploy_check=deploy),
            "calibration": calibration,
            "accuracy": scorer.to_dict(),
            "tensorrt": _trt_record(engine),
            "tensorrt_preflight": preflight,
            "engine_build": {"status": "built" if plan else "skipped", "reason": engine.skipped, "command": engine.command},
            "tools": _tool_versions(),
            "parameters": params,
        }
        path = _finish(steps, stage, names, manifest)
    return _result(out, path, artifacts, steps, scorer, plan, engine, parity)


def _shape(shape) -> str:
    return "x".join("N" if d is None else str(d) for d in shape)


def _acc_line(r: VariantAccuracy) -> str:
    base = f"{r.variant} on {r.images} held-out images: mDice {r.mdice:.4f}, Dice* {r.dice_star:.4f}"
    return base if r.variant == "fp32" else f"{base}, delta mDice {r.delta_mdice:+.4f} vs fp32, mask agreement {r.agreement_dice:.4f}"


def _preflight(cfg: ExportConfig, steps: StepLog, onnx_path: Path) -> Optional[dict]:
    """The TensorRT ONNX-parser check of the graph an engine is built from, for the TensorRT versions users have; a
    finding is reported, not fatal (a Jetson on TensorRT 10 does not care what 8.5 lacks)."""
    from .trt_preflight import preflight

    if "tensorrt" not in cfg.formats:
        return None
    report = steps.run("tensorrt-preflight", lambda: preflight(onnx_path), lambda r: r.summary())
    if not report.ok:
        log.warning("%s", report.summary())
    return report.to_dict()


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


def _say_data(heldout: Optional[ImageSet], calib: Optional[ImageSet]) -> None:
    """Which images the checks and the calibration use (the default --data is picked from the environment)."""
    for what, images in (("held-out data", heldout), ("calibration data", calib)):
        if images is not None:
            log.info(images.describe(what))


def _warn_calibration(calib: ImageSet, requested: int, heldout: ImageSet) -> None:
    if len(calib) < requested:
        log.warning("calibration: only %d %s images available in %s (asked for %d)", len(calib), calib.split, calib.root, requested)
    if len(calib) < 300:
        log.warning("calibration on %d images; 300-500 are recommended for stable INT8 ranges", len(calib))
    overlap = set(calib.case_ids) & set(heldout.case_ids)
    if overlap:
        log.warning("%d calibration images are also held-out images; the INT8 accuracy figure is optimistic", len(overlap))


# ----------------------------------------------------------------------------------------------- from an ONNX
def _export_onnx_file(cfg: ExportConfig) -> ExportResult:
    from .fp16 import convert_fp16
    from .int8 import quantize_int8
    from .onnx_export import check_onnx, count_nodes, graph_io
    from .onnxrun import batch_plan

    src = Path(cfg.from_onnx)
    out = Path(cfg.output) if cfg.output else src.parent
    steps = StepLog()
    steps.run("load-onnx", lambda: check_onnx(src), lambda _: f"{src}: onnx.checker ok, {count_nodes(src)} nodes")
    source_preflight = _preflight(cfg, steps, src)  # before anything is copied: a parser gap is the first thing to know
    input_name, dims, output_name, opset = graph_io(src)
    old = _matching_manifest(src)
    _check_onnx_input(cfg, src, dims, old)
    old_arts = (old or {}).get("artifacts", {})
    pre = _preprocess_for(cfg, old, (int(dims[2]), int(dims[3])))
    dynamic = dims[0] is None
    dyn = cfg.dynamic_batch
    if dynamic and dyn is None and old and old.get("batch", {}).get("dynamic"):
        dyn = (old["batch"]["min"], old["batch"]["opt"], old["batch"]["max"])
    if dynamic and dyn is None:
        raise ExportConfigError(f"{src} has a dynamic batch: pass --dynamic-batch MIN,OPT,MAX for the engine's optimization profile")
    if not dynamic and cfg.dynamic_batch is not None:
        raise ExportConfigError(f"{src} has a static batch of {dims[0]}; --dynamic-batch needs an ONNX exported with a dynamic batch")
    if not dynamic and cfg.batch not in (1, dims[0]):
        raise ExportConfigError(f"--batch {cfg.batch} does not match {src}'s static batch of {dims[0]}")
    h, w = int(dims[2]), int(dims[3])
    reuse = {
        p: old_arts[p] for p in cfg.precisions if p in old_arts and _intact(src.parent / old_arts[p]["path"], old_arts[p].get("sha256"))
    }
    make = [p for p in cfg.precisions if p not in reuse]
    if "int8" in make and cfg.calib_data is None:
        raise ExportConfigError(f"no INT8 model beside {src} in its manifest: pass --calib-data DIR to calibrate one")
    if make and pre is None:
        raise ExportConfigError(
            f"cannot make {', '.join(make)} from {src}: its preprocessing is unknown (no manifest beside it); pass --model NAME"
        )
    root = (cfg.data or default_image_root()) if make else None
    heldout = heldout_set(root, max(cfg.eval_images, cfg.fp16_check_images), cfg.seed) if root and make else None
    calib = calibration_set(cfg.calib_data, cfg.calib_images, cfg.seed) if "int8" in make else None
    _say_data(heldout, calib)
    chunk, pad = batch_plan(None if dynamic else dims[0], dyn[2] if dyn else None)
    in_place = out.resolve() == src.parent.resolve() and src.name == FILE_NAMES["fp32"]
    with Staging(out) as stage:
        s = stage.dir
        names: List[str] = []
        paths: Dict[str, Path] = {"fp32": src}  # where each variant is right now
        if not in_place:
            for p, from_path in [("fp32", src)] + [(p, src.parent / a["path"]) for p, a in reuse.items()]:
                shutil.copyfile(from_path, s / FILE_NAMES[p])
                names.append(FILE_NAMES[p])
                paths[p] = s / FILE_NAMES[p]
        else:
            paths.update({p: src.parent / a["path"] for p, a in reuse.items()})
        artifacts = {"fp32": _artifact(paths["fp32"].parent, paths["fp32"].name, "fp32")}
        artifacts["fp32"]["path"] = FILE_NAMES["fp32"]
        for p, art in reuse.items():
            artifacts[p] = dict(art, path=FILE_NAMES[p] if not in_place else art["path"])
            steps.skip(p, f"reusing {art['path']} from {src.parent} (its sha256 matches the manifest)")
        scorer = None
        x_all = None
        if heldout is not None:
            n_eval = min(cfg.eval_images, len(heldout))
            x_all = load_inputs(heldout.samples, pre)
            scorer = HeldoutScorer(
                x_all[:n_eval], load_masks(heldout.samples[:n_eval]), chunk, pad, f"{heldout.split} split of {heldout.root}"
            )
            steps.run("accuracy-fp32", lambda: scorer.score(paths["fp32"], "fp32"), _acc_line)
        if "fp16" in make:
            x_check = x_all[: cfg.fp16_check_images] if x_all is not None else None
            fp16 = steps.run("fp16", lambda: convert_fp16(paths["fp32"], s / FILE_NAMES["fp16"], x_check), lambda r: r.summary())
            names.append(FILE_NAMES["fp16"])
            paths["fp16"] = s / FILE_NAMES["fp16"]
            artifacts["fp16"] = _artifact(s, FILE_NAMES["fp16"], "fp16", keep_io_types=True, overflow_check=fp16.to_dict())
            if scorer is not None:
                steps.run("accuracy-fp16", lambda: scorer.score(paths["fp16"], "fp16"), _acc_line)
        calibration = (old or {}).get("calibration") if "int8" in reuse else None
        if calib is not None:
            batch = 1 if dynamic else int(dims[0])
            q = steps.run(
                "int8",
                lambda: quantize_int8(paths["fp32"], s / FILE_NAMES["int8"], calib, pre, batch, cfg.calib_method, cfg.progress),
                lambda r: r.summary(),
            )
            names += [FILE_NAMES["int8"], CALIB_LIST]
            paths["int8"] = s / FILE_NAMES["int8"]
            artifacts["int8"] = _artifact(
                s, FILE_NAMES["int8"], "int8", quantize_linear=q.quantize_linear, per_channel_weights=q.per_channel_weights
            )
            calibration = dict(q.calibration, list_file=CALIB_LIST)
            used_set = ImageSet(
                calib.root, calib.layout, calib.split, calib.samples[: q.calibration["images"]], calib.available, calib.seed
            )
            (s / CALIB_LIST).write_text(used_set.listing())
            if scorer is not None:
                steps.run("accuracy-int8", lambda: scorer.score(paths["int8"], "int8"), _acc_line)
        if cfg.targets:
            spec = InputSpec(name=input_name, shape=(None if dynamic else dims[0], 3, h, w), output_name=output_name)
            job = TargetJob(onnx_fp32=paths["fp32"], stage=s, precisions=("fp32",) + cfg.precisions, preprocess=pre, input_spec=spec,
                            model_name=cfg.model, calibration=calib, progress=cfg.progress)
            target_artifacts, target_files = run_targets(cfg.targets, job, steps, scorer)
            artifacts.update(target_artifacts)
            names += target_files
        precision = cfg.engine_precision
        preflight = _preflight(cfg, steps, paths[precision]) if precision != "fp32" else source_preflight
        engine = _Engine(cfg, steps)
        plan = engine.run(
            paths[precision],
            s,
            out,
            precision,
            input_name,
            _profile((h, w), dyn if dynamic else None),
            out / FILE_NAMES["fp32"],
            dyn if dynamic else None,
        )
        if plan is not None:
            artifacts["engine"] = _artifact(s, plan, precision, **{k: v for k, v in engine.info.to_dict().items() if k != "path"})
            names.append(plan)
        if in_place:  # earlier artifacts of this folder that this run did not replace stay listed
            for kind, art in old_arts.items():
                if kind not in artifacts and _intact(out / art["path"], art.get("sha256")):
                    artifacts[kind] = art
            if calibration is None and "int8" in artifacts and old is not None:
                calibration = old.get("calibration")
        accuracy = scorer.to_dict() if scorer is not None else (old or {}).get("accuracy", {})
        manifest = {
            "format": FORMAT,
            "model": (old or {}).get("model") or cfg.model or src.stem,
            "created": _now(),
            "weights": (old or {}).get("weights") or {"source": str(src), "sha256": sha256_file(src)},
            "input": {"name": input_name, "shape": [None if dynamic else dims[0], 3, h, w], "dtype": "float32", "output_name": output_name},
            "preprocess": pre.to_dict() if pre is not None else None,
            "output": output_name,
            "opset": opset,
            "batch": _batch_record(None if dynamic else dims[0], dyn if dynamic else None),
            "artifacts": artifacts,
            "parity": (old or {}).get("parity"),
            "calibration": calibration,
            "accuracy": accuracy,
            "tensorrt": _trt_record(engine) or (old or {}).get("tensorrt") if "engine" in artifacts else None,
            "tensorrt_preflight": preflight,
            "engine_build": {"status": "built" if plan else "skipped", "reason": engine.skipped, "command": engine.command},
            "tools": _tool_versions(),
            "source_onnx": str(src),
        }
        if old is not None:
            manifest["export_steps"] = old.get("export_steps") or old.get("steps", [])
        path = _finish(steps, stage, names, manifest)
    return _result(out, path, artifacts, steps, scorer, plan, engine)


def _intact(path: Path, sha: Optional[str]) -> bool:
    return path.is_file() and (sha is None or sha256_file(path) == sha)


def _matching_manifest(src: Path) -> Optional[dict]:
    """The manifest beside ``src`` if it describes exactly this file as its FP32 model."""
    if not (src.parent / MANIFEST_NAME).is_file():
        return None
    old = read_manifest(src.parent)  # a corrupt manifest is an error, not something to paper over
    fp32 = old["artifacts"]["fp32"]
    other = next((k for k, a in old["artifacts"].items() if k != "fp32" and a.get("path") == src.name), None)
    if other is not None:
        # Exporting from it would relabel an FP16/INT8 graph (or an engine) as the FP32 model, and replace the real one
        raise ExportConfigError(f"--from-onnx {src}: this is the export's {other} artifact, not an FP32 model; "
                                f"start from its FP32 model {src.parent / fp32['path']}")
    if fp32["path"] != src.name or fp32.get("sha256") != sha256_file(src):
        log.warning("%s: the manifest beside it describes a different FP32 model; ignoring it", src)
        return None
    return old


def _check_onnx_input(cfg: ExportConfig, src: Path, dims: tuple, old: Optional[dict]) -> None:
    """The graph must take N x 3 x H x W images of a fixed size, and --model must not contradict what the file is."""
    if len(dims) != 4 or dims[1] != 3 or dims[2] is None or dims[3] is None:
        shape = "x".join("?" if d is None else str(d) for d in dims)
        raise ExportConfigError(f"--from-onnx {src}: expected an image input N x 3 x H x W with a fixed H and W, found {shape}")
    if not cfg.model:
        return
    if old is not None and old.get("model") != cfg.model:
        raise ExportConfigError(
            f"--model {cfg.model} contradicts --from-onnx {src}: its manifest says model {old.get('model')!r} (omit --model to use it)"
        )
    from ..models import get_model_config

    stride = get_model_config(cfg.model).stride  # UnknownModelError with a suggestion
    if dims[2] % stride or dims[3] % stride:
        raise ExportConfigError(
            f"--model {cfg.model} contradicts --from-onnx {src}: its {dims[2]}x{dims[3]} input is not a multiple of {cfg.model}'s stride "
            f"{stride}, so it is another model"
        )


def _preprocess_for(cfg: ExportConfig, old: Optional[dict], size: Tuple[int, int]) -> Optional[PreprocessConfig]:
    if old and old.get("preprocess"):
        return PreprocessConfig.from_dict(old["preprocess"])
    if cfg.model:
        from ..models import get_model_config

        pre = get_model_config(cfg.model).preprocess  # the model's normalisation at the graph's fixed input size
        return PreprocessConfig(size=size, mode=pre.mode, mean=pre.mean, std=pre.std)
    return None


def export(cfg: ExportConfig) -> ExportResult:
    """Run the export ``cfg`` describes; see the module docstring for the steps."""
    check_fields(cfg)
    recover_output(cfg.output or (str(Path(cfg.from_onnx).parent) if cfg.from_onnx else None))
    validate(cfg)
    if cfg.from_onnx is not None:
        return _export_onnx_file(cfg)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    try:
        return _export_model(cfg)
    finally:
        torch.set_num_threads(threads)
