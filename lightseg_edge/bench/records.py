"""What a benchmark produces: frozen records that serialise to plain JSON types and back.

One ``BenchResult`` per (source, runtime, precision, batch). A row that could not be measured keeps its place in the
table with ``status`` ``skipped`` (not possible here: no TensorRT, no GPU, no INT8 in PyTorch) or ``failed`` (it was
tried and broke) and a ``reason``; its measurement fields stay None. Nothing is ever filled in with a guess.

Units: latencies in milliseconds, throughput in images per second, memory in MiB (``*_mb``), sizes in bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

STATUSES = ("ok", "skipped", "failed")
# A latency row is flagged as noise, not reported as a result, past either bound. Other processes taking a tenth of
# the CPU already moved UCM-Net's p50 here from 4.0 to 12.8 ms; a p90 past 1.5x the p50 means the timed calls
# disagree too much for a median to describe them.
NOISY_OTHER_CPU = 0.10
NOISY_SPREAD = 1.5
NOISY_DRIFT = 1.3  # a row's speed probe this much slower or faster than the run's median: not comparable with the others
SCHEMA = "lightseg-bench/1"


def _percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on an already sorted list."""
    if len(sorted_ms) == 1:
        return float(sorted_ms[0])
    pos = (len(sorted_ms) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_ms) - 1)
    return float(sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo))


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of ``n`` timed calls, each processing ``batch`` images."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single call
    min: float
    p50: float
    p90: float
    p99: float
    throughput: float  # images per second: batch / mean call time
    batch: int = 1
    max: float = 0.0
    clock: str = "perf_counter_ns"  # or "cuda-events"

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int], batch: int = 1, clock: str = "perf_counter_ns") -> "LatencyStats":
        if not samples_ns:
            raise ValueError("no timed calls: cannot compute latency statistics")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        ms = sorted(float(s) / 1e6 for s in samples_ns)
        n = len(ms)
        mean = sum(ms) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in ms) / (n - 1)) if n > 1 else 0.0
        return cls(
            n=n, mean=mean, std=std, min=ms[0], p50=_percentile(ms, 50), p90=_percentile(ms, 90), p99=_percentile(ms, 99),
            throughput=batch * 1000.0 / mean if mean > 0 else float("inf"), batch=batch, max=ms[-1], clock=clock,
        )

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryStats:
    """Memory of one predictor, measured in a loop of its own (never during timing; see ``bench.memory``).

    Host: RSS just before loading, what loading added, and the peak RSS during ``runs`` inferences relative to RSS
    just before the first of them. Device: NVML (desktop GPU) or tegrastats (Jetson) where available, else None.
    ``files``: bytes on disk of the artifacts the predictor was loaded from.
    """

    rss_before_load_mb: Optional[float] = None
    load_delta_mb: Optional[float] = None
    load_peak_delta_mb: Optional[float] = None
    rss_before_inference_mb: Optional[float] = None
    inference_peak_delta_mb: Optional[float] = None
    process_peak_mb: Optional[float] = None
    runs: int = 0
    sampler_interval_ms: float = 1.0
    samples: int = 0
    device_source: Optional[str] = None  # "nvml-process" | "nvml-device" | "tegrastats" | None
    device_load_delta_mb: Optional[float] = None
    device_inference_peak_delta_mb: Optional[float] = None
    device_total_used_mb: Optional[float] = None
    engine_device_mb: Optional[float] = None  # TensorRT activation/scratch memory, when the predictor reports it
    tegrastats: Optional[Dict[str, Any]] = None
    files: Dict[str, int] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class AccuracyStats:
    """Segmentation quality of one predictor on a data split, scored at network resolution."""

    images: int
    mdice: float
    miou: float
    dice_star: float
    iou_star: float
    split: str
    data: str
    resolution: Tuple[int, int]
    reference: Optional[str] = None  # the row the deltas are taken against ("pytorch fp32")
    delta_mdice: Optional[float] = None
    delta_miou: Optional[float] = None
    within_expected: Optional[bool] = None  # delta_mdice within the precision's allowance (metrics.EXPECTED_MAX_DROP)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d


@dataclass(frozen=True)
class ClaimCheck:
    """One efficiency claim of a paper next to what this toolkit measures, with a verdict and why."""

    model: str
    claim: str  # "params" | "gmacs" | "memory_mb"
    paper: Optional[float]
    measured: Optional[float]
    verdict: str  # "reproduced" | "differs" | "not claimed" | "not measured"
    why: str
    unit: str = ""
    released: Optional[float] = None  # the released code's figure, where the paper's released code reports it
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchResult:
    """One row of the benchmark table."""

    model: str
    source: str
    runtime: str
    precision: str
    batch: int
    status: str
    reason: Optional[str] = None
    img_size: Optional[Tuple[int, int]] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    tta: str = "none"  # types.TTA value; with "flips" latency, memory and accuracy include the four network runs
    weights: Optional[str] = None
    params: Optional[int] = None
    deploy_params: Optional[int] = None
    macs: Optional[int] = None
    size_bytes: Optional[int] = None
    latency: Optional[LatencyStats] = None  # compute only: infer() on a preprocessed batch
    e2e: Optional[LatencyStats] = None  # end to end: predict on uint8 images, pre/post-processing included
    e2e_image_hw: Optional[Tuple[int, int]] = None
    memory: Optional[MemoryStats] = None
    accuracy: Optional[AccuracyStats] = None
    accuracy_note: Optional[str] = None
    machine: Dict[str, Any] = field(default_factory=dict)
    process: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, Any] = field(default_factory=dict)
    timing: Dict[str, Any] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    started: Optional[str] = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a {self.status} row needs a reason")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return f"{self.model} {self.runtime} {self.precision} b{self.batch}"

    @property
    def noise(self) -> Optional[str]:
        """Why this row's latency is not a quiet-machine figure (None when it is, or when nothing was timed)."""
        if not self.ok or self.latency is None:
            return None
        why = []
        others = self.machine.get("other_cpu_share")
        if others is not None and others > NOISY_OTHER_CPU:
            why.append(f"other processes used {others:.0%} of the CPU")
        if self.latency.p50 > 0 and self.latency.p90 / self.latency.p50 > NOISY_SPREAD:
            why.append(f"p90 is {self.latency.p90 / self.latency.p50:.1f}x p50")
        drift = self.machine.get("speed_drift")
        if drift is not None and not 1 / NOISY_DRIFT <= drift <= NOISY_DRIFT:
            why.append(f"the machine ran {drift:.2f}x as slow as during the run's other rows (speed probe)")
        return "unreliable latency: " + " and ".join(why) + "; re-measure on a quiet machine" if why else None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for key in ("img_size", "e2e_image_hw"):
            if d[key] is not None:
                d[key] = list(d[key])
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BenchResult":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("img_size", "e2e_image_hw"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        for key in ("latency", "e2e"):
            if kw.get(key) is not None:
                kw[key] = LatencyStats(**kw[key])
        if kw.get("memory") is not None:
            m = dict(kw["memory"])
            m["notes"] = tuple(m.get("notes", ()))
            kw["memory"] = MemoryStats(**m)
        if kw.get("accuracy") is not None:
            a = dict(kw["accuracy"])
            a["resolution"] = tuple(a["resolution"])
            kw["accuracy"] = AccuracyStats(**a)
        kw["notes"] = tuple(kw.get("notes", ()))
        return cls(**kw)

    def with_(self, **changes: Any) -> "BenchResult":
        return replace(self, **changes)


@dataclass(frozen=True)
class BenchReport:
    """A whole run: settings, the environment, every row, and the claims table."""

    results: Tuple[BenchResult, ...]
    claims: Tuple[ClaimCheck, ...] = ()
    environment: Dict[str, Any] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    created: Optional[str] = None
    schema: str = SCHEMA

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": self.schema,
            "created": self.created,
            "settings": self.settings,
            "environment": self.environment,
            "notes": list(self.notes),
            "results": [r.to_dict() for r in self.results],
            "claims": [c.to_dict() for c in self.claims],
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BenchReport":
        """A report read back from ``lightseg-bench --json`` (for regenerating tables without re-measuring)."""
        return cls(
            results=tuple(results_from_dicts(d.get("results", []))), claims=tuple(ClaimCheck(**c) for c in d.get("claims", [])),
            environment=d.get("environment") or {}, settings=d.get("settings") or {}, notes=tuple(d.get("notes", ())),
            created=d.get("created"), schema=d.get("schema", SCHEMA),
        )

    @property
    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self.results:
            out[r.status] += 1
        return out


def results_from_dicts(items: List[Dict[str, Any]]) -> List[BenchResult]:
    return [BenchResult.from_dict(d) for d in items]
