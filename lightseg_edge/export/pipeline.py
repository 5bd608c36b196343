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

Atomicity (the output folder is replaced as a whole, in one step):

1. The new content is assembled in a hidden staging folder *beside* the output folder,
   ``<parent>/.lightseg-export-XXXX/new``: the files the steps make, hard links to everything of the old folder the
   new export keeps (artifacts an in-place ``--from-onnx`` run reuses, the engine timing cache, the user's own files
   and subfolders; files only the old manifest lists are dropped, they describe another model or setting), and the
   manifest, written last and read back against the files' sha256.
2. Commit: the staging folder and the output folder are exchanged in one step (Linux ``renameat2`` with
   ``RENAME_EXCHANGE``), then the old content is removed, its manifest first.

Guarantee: after a failure, Ctrl-C, SIGKILL or power cut at any point, the output folder is either exactly the old
export (old manifest, old files) or the complete new one, never a mix and never a manifest describing files it did
not write. What a killed export leaves is hidden beside the folder (``.lightseg-export-*``, never read as an
export) and is finished or removed by the next export into the same folder. Where the OS or filesystem cannot exchange folders (not
Linux, some network filesystems), the swap is two renames: a kill between them leaves no output folder until the
next export into it rolls the complete new content forward.

Consequences: the output folder must not be a mount point and its parent must be writable (both checked before the
first step); a shell whose working folder is the output folder sees the old one until it runs ``cd .``; of concurrent
exports into one folder the last to commit wins.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from .._version import __version__
from ..errors import ExportConfigError, ExportError, ManifestError
from ..types import PreprocessConfig
from .accuracy import HeldoutScorer, VariantAccuracy
from .config import RANDOM_WEIGHTS, ExportConfig, check_img_size, default_output, validate
from .images import ImageSet, calibration_set, default_image_root, heldout_set, load_inputs, load_masks
from .manifest import FORMAT, MANIFEST_NAME, read_manifest, sha256_file, verify_artifacts, write_manifest
from .parity import ParityReport
from .steps import StepLog, StepRecord

log = logging.getLogger("lightseg_edge.export")

FILE_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
WEIGHTS_NAME = "weights.safetensors"  # a copy of --weights, so the folder alone rebuilds the model in PyTorch
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


# ----------------------------------------------------------------------------------------------- output folder
STAGING_PREFIX = ".lightseg-export-"
_OWNER = ".owner"  # "<host> <pid>" of the export writing into a staging folder
_TARGET = "target"  # the name of the output folder (beside the staging folder) it is assembling
_NEW = "new"  # inside a staging folder: the complete new content of the output folder
_OLD = "old"  # inside a staging folder: the previous content, moved aside by the two-rename swap
_ABANDONED_AFTER_S = 24 * 3600  # staging folders without an owner file (older versions) count as abandoned after this
_RENAME_EXCHANGE = 2  # <linux/fs.h>
_AT_FDCWD = -100
# renameat2's system call number, for a C library without the wrapper (glibc < 2.28, e.g. JetPack 4's Ubuntu 18.04)
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}


def _owner_gone(staging: Path) -> bool:
    try:
        host, pid = (staging / _OWNER).read_text().split()
    except (OSError, ValueError):
        return time.time() - staging.stat().st_mtime > _ABANDONED_AFTER_S
    if host != socket.gethostname():
        return False  # another machine's export on a shared folder: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def _target(staging: Path) -> Optional[str]:
    try:
        return (staging / _TARGET).read_text().strip()
    except OSError:
        return None


def _discard(staging: Path) -> None:
    """Remove a staging folder, manifests first: a half-removed copy of an export must never read as one."""
    for part in (_NEW, _OLD):
        try:
            os.unlink(staging / part / MANIFEST_NAME)
        except OSError:
            pass
    shutil.rmtree(staging, ignore_errors=True)


def _remove_abandoned_staging(out: Path) -> None:
    """What killed exports into ``out`` left (their process is gone) is finished or removed by the next export:
    staging folders beside ``out``, and inside it where older versions staged."""
    for staging in out.glob(f"{STAGING_PREFIX}*") if out.is_dir() else ():
        if staging.is_dir() and _owner_gone(staging):
            shutil.rmtree(staging, ignore_errors=True)
    for staging in out.parent.glob(f"{STAGING_PREFIX}*"):
        if staging.is_dir() and _target(staging) == out.name and _owner_gone(staging):
            if (staging / _OLD).is_dir() and (staging / _NEW).is_dir() and not out.exists():
                # killed between the two renames of a swap: the new content was complete and verified, so it goes in
                os.rename(staging / _NEW, out)
            _discard(staging)


@functools.lru_cache(maxsize=None)
def _renameat2() -> Optional[Callable[[bytes, bytes, int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        fn.restype = ctypes.c_int
        return lambda a, b, flags: fn(_AT_FDCWD, a, _AT_FDCWD, b, flags)
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda a, b, flags: syscall(
        ctypes.c_long(number), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(a), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(b), ctypes.c_uint(flags)
    )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step; False where the OS or the filesystem cannot (the caller falls back)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(os.fsencode(str(a)), os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(new: Path, out: Path, staging: Path) -> None:
    """Make ``new`` the output folder; the previous content ends up inside ``staging`` (removed afterwards)."""
    if _exchange(new, out):
        return
    # Two renames: a kill between them leaves no output folder, and the next export rolls forward (see above).
    os.rename(out, staging / _OLD)
    os.rename(new, out)


def _listed(manifest: object) -> Set[str]:
    """The files a manifest describes: its artifacts, the calibration list and the copied weights."""
    if not isinstance(manifest, dict):
        return set()
    arts = manifest.get("artifacts")
    calib, weights = manifest.get("calibration"), manifest.get("weights")
    names = [a.get("path") for a in arts.values() if isinstance(a, dict)] if isinstance(arts, dict) else []
    names.append(calib.get("list_file") if isinstance(calib, dict) else None)
    names.append(WEIGHTS_NAME if isinstance(weights, dict) and weights.get("source") == WEIGHTS_NAME else None)
    return {n for n in names if isinstance(n, str)}


def _superseded(out: Path, manifest: dict) -> Set[str]:
    """Files of the previous export that the new one does not list: they belong to another model or setting, and left
    beside the new manifest they would be mixed up with it."""
    try:
        old = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return _listed(old) - _listed(manifest)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)


def _carry_over(old: Path, new: Path, drop: Set[str]) -> None:
    """Hard-link into ``new`` everything of ``old`` the new export does not replace (artifacts it keeps, the engine
    timing cache, the user's own files and folders), so that swapping the folders loses nothing."""
    for entry in os.scandir(str(old)):
        name = entry.name
        if (
            name in drop
            or name == MANIFEST_NAME
            or name.startswith(STAGING_PREFIX)
            or (name.startswith(f".{MANIFEST_NAME}.") and name.endswith(".tmp"))  # a killed manifest write (older versions)
            or os.path.lexists(str(new / name))
        ):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), str(new / name))
        elif entry.is_dir():
            shutil.copytree(entry.path, str(new / name), symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, str(new / name))


def _fsync(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # not every OS opens or syncs folders; the files themselves are synced
        pass


def _working_inside(folder: Path) -> Optional[str]:
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return cwd if cwd == str(folder) or cwd.startswith(str(folder) + os.sep) else None


def _recover_output(cfg: ExportConfig) -> None:
    """Finish what a killed export into the named output folder left, before anything reads that folder (an
    in-place ``--from-onnx`` reads its input there)."""
    named = cfg.output or (str(Path(cfg.from_onnx).parent) if cfg.from_onnx else None)
    if named is None:
        return  # the default folder is known only once the model is: _Staging recovers it
    out = Path(os.path.realpath(named))
    if out.parent.is_dir():
        try:
            _remove_abandoned_staging(out)
        except OSError as exc:
            raise ExportConfigError(f"--output {named}: cannot finish an interrupted export there ({exc.strerror or exc})") from exc


class _Staging:
    """The new content of the output folder, made in a hidden staging folder beside it; ``commit`` completes it
    (carried-over files, the manifest last) and swaps it in. See the module docstring for the guarantee."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.target = Path(os.path.realpath(str(out)))  # a symlinked output folder: the folder it points to is replaced
        self.created: List[Path] = []
        self.root: Optional[Path] = None
        self.dir = out

    def __enter__(self) -> "_Staging":
        if os.path.ismount(str(self.target)):
            raise ExportConfigError(
                f"--output {self.out}: is a mount point; the export replaces its output folder as a whole, so name a folder inside it"
            )
        missing = []
        p = self.target
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.created = missing
            _remove_abandoned_staging(self.target)
            self.target.mkdir(exist_ok=True)
        except OSError as exc:
            self._cleanup_dirs()
            raise ExportConfigError(f"--output {self.out}: cannot write to this folder ({exc.strerror or exc})") from exc
        try:
            self.root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=str(self.target.parent)))
            (self.root / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
            (self.root / _TARGET).write_text(f"{self.target.name}\n")
            self.dir = self.root / _NEW
            self.dir.mkdir()
        except OSError as exc:
            self.__exit__(type(exc), exc, None)
            raise ExportConfigError(
                f"--output {self.out}: cannot write beside it in {self.target.parent} (the export is assembled there and swapped in "
                f"whole; {exc.strerror or exc})"
            ) from exc
        return self

    def commit(self, names: List[str], manifest: dict) -> Path:
        assert self.root is not None
        _carry_over(self.target, self.dir, _superseded(self.target, manifest))
        write_manifest(self.dir, manifest)
        problems = verify_artifacts(self.dir, read_manifest(self.dir))
        if problems:
            raise ManifestError(f"{self.out}: the new export does not verify: {'; '.join(problems)}")
        for name in names:  # on disk before the folder is swapped in: a power cut must not find it with empty files
            _fsync(self.dir / name)
        _fsync_dir(self.dir)
        shutil.copymode(str(self.target), str(self.dir))
        cwd = _working_inside(self.target)
        _swap(self.dir, self.target, self.root)
        _fsync_dir(self.target.parent)
        if cwd is not None:  # this process keeps working in the new folder, not in the swapped-out old one
            os.chdir(cwd if os.path.isdir(cwd) else str(self.target))
        return self.out / MANIFEST_NAME

    def _cleanup_dirs(self) -> None:
        for d in self.created:  # deepest first: only folders this export created, and only if still empty
            try:
                d.rmdir()
            except OSError:
                break

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.root is not None:
            _discard(self.root)
            self.root = None
        if exc_type is not None:
            self._cleanup_dirs()


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


def _artifact(stage_dir: Path, name: str, precision: str, **extra) -> dict:
    path = stage_dir / name
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

        if self.cfg.engine == "off":
            self.skipped = "engine build disabled (engine='off')"
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


def _finish(steps: StepLog, stage: _Staging, names: List[str], manifest: dict) -> Path:
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
    check_img_size(h, cfg.model, mcfg.stride)
    check_img_size(w, cfg.model, mcfg.stride)
    pre = PreprocessConfig(size=(h, w), mode=mcfg.preprocess.mode, mean=mcfg.preprocess.mean, std=mcfg.preprocess.std)
    spec = input_spec(cfg.batch, (h, w), cfg.dynamic)
    out = Path(cfg.output) if cfg.output else default_output(cfg, cfg.model, h)
    # Everything that can be checked before work starts is checked here, so bad input leaves nothing behind.
    root = _data_root(cfg)
    heldout = heldout_set(root, max(cfg.parity_images, cfg.eval_images, cfg.fp16_check_images), cfg.seed)
    calib: Optional[ImageSet] = calibration_set(cfg.calib_data, cfg.calib_images, cfg.seed) if cfg.int8 else None
    if calib is not None:
        _warn_calibration(calib, cfg.calib_images, heldout)
    chunk, pad = batch_plan(None if cfg.dynamic else cfg.batch, cfg.dynamic_batch[2] if cfg.dynamic_batch else None)
    steps = StepLog()
    with _Staging(out) as stage:
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
        artifacts = {"fp32": _artifact(s, FILE_NAMES["fp32"], "fp32", simplifier=used)}
        if cfg.fp16:
            fp16 = steps.run(
                "fp16",
                lambda: convert_fp16(s / FILE_NAMES["fp32"], s / FILE_NAMES["fp16"], x_all[: cfg.fp16_check_images]),
                lambda r: r.summary(),
            )
            steps.run("accuracy-fp16", lambda: scorer.score(s / FILE_NAMES["fp16"], "fp16"), _acc_line)
            artifacts["fp16"] = _artifact(s, FILE_NAMES["fp16"], "fp16", keep_io_types=True, overflow_check=fp16.to_dict())
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
                s, FILE_NAMES["int8"], "int8", quantize_linear=q.quantize_linear, per_channel_weights=q.per_channel_weights
            )
            calibration = dict(q.calibration, list_file=CALIB_LIST, overlap_with_heldout=len(set(calib.case_ids) & set(heldout.case_ids)))
            used_set = ImageSet(
                calib.root, calib.layout, calib.split, calib.samples[: q.calibration["images"]], calib.available, calib.seed
            )
            (s / CALIB_LIST).write_text(used_set.listing())
            names.append(CALIB_LIST)
        precision = cfg.engine_precision
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
    chunk, pad = batch_plan(None if dynamic else dims[0], dyn[2] if dyn else None)
    in_place = out.resolve() == src.parent.resolve() and src.name == FILE_NAMES["fp32"]
    with _Staging(out) as stage:
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
        precision = cfg.engine_precision
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
    _recover_output(cfg)
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
