"""The export's CPU default: which artifact, and how many threads, ``load_predictor(folder)`` runs on a CPU.

Chosen by measurement at the end of an export, on the machine that runs it: every artifact that runs on this CPU and
keeps FP32's accuracy on the held-out images (mask agreement with the FP32 ONNX of at least ``MIN_AGREEMENT``, so
an INT8 model that flips pixels is never picked for speed) is timed with each thread count from 1 to the usable
cores and each setting in ``SETTINGS`` (ONNX Runtime with and without its NCHWc layout), batch 1 on one held-out
image, the candidates interleaved in rounds (reversed every other round) so that a
change of machine speed between rounds does not pick the winner. The fastest median of round medians wins; the
manifest records it with every candidate's figure and the CPU it was measured on (``cpu_default``), and
``load_predictor`` follows it when the runtime is ``auto`` and no TensorRT engine is used; ``runtime=``,
``precision=`` and ``threads=`` override it. On another kind of machine the choice may not be the fastest: re-export
there, or benchmark with ``lightseg-bench --export-dir``.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bench.timing import interleaved_rounds
from ..runtimes.registry import RUNTIMES
from ..types import PreprocessConfig, Runtime

MIN_AGREEMENT = 0.999  # mask Dice against the FP32 ONNX on the held-out images: FP32's accuracy, not a trade
ROUNDS, ITERS, WARMUP = 5, 15, 5
# Predictor settings timed beside each runtime's defaults. ONNX Runtime's "all" level adds the NCHWc layout: blocked
# convolutions with a reorder at every op that cannot take the blocked layout; on models with few channels and many
# normalisations (UCM-Net, EGE-UNet) the reorders cost more than the blocked convolutions gain, on others not
# (benchmarks/cpu_fast_path.py), so both are timed. Recorded in the manifest with the choice.
SETTINGS: Dict[Runtime, Tuple[Dict[str, Any], ...]] = {Runtime.ONNXRUNTIME: ({}, {"graph_optimization_level": "extended"})}


@dataclass(frozen=True)
class Candidate:
    key: str  # manifest artifact key
    runtime: Runtime
    precision: str
    path: Path
    threads: int  # 0: the runtime takes no threads= option (its own choice)
    options: Tuple[Tuple[str, Any], ...] = ()  # predictor settings besides threads (one of SETTINGS)

    @property
    def name(self) -> str:
        return _name(self.key, self.threads, self.options)


def _name(key: str, threads: int, options: Sequence[Tuple[str, Any]]) -> str:
    """A candidate's key in ``timings_ms``: "<artifact>@<threads>[,<option>=<value>...]"."""
    return f"{key}@{threads}" + "".join(f",{k}={v}" for k, v in options)


@dataclass(frozen=True)
class CpuDefault:
    artifact: str
    runtime: str
    precision: str
    threads: int
    options: Dict[str, Any]  # predictor settings besides threads; {}: the runtime's defaults
    cpu: Optional[str]
    cores: int
    rounds: int
    iters: int
    timings_ms: Dict[str, float]  # "<artifact>@<threads>" -> median of round medians, batch 1

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        name = _name(self.artifact, self.threads, tuple(self.options.items()))
        others = ", ".join(f"{k} {v:.2f}" for k, v in self.timings_ms.items())
        return f"{name} ({self.runtime}): {self.timings_ms[name]:.2f} ms (all, ms: {others})"


def candidates(results: Dict[str, Any], artifacts: Dict[str, dict], paths: Dict[str, Path], cores: int) -> List[Candidate]:
    """The scored artifacts (``paths``: where each is now) with FP32's accuracy, each with every thread count from 1
    to ``cores`` and every setting of its runtime in ``SETTINGS``."""
    out = []
    for key, res in results.items():
        entry = artifacts.get(key)
        if entry is None or key not in paths or res.agreement_dice < MIN_AGREEMENT or res.worst_agreement < MIN_AGREEMENT - 0.01:
            continue  # an extra scored setting (OpenVINO bf16 hint) has no artifact of its own
        runtime = Runtime(res.runtime)
        threads = range(1, cores + 1) if "threads" in RUNTIMES[runtime].options else (0,)  # 0: the runtime's own choice
        out += [Candidate(key, runtime, entry["precision"], paths[key], t, tuple(o.items()))
                for o in SETTINGS.get(runtime, ({},)) for t in threads]
    return out


def choose(cands: Sequence[Candidate], x: np.ndarray, preprocess: PreprocessConfig, cpu: Optional[str], cores: int,
           rounds: int = ROUNDS, iters: int = ITERS) -> CpuDefault:
    """Time every candidate (at least one) on ``x`` (one preprocessed image, batch 1) and return the fastest."""
    by_name = {c.name: c for c in cands}
    predictors: Dict[str, Any] = {}
    try:
        for c in cands:
            cls = RUNTIMES[c.runtime].predictor_class()
            options = dict(c.options, **({"threads": c.threads} if c.threads else {}))
            predictors[c.name] = cls(c.path, preprocess, device="cpu", precision=c.precision, **options)
        calls = {name: (lambda p=p: p.infer(x)) for name, p in predictors.items()}
        timings = {n: statistics.median(v) for n, v in interleaved_rounds(calls, rounds, iters, WARMUP).items()}
    finally:
        for p in predictors.values():
            p.close()
    best = by_name[min(timings, key=timings.get)]
    return CpuDefault(best.key, best.runtime.value, best.precision, best.threads, dict(best.options), cpu, cores, rounds, iters,
                      {k: round(v, 3) for k, v in timings.items()})
