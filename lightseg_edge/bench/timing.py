"""Latency measurement: warm-up, then timed calls until a count or a time budget is reached.

Two figures per batch size, never mixed (trtexec reports them apart for the same reason: for models this small,
copies and Python pre/post-processing can cost more than the network):

- **compute only**: ``predictor.infer(batch)`` on an already preprocessed NCHW float32 batch. On CPU each call is
  timed with ``time.perf_counter_ns``. On a CUDA predictor a pair of CUDA events brackets each call instead
  (``CudaEventTimer``); ``infer`` copies the batch to the device and the logits back, so this is trtexec's
  "host latency" side of the split, measured on the GPU's clock (run on an H100 and an H200).
- **end to end**: ``predictor.predict_batch(images)`` on HxWx3 uint8 images at their own size: decode-free
  pre-processing (resize, normalise), host<->device copies, inference, logits resize, sigmoid and threshold. Always
  wall-clock, because that is what an application waits for.

Stopping rule (pytest-benchmark / trtexec style): with ``iters`` exactly that many timed calls; otherwise calls
continue until their summed time reaches ``min_time`` seconds *and* at least ``min_iters`` calls were made, capped at
``max_iters``. The rule counts timed time, not wall time, so a fake timer makes it fully deterministic in tests.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from ..errors import InvalidInputError
from .records import LatencyStats

DEFAULT_WARMUP = 10
DEFAULT_MIN_TIME = 2.0
DEFAULT_MIN_ITERS = 10
DEFAULT_MAX_ITERS = 10_000


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = DEFAULT_WARMUP
    iters: Optional[int] = None
    min_time: Optional[float] = None  # seconds; DEFAULT_MIN_TIME when neither iters nor min_time is given
    min_iters: int = DEFAULT_MIN_ITERS
    max_iters: int = DEFAULT_MAX_ITERS

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise InvalidInputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.iters is not None and self.min_time is not None:
            raise InvalidInputError("--iters and --min-time are exclusive: give a call count or a time budget, not both")
        if self.iters is not None and self.iters < 1:
            raise InvalidInputError(f"--iters must be >= 1, got {self.iters}")
        if self.min_time is not None and not self.min_time > 0:
            raise InvalidInputError(f"--min-time must be a positive number of seconds, got {self.min_time}")
        if self.min_iters < 1 or self.max_iters < self.min_iters:
            raise InvalidInputError(f"min_iters/max_iters must satisfy 1 <= min_iters <= max_iters, got {self.min_iters}/{self.max_iters}")

    @property
    def budget_s(self) -> Optional[float]:
        if self.iters is not None:
            return None
        return self.min_time if self.min_time is not None else DEFAULT_MIN_TIME

    def describe(self) -> str:
        if self.iters is not None:
            return f"{self.warmup} warm-up + {self.iters} timed calls"
        return f"{self.warmup} warm-up + timed calls for >= {self.budget_s:g} s and >= {self.min_iters} calls (at most {self.max_iters})"

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["budget_s"] = self.budget_s
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TimingConfig":
        return cls(**{k: d[k] for k in ("warmup", "iters", "min_time", "min_iters", "max_iters") if k in d})


class PerfCounterTimer:
    """Host wall-clock around one call."""

    name = "perf_counter_ns"

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self._clock = clock

    def __call__(self, fn: Callable[[], Any]) -> int:
        t0 = self._clock()
        fn()
        return self._clock() - t0


class CudaEventTimer:
    """GPU clock around one call: an event recorded on the current CUDA stream before and after it.

    Uses torch's events when torch is already imported (the PyTorch adapter, or TensorRT on torch buffers), else
    cuda-python's runtime API. The events sit on the default stream; ``infer`` synchronises its own stream before it
    returns, so the pair brackets all of the call's device work (copies included). Run on an H100 and an H200 (tests/bench/test_timing.py).
    """

    name = "cuda-events"

    def __init__(self, device_index: int = 0) -> None:
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            torch = sys.modules["torch"]
            self._torch = torch
            self._device = torch.device("cuda", device_index)
            self._cudart = None
        else:
            from .._optional import require

            require("cuda", purpose="CUDA event timing")
            try:
                from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
            except ImportError:  # older cuda-python
                from cuda import cudart  # type: ignore[no-redef]
            self._torch = None
            self._cudart = cudart

    def _check(self, result: Any) -> Any:
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime error {err}")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    def __call__(self, fn: Callable[[], Any]) -> int:
        if self._torch is not None:
            torch = self._torch
            with torch.cuda.device(self._device):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                return int(start.elapsed_time(end) * 1e6)
        rt = self._cudart
        start, end = self._check(rt.cudaEventCreate()), self._check(rt.cudaEventCreate())
        try:
            self._check(rt.cudaEventRecord(start, 0))
            fn()
            self._check(rt.cudaEventRecord(end, 0))
            self._check(rt.cudaEventSynchronize(end))
            ms = self._check(rt.cudaEventElapsedTime(start, end))
            return int(float(ms) * 1e6)
        finally:
            rt.cudaEventDestroy(start)
            rt.cudaEventDestroy(end)


def timer_for(predictor: Any) -> Any:
    """CUDA events for a predictor on a CUDA device, else the host clock."""
    device = str(getattr(predictor, "device", "cpu") or "cpu")
    if device.startswith("cuda"):
        index = device.partition(":")[2]
        return CudaEventTimer(int(index) if index.isdigit() else 0)
    return PerfCounterTimer()


def run_timed(fn: Callable[[], Any], cfg: TimingConfig, batch: int = 1, timer: Optional[Any] = None) -> LatencyStats:
    """Warm up, then time ``fn`` under ``cfg``'s stopping rule; ``batch`` images per call set the throughput."""
    timer = timer or PerfCounterTimer()
    for _ in range(cfg.warmup):
        fn()
    gc.collect()  # start the timed calls without a pending collection from the warm-up's garbage
    samples: List[int] = []
    total = 0
    budget_ns = None if cfg.budget_s is None else int(cfg.budget_s * 1e9)
    while True:
        dt = int(timer(fn))
        samples.append(dt)
        total += dt
        n = len(samples)
        if cfg.iters is not None:
            if n >= cfg.iters:
                break
        elif (total >= budget_ns and n >= cfg.min_iters) or n >= cfg.max_iters:
            break
    return LatencyStats.from_ns(samples, batch=batch, clock=getattr(timer, "name", "custom"))


def time_compute(predictor: Any, batch: Any, cfg: TimingConfig, timer: Optional[Any] = None) -> LatencyStats:
    """Compute only: ``infer`` on a preprocessed (N, 3, H, W) float32 batch."""
    return run_timed(lambda: predictor.infer(batch), cfg, int(batch.shape[0]), timer or timer_for(predictor))


def time_end_to_end(predictor: Any, images: List[Any], cfg: TimingConfig, timer: Optional[Any] = None) -> LatencyStats:
    """End to end: uint8 images in, masks at each image's size out (the host clock: what an application waits for)."""
    timer = timer or PerfCounterTimer()
    if len(images) == 1:
        image = images[0]
        return run_timed(lambda: predictor.predict(image), cfg, 1, timer)
    return run_timed(lambda: predictor.predict_batch(images), cfg, len(images), timer)


@dataclass(frozen=True)
class Prepared:
    """A timed call that takes a fresh argument from ``setup``, which runs untimed before each call (e.g. decoding
    a new image, so the call sees the allocations a real application's loop makes)."""

    setup: Callable[[], Any]
    call: Callable[[Any], Any]


def median_ms(fn: Union[Callable[[], Any], Prepared], iters: int) -> float:
    """The median wall time of ``iters`` calls of ``fn``, in milliseconds."""
    prepared = isinstance(fn, Prepared)
    times = []
    for _ in range(iters):
        arg = fn.setup() if prepared else None
        t0 = time.perf_counter_ns()
        fn.call(arg) if prepared else fn()
        times.append(time.perf_counter_ns() - t0)
        del arg  # freed before the next setup allocates, as a loop that drops each image after use does
    return statistics.median(times) / 1e6


def interleaved_rounds(calls: Dict[str, Union[Callable[[], Any], Prepared]], rounds: int, iters: int, warmup: int = 0) -> Dict[str, List[float]]:
    """Each call's median (ms) per round. Within a round the calls run back to back, in reversed order every other
    round (A B C, C B A, ...), so a ratio of two calls in one round survives a change of machine speed between
    rounds; ``warmup`` untimed calls of each first."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            median_ms(calls[name], 1)
    per: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            per[name].append(median_ms(calls[name], iters))
    return per
