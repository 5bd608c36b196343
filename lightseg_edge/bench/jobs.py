"""One benchmark job: load one predictor, then per batch size measure memory, compute latency and end-to-end latency;
then accuracy once. ``run_job`` does it in the current process; ``runner`` runs each job in a fresh process.

A job only ever touches the runtime layer's public interface (``load_predictor`` and the predictor's ``infer`` /
``predict`` / ``predict_batch`` / ``preprocess_config`` / ``static_batch_size`` / ``close``). An ONNX or TensorRT
job never imports torch, so its RSS is that of a deployment process (``process.torch_imported`` records it).

Order inside a job, per batch size: the memory loop first (it contains the predictor's first inference, where
allocators grow), then compute-only timing, then end-to-end timing. Each of those warms up on its own.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import BackendUnavailableError, LightsegError, MissingDependencyError
from ..runtimes.registry import get_runtime, runtime_names
from . import machine
from .memory import DEFAULT_MEMORY_RUNS, cuda_index, engine_device_mb, file_sizes, measure_inference, measure_load, nvml_probe_for
from .records import BenchResult, LatencyStats, MemoryStats
from .timing import TimingConfig, time_compute, time_end_to_end

KINDS = ("model", "onnx", "engine", "export-dir")
RUNTIMES = runtime_names()
AccuracyProgress = Optional[Callable[[int, int], None]]
E2E_IMAGE_HW = (512, 512)  # the shared ISIC 2018 copy's size; real --data images are used instead when given


@dataclass(frozen=True)
class Job:
    """Everything a (possibly separate) process needs to run one predictor's measurements."""

    kind: str  # "model" | "onnx" | "engine" | "export-dir"
    source: str  # registry name or path
    runtime: str
    precision: str
    batches: Tuple[int, ...] = (1,)
    model: Optional[str] = None  # registry name, when known
    weights: Optional[str] = None  # kind "model": None = shipped weights, "random[:SEED]", or a weights file
    weights_label: Optional[str] = None  # how rows name the weights ("random:0", "pretrained", a path)
    img_size: Optional[int] = None
    preprocess: Optional[Dict[str, Any]] = None  # explicit PreprocessConfig dict (bare files without a manifest)
    threads: Optional[int] = None
    device: Optional[str] = None
    tta: str = "none"  # types.TTA value: the predictor's test-time augmentation
    timing: Dict[str, Any] = field(default_factory=lambda: TimingConfig().to_dict())
    memory_runs: int = DEFAULT_MEMORY_RUNS
    data: Optional[str] = None
    split: str = "test"
    max_images: Optional[int] = None
    accuracy: bool = True  # False: weights without meaning (random); accuracy_note says why
    accuracy_note: Optional[str] = None
    e2e: bool = True
    files: Dict[str, str] = field(default_factory=dict)  # artifact name -> path, for file sizes
    notes: Tuple[str, ...] = ()
    env: Dict[str, Any] = field(default_factory=dict)  # compact environment summary copied into every row

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job kind must be one of {KINDS}, got {self.kind!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"job runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise ValueError(f"batches must be positive integers, got {self.batches!r}")

    @property
    def label(self) -> str:
        return f"{self.model or os.path.basename(self.source)} {self.runtime} {self.precision}"

    @property
    def timing_config(self) -> TimingConfig:
        return TimingConfig.from_dict(self.timing)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["batches"] = list(self.batches)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Job":
        d = dict(d)
        d["batches"] = tuple(int(b) for b in d.get("batches", (1,)))
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def base_row(job: Job, batch: int, status: str, reason: Optional[str] = None, **kw: Any) -> BenchResult:
    """A row for ``job`` at ``batch`` with only what is known without measuring."""
    size = (job.img_size, job.img_size) if job.img_size else None
    return BenchResult(
        model=job.model or os.path.basename(job.source), source=job.source, runtime=job.runtime, precision=job.precision, batch=int(batch),
        status=status, reason=reason, img_size=kw.pop("img_size", size), threads=job.threads, tta=job.tta, weights=job.weights_label,
        accuracy_note=job.accuracy_note, env=dict(job.env), timing=dict(job.timing), notes=kw.pop("notes", tuple(job.notes)), started=_now(), **kw,
    )


def rows_for_failure(job: Job, exc: BaseException, stage: str) -> List[BenchResult]:
    """Every batch of ``job`` as a skipped (missing/unavailable backend) or failed row naming the stage and error."""
    status = "skipped" if isinstance(exc, (MissingDependencyError, BackendUnavailableError)) else "failed"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = "" if isinstance(exc, LightsegError) else f"{type(exc).__name__}: "
    return [base_row(job, b, status, f"{stage}: {kind}{text}"[:600]) for b in job.batches]


# ----------------------------------------------------------------------------------------------------- loading
def _pre_import(runtime: str) -> None:
    """Import the runtime's package before the RSS baseline, so loading measures the model, not the import."""
    import importlib

    spec = get_runtime(runtime)
    extra = ("lightseg_edge.models",) if spec.runtime.value == "pytorch" else ()
    try:
        for m in spec.modules + extra:
            importlib.import_module(m)
        spec.predictor_class()
    except ImportError:
        return  # load_predictor then raises the proper MissingDependencyError


def _preprocess_override(job: Job) -> Optional[Any]:
    from ..types import PreprocessConfig

    if job.preprocess is not None:
        return PreprocessConfig.from_dict(job.preprocess)
    if job.img_size and job.kind == "model":
        from ..models import get_model_config

        base = get_model_config(job.model or job.source).preprocess
        return PreprocessConfig(size=(job.img_size, job.img_size), mode=base.mode, mean=base.mean, std=base.std)
    return None


def _random_seed(weights: str) -> int:
    _, _, seed = weights.partition(":")
    return int(seed) if seed.strip() else 0


def load(job: Job) -> Tuple[Any, Dict[str, Any]]:
    """(predictor, facts) for ``job``; facts: size_bytes of what was loaded and the weights' in-memory size."""
    from ..runtimes import load_predictor

    opts: Dict[str, Any] = {"tta": job.tta}
    pre = _preprocess_override(job)
    if pre is not None:
        opts["preprocess"] = pre
    if job.threads is not None and "threads" in get_runtime(job.runtime).options:
        opts["threads"] = int(job.threads)
    facts: Dict[str, Any] = {}
    if job.kind == "model":
        name = job.model or job.source
        if job.weights and job.weights.split(":")[0] == "random":
            import torch

            from ..models import create_model

            torch.manual_seed(_random_seed(job.weights))  # the export pipeline seeds the same way: identical weights
            model = create_model(name)
            facts["size_bytes"] = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            facts["size_what"] = "state dict in memory"
            return load_predictor(model, runtime="pytorch", device=job.device, precision=job.precision, **opts), facts
        if job.weights:
            facts["size_bytes"] = os.path.getsize(job.weights) if os.path.isfile(job.weights) else None
            return load_predictor(job.weights, runtime="pytorch", device=job.device, precision=job.precision, model=name, **opts), facts
        from ..models._weights import pretrained_path

        shipped = pretrained_path(name)
        facts["size_bytes"] = shipped.stat().st_size
        facts["size_what"] = f"shipped weights {shipped.name}"
        return load_predictor(name, runtime="pytorch", device=job.device, precision=job.precision, **opts), facts
    if job.kind == "export-dir":
        return load_predictor(job.source, runtime=job.runtime, device=job.device, precision=job.precision, **opts), facts
    if job.kind == "onnx":
        if job.model and "preprocess" not in opts:
            opts["model"] = job.model
        return load_predictor(job.source, runtime="onnxruntime", device=job.device, precision=job.precision, **opts), facts
    return load_predictor(job.source, runtime="tensorrt", device=job.device, precision=job.precision, **opts), facts


# ----------------------------------------------------------------------------------------------------- inputs
def synthetic_image(hw: Tuple[int, int] = E2E_IMAGE_HW, seed: int = 0) -> np.ndarray:
    """A deterministic dermoscopy-like uint8 RGB image: skin-tone background, a dark blotch, sensor noise."""
    h, w = hw
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * (0.45 + 0.1 * rng.random()), w * (0.45 + 0.1 * rng.random())
    r = np.sqrt(((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.25 * w)) ** 2)
    lesion = np.clip(1.2 - r, 0, 1)[..., None]
    skin = np.array([224, 172, 150], np.float32)
    spot = np.array([96, 58, 40], np.float32)
    img = skin * (1 - lesion) + spot * lesion + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def input_images(job: Job, count: int) -> Tuple[List[np.ndarray], str]:
    """``count`` uint8 images: the first ones of ``--data``'s split when given, else synthetic ones."""
    if job.data:
        from ..data.io import read_image
        from .accuracy import select_samples

        samples = select_samples(job.data, job.split, None)[: max(1, count)]
        imgs = [read_image(s.image) for s in samples]
        return [imgs[i % len(imgs)] for i in range(count)], f"{len(samples)} {job.split} images of {job.data}"
    return [synthetic_image(E2E_IMAGE_HW, seed=i) for i in range(count)], f"synthetic {E2E_IMAGE_HW[0]}x{E2E_IMAGE_HW[1]} uint8"


# ----------------------------------------------------------------------------------------------------- measuring
def _batch_limit_reason(predictor: Any, batch: int) -> Optional[str]:
    static = getattr(predictor, "static_batch_size", None)
    if static is not None and batch != static:
        return (f"the model has a fixed batch of {static}; re-export it with a dynamic batch "
                f"(lightseg-export --dynamic-batch 1,{batch},{batch}) to measure batch {batch}")
    limit = getattr(predictor, "max_batch_size", None)
    if limit is not None and batch > limit:
        return f"batch {batch} exceeds the model's maximum of {limit} (the engine's optimisation profile)"
    return None


def _memory_stats(load_mem: Dict[str, Any], inf_mem: Optional[Dict[str, Any]], files: Dict[str, int], predictor: Any) -> MemoryStats:
    inf = dict(inf_mem or {})
    source = inf.pop("device_source", None) or load_mem.get("device_source")
    notes = []
    if source == "nvml-device":
        notes.append("device memory is device-wide (NVML does not list this process, e.g. inside a container): other processes count too")
    return MemoryStats(
        rss_before_load_mb=load_mem.get("rss_before_load_mb"), load_delta_mb=load_mem.get("load_delta_mb"),
        load_peak_delta_mb=load_mem.get("load_peak_delta_mb"), device_source=source,
        device_load_delta_mb=load_mem.get("device_load_delta_mb"), engine_device_mb=engine_device_mb(predictor), files=files,
        notes=tuple(notes), **inf,
    )


def measure_batch(predictor: Any, job: Job, batch: int, load_mem: Dict[str, Any], facts: Dict[str, Any], probe: Any,
                  tegrastats: Optional[str]) -> BenchResult:
    reason = _batch_limit_reason(predictor, batch)
    pre = predictor.preprocess_config
    hw = (int(pre.size[0]), int(pre.size[1]))
    if reason:
        return base_row(job, batch, "skipped", reason, img_size=hw, device=str(predictor.device))
    images, what = input_images(job, batch)
    from ..data.transforms import preprocess_batch

    x = preprocess_batch(images, pre)
    cfg = job.timing_config
    before = machine.snapshot()
    inf_mem = None
    if job.memory_runs > 0:
        inf_mem = measure_inference(lambda: predictor.infer(x), runs=job.memory_runs, device=probe, tegrastats=tegrastats)
    compute = time_compute(predictor, x, cfg)
    e2e: Optional[LatencyStats] = time_end_to_end(predictor, images, cfg) if job.e2e else None
    after = machine.snapshot()
    files = file_sizes(job.files)
    size = facts.get("size_bytes")
    if size is None and files:
        size = next(iter(files.values()))
    notes = tuple(job.notes) + (f"inputs: {what}",)
    if facts.get("size_what"):
        notes += (f"size: {facts['size_what']}",)
    return base_row(
        job, batch, "ok", img_size=hw, device=str(predictor.device), size_bytes=size, latency=compute, e2e=e2e,
        e2e_image_hw=tuple(images[0].shape[:2]) if job.e2e else None, memory=_memory_stats(load_mem, inf_mem, files, predictor),
        machine=machine.load_between(before, after, job.threads), process=_process_info(), notes=notes,
    ).with_(precision=getattr(getattr(predictor, "precision", None), "value", job.precision))


def _process_info() -> Dict[str, Any]:
    return {"pid": os.getpid(), "torch_imported": "torch" in sys.modules, "python": sys.version.split()[0]}


def _accuracy(predictor: Any, job: Job, rows: List[BenchResult], on_progress: AccuracyProgress = None) -> List[BenchResult]:
    if not job.data or not any(r.ok for r in rows):
        return rows
    if not job.accuracy:
        return rows
    from .accuracy import evaluate, select_samples

    try:
        samples = select_samples(job.data, job.split, job.max_images)
        acc = evaluate(predictor, samples, data=job.data, split=job.split, on_progress=on_progress)
    except Exception as exc:  # noqa: BLE001 - accuracy failing must not discard the latency rows
        note = f"accuracy failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
        return [r.with_(accuracy_note=note) if r.ok else r for r in rows]
    return [r.with_(accuracy=acc) if r.ok else r for r in rows]


def run_job(job: Job, environment: Optional[Dict[str, Any]] = None, on_accuracy: AccuracyProgress = None) -> List[BenchResult]:
    """Measure ``job`` in this process. Never raises for a backend problem: those become skipped/failed rows.
    ``on_accuracy(images scored, total)`` follows the accuracy step, the one that can take minutes."""
    from .memory import tegrastats_path

    if job.threads is not None and job.runtime == "pytorch":
        _torch_threads(job.threads)
    _pre_import(job.runtime)
    # Probe before loading when a GPU may be used, so the load's device memory is seen too.
    probe = nvml_probe_for(job.device or ("cuda" if job.env.get("gpu") else None))
    try:
        try:
            (predictor, facts), load_mem = measure_load(lambda: load(job), device=probe)
        except Exception as exc:  # noqa: BLE001 - any load failure is this row's result, not the run's end
            return rows_for_failure(job, exc, "load")
        tegra = tegrastats_path(environment)
        rows: List[BenchResult] = []
        try:
            if cuda_index(str(predictor.device)) is None and probe is not None:
                probe.close()  # the predictor runs on the CPU: no device memory to report
                probe = None
                load_mem = dict(load_mem, device_source=None, device_load_delta_mb=None)
            for b in job.batches:
                try:
                    rows.append(measure_batch(predictor, job, b, load_mem, facts, probe, tegra))
                except Exception as exc:  # noqa: BLE001 - one batch size failing (e.g. out of memory) keeps the others
                    rows += rows_for_failure(replace(job, batches=(b,)), exc, f"batch {b}")
            rows = _accuracy(predictor, job, rows, on_accuracy)
        finally:
            predictor.close()
        return rows
    finally:
        if probe is not None:
            probe.close()


def _torch_threads(n: int) -> None:
    """Intra-op threads as asked, one inter-op thread (a single graph has no inter-op parallelism to use)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process (in-process runs)
        pass
