"""Run a benchmark plan: each job in a fresh process, every failure a row, then figures, deltas and claims.

``run_jobs`` never raises for a backend problem. A missing package or device becomes ``skipped`` rows, an error while
loading or measuring becomes ``failed`` rows naming the stage, and a worker that dies (segfault, out of memory,
timeout) becomes ``failed`` rows with its exit status and last error line. Only bugs in the benchmark itself and
user errors (a file that does not exist, an unknown model) stop a run.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._progress import format_duration, progress_bar
from ..errors import LightsegError
from ..types import PRECISION_NAMES
from .accuracy import add_deltas
from .jobs import RUNTIMES, AccuracyProgress, Job, base_row, rows_for_failure, run_job
from .records import BenchReport, BenchResult, ClaimCheck, results_from_dicts
from .worker import parse_progress_line

Progress = Optional[Callable[[str], None]]
DEFAULT_JOB_TIMEOUT_S = 3600.0
_READER_JOIN_S = 10.0
_PRECISION_ORDER = PRECISION_NAMES


def _say(progress: Progress, text: str) -> None:
    if progress is not None:
        progress(text)


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "Killed" in ln:
            return ln[:400]
    return lines[-1][:400] if lines else "no output"


def _read_stderr(stream: IO[str], kept: List[str], on_progress: AccuracyProgress) -> None:
    """Every line of the worker's stderr: progress lines to ``on_progress``, the others into ``kept``."""
    for line in stream:
        counts = parse_progress_line(line)
        if counts is None:
            kept.append(line)
        elif on_progress is not None:
            try:
                on_progress(*counts)
            except Exception:  # noqa: BLE001 - a display problem must not stop the reading: the worker would block on a full pipe
                on_progress = None


def _run_worker(cmd: List[str], env: Dict[str, str], timeout: Optional[float], on_progress: AccuracyProgress) -> Tuple[int, str]:
    """(exit code, stderr) of the worker process, its progress lines passed to ``on_progress`` as they come.
    subprocess.TimeoutExpired after ``timeout`` seconds; the worker never outlives this call."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8", errors="replace")
    kept: List[str] = []
    reader = threading.Thread(target=_read_stderr, args=(proc.stderr, kept, on_progress), daemon=True)
    reader.start()
    try:
        proc.wait(timeout)
    except BaseException:  # the timeout, or Ctrl-C / SIGTERM of the run
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(_READER_JOIN_S)  # bounded: a grandchild may hold the pipe open
        proc.stderr.close()
    return proc.returncode, "".join(kept)


def run_isolated(job: Job, timeout: Optional[float] = DEFAULT_JOB_TIMEOUT_S, environment: Optional[Dict[str, Any]] = None,
                 on_accuracy: AccuracyProgress = None) -> List[BenchResult]:
    """``job`` in a fresh ``python -m lightseg_edge.bench.worker`` process."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if job.threads is not None:
        env["OMP_NUM_THREADS"] = str(job.threads)  # torch's OpenMP pool reads it at start-up
    with tempfile.TemporaryDirectory(prefix="lightseg-bench-job-") as work:
        job_path, out_path = os.path.join(work, "job.json"), os.path.join(work, "rows.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump({"job": job.to_dict(), "environment": environment, "progress": on_accuracy is not None}, f)
        cmd = [sys.executable, "-m", "lightseg_edge.bench.worker", job_path, out_path]
        try:
            code, stderr = _run_worker(cmd, env, timeout, on_accuracy)
        except subprocess.TimeoutExpired:
            return [base_row(job, b, "failed", f"timed out after {timeout:.0f} s (the worker process was stopped)") for b in job.batches]
        if code == 0 and os.path.isfile(out_path):
            with open(out_path, encoding="utf-8") as f:
                return results_from_dicts(json.load(f))
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        return [base_row(job, b, "failed", f"worker process ended with {how}: {_last_error_line(stderr)}") for b in job.batches]


def run_in_process(job: Job, environment: Optional[Dict[str, Any]] = None, on_accuracy: AccuracyProgress = None) -> List[BenchResult]:
    try:
        return run_job(job, environment, on_accuracy)
    except Exception as exc:  # noqa: BLE001 - a bug in one job's path still leaves a row, and the run goes on
        return rows_for_failure(job, exc, "run")


class _AccuracyBar:
    """One job's accuracy step as a bar with ETA, opened at its first report (when the number of images is known)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, f"accuracy {self.label}")
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _job_line(i: int, n: int, job: Job, elapsed: float) -> str:
    """``[k/n] <job>``, the run's elapsed time and, from the mean of the jobs done so far, an ETA for the rest."""
    eta = f", ETA {format_duration(elapsed / (i - 1) * (n - i + 1))}" if i > 1 else ""
    return f"[{i}/{n}] {job.label} (batch {','.join(map(str, job.batches))})  elapsed {format_duration(elapsed)}{eta}"


def _summary(rows: Sequence[BenchResult]) -> str:
    parts = []
    for r in rows:
        if r.ok and r.latency is not None:
            parts.append(f"b{r.batch} p50 {r.latency.p50:.2f} ms")
        else:
            parts.append(f"b{r.batch} {r.status}: {r.reason}")
    return "; ".join(parts)


def run_jobs(jobs: Sequence[Job], isolate: bool = True, timeout: Optional[float] = DEFAULT_JOB_TIMEOUT_S,
             environment: Optional[Dict[str, Any]] = None, progress: Progress = None,
             on_rows: Optional[Callable[[List[BenchResult], int], None]] = None,
             clock: Callable[[], float] = time.monotonic) -> List[BenchResult]:
    """Every job in turn; ``on_rows(rows so far, jobs left)`` after each, so a run cut short keeps what it measured.
    With ``progress``, each job is announced with the run's elapsed time and ETA, and its accuracy step shows a bar."""
    out: List[BenchResult] = []
    start = clock()
    for i, job in enumerate(jobs, 1):
        _say(progress, _job_line(i, len(jobs), job, clock() - start))
        bar = _AccuracyBar(job.label) if progress is not None else None
        try:
            rows = run_isolated(job, timeout, environment, bar) if isolate else run_in_process(job, environment, bar)
        finally:
            if bar is not None:
                bar.close()
        _say(progress, f"      {_summary(rows)}")
        out += rows
        if on_rows is not None:
            on_rows(out, len(jobs) - i)
    return out


def sort_rows(rows: Sequence[BenchResult]) -> List[BenchResult]:
    def key(r: BenchResult) -> Tuple:
        rt = RUNTIMES.index(r.runtime) if r.runtime in RUNTIMES else len(RUNTIMES)
        pr = _PRECISION_ORDER.index(r.precision) if r.precision in _PRECISION_ORDER else len(_PRECISION_ORDER)
        return (r.model, rt, pr, r.batch)

    return sorted(rows, key=key)


def attach_figures(rows: Sequence[BenchResult], figures: Dict[Tuple[str, Tuple[int, int]], Any], at_paper: Dict[str, Any]) -> List[BenchResult]:
    """Params, deployed params and MACs from the registry counts (at the row's input size), for registry models."""
    out = []
    for r in rows:
        fig = figures.get((r.model, tuple(r.img_size))) if r.img_size else at_paper.get(r.model)
        if fig is not None:
            r = r.with_(params=fig.params, deploy_params=fig.deploy_params, macs=fig.macs)
        out.append(r)
    return out


def _figures(models: Sequence[str], sizes: Dict[str, List[Tuple[int, int]]], progress: Progress) -> Tuple[Dict, Dict, List[str]]:
    """(figures by (model, size), figures at each model's paper input size, notes)."""
    from ..models import get_model_config
    from .claims import model_figures

    by_size: Dict[Tuple[str, Tuple[int, int]], Any] = {}
    at_paper: Dict[str, Any] = {}
    notes: List[str] = []
    for name in models:
        paper_size = tuple(get_model_config(name).input_size)
        for size in sorted(set(sizes.get(name, [])) | {paper_size}):
            _say(progress, f"counting parameters and MACs of {name} at {size[0]}x{size[1]}")
            try:
                fig = model_figures(name, size)
            except LightsegError as exc:
                notes.append(f"{name}: parameters/MACs not counted at {size}: {exc}")
                continue
            by_size[(name, size)] = fig
            if size == paper_size:
                at_paper[name] = fig
    return by_size, at_paper, notes


def mark_speed_drift(rows: Sequence[BenchResult]) -> List[BenchResult]:
    """Each timed row's speed probe (``machine.speed_probe_ms``, before and after its job) against the median of the
    run's rows, as ``machine["speed_drift"]`` (2.0: the machine ran half as fast). Rows measured at another machine
    speed than the rest are flagged by ``BenchResult.noise``: their latencies must not be compared with the others."""
    probes = {id(r): sum(p) / len(p) for r in rows if (p := r.machine.get("speed_probe_ms"))}
    if len(probes) < 2:
        return list(rows)
    median = statistics.median(probes.values())
    return [r.with_(machine=dict(r.machine, speed_drift=round(probes[id(r)] / median, 3))) if id(r) in probes else r for r in rows]


def finish(rows: Sequence[BenchResult], models: Sequence[str], environment: Dict[str, Any], settings: Dict[str, Any],
           notes: Sequence[str] = (), progress: Progress = None, claims: bool = True) -> BenchReport:
    """Counts, deltas against fp32 PyTorch and the claims table around measured ``rows``."""
    all_notes = list(notes)
    figures: Dict = {}
    at_paper: Dict = {}
    if models:
        try:
            sizes: Dict[str, List[Tuple[int, int]]] = {}
            for r in rows:
                if r.model in models and r.img_size:
                    sizes.setdefault(r.model, []).append(tuple(r.img_size))
            figures, at_paper, fig_notes = _figures(models, sizes, progress)
            all_notes += fig_notes
        except LightsegError as exc:  # no torch on this device: rows stay, claims are not available
            all_notes.append(f"parameters, MACs and the claims table need PyTorch: {exc}")
    out = attach_figures(mark_speed_drift(rows), figures, at_paper)
    out = add_deltas(out)
    table: List[ClaimCheck] = []
    if claims and at_paper:
        from .claims import check_claims

        for name in models:
            if name in at_paper:
                table += check_claims(name, at_paper[name], out)
    return BenchReport(
        results=tuple(sort_rows(out)), claims=tuple(table), environment=environment, settings=settings, notes=tuple(all_notes),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
