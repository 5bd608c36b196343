"""lightseg-bench: latency, memory, parameters and accuracy of a model on this machine, and the papers' claims checked
against them.

Sources (exactly one): --model NAME (PyTorch; with --runtime onnxruntime/tensorrt the model is exported first),
--onnx FILE.onnx (ONNX Runtime), --engine FILE.plan (TensorRT), --export-dir DIR (every artifact of a lightseg-export
folder, plus PyTorch with the same weights), --all (every registry model x runtime x precision available here).

Each (runtime, precision) runs in a fresh process: memory is sampled in a loop of its own, then compute-only latency
(infer on a preprocessed batch) and end-to-end latency (predict on uint8 images) are timed. Machine load, threads and
CPU clock are recorded with every row. Models without shipped weights are benchmarked with random weights (seed 0):
latency and memory are valid, accuracy is reported as not available.

Exit status: 0 when at least one row was measured, 1 when every row was skipped or failed (each with its reason),
2 for a usage error.

examples:
  lightseg-bench --model ucmnet
  lightseg-bench --onnx exports/ucmnet-256-fp16/model.onnx --batch 1,8 --json bench.json
  lightseg-bench --all --data path/to/isic2018 --max-images 100 --markdown bench.md --plot bench.png
  lightseg-bench --triton 127.0.0.1:8000 --data tests/assets/isic_sample --concurrency 1,2,4,8 --requests 64

--triton URL runs a concurrency sweep against a running Triton server (lightseg-serve) instead; its own options:
--model NAME (served model, default lightseg), --data DIR, --concurrency LIST, --requests N | --duration S,
--max-images N, --split, --json PATH (see lightseg-bench --triton URL --help).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Dict, List, Optional, Tuple

from ..runtimes.registry import alias_table, runtime_names
from ..types import PRECISION_NAMES
from ._common import add_tta_argument, choice_list, existing_dir, img_size, non_negative_int, positive_float, positive_int, positive_int_list, run_cli, thread_count

RUNTIME_CHOICES = runtime_names()
PRECISION_CHOICES = PRECISION_NAMES
DEFAULT_SPLIT = "test"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--engine", metavar="FILE.plan", help="a serialized TensorRT engine (needs TensorRT and a GPU)")
    src.add_argument("--onnx", metavar="FILE.onnx", help="an ONNX model (ONNX Runtime; preprocessing from the manifest.json beside it)")
    src.add_argument("--model", metavar="NAME", help="a registry model (see lightseg_edge.list_models())")
    src.add_argument("--export-dir", metavar="DIR", help="a lightseg-export folder: every artifact in it")
    src.add_argument("--all", action="store_true", help="every registry model on every runtime and precision available here")
    src.add_argument("--triton", metavar="URL", help="a running Triton server (lightseg-serve): concurrency sweep instead (see below)")
    p.add_argument("--weights", metavar="CKPT", help="with --model: a lightseg-train checkpoint or .safetensors file, or 'random' "
                   "(default: the shipped weights; random weights, seed 0, when the model has none)")
    p.add_argument("--runtime", metavar="LIST", type=choice_list(RUNTIME_CHOICES, alias_table()),
                   help=f"comma-separated subset of {','.join(RUNTIME_CHOICES)} (default: what the source offers; --model: pytorch; --all: all three)")
    p.add_argument("--precision", metavar="LIST", type=choice_list(PRECISION_CHOICES),
                   help="comma-separated subset of fp32,fp16,int8 (default: fp32; --all and --export-dir: all)")
    p.add_argument("--batch", metavar="LIST", type=positive_int_list, default=(1,), help="batch sizes, e.g. 1,8,32 (default 1)")
    p.add_argument("--img-size", type=img_size, metavar="N", help="square network input size (default: the model's, 256)")
    p.add_argument("--warmup", type=non_negative_int, default=10, metavar="N", help="warm-up calls before each timed loop (default 10)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=positive_int, metavar="N",
                        help="exactly N timed calls per loop (the memory loop then runs min(20, max(3, N)) inferences)")
    budget.add_argument("--min-time", type=positive_float, metavar="S",
                        help="timed calls until they sum to S seconds (and at least 10 calls); default 2")
    add_tta_argument(p)
    p.add_argument("--threads", type=thread_count, metavar="N", help="CPU threads for PyTorch and ONNX Runtime (default: all usable cores)")
    p.add_argument("--data", type=existing_dir, metavar="DIR", help="dataset root: accuracy (mDice/mIoU) per runtime and precision, and real images as inputs")
    p.add_argument("--split", help=f"data split for accuracy (default {DEFAULT_SPLIT}; needs --data)")
    p.add_argument("--max-images", type=positive_int, metavar="N", help="score at most N images of the split (default: all; needs --data)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="print only the results table (no progress, no claims)")
    talk.add_argument("--verbose", action="store_true", help="also print the reason behind every claim's verdict")
    p.add_argument("--json", metavar="PATH", help="write the full report (settings, environment, rows, claims) as JSON")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV (the claims go to PATH's .claims.csv sibling)")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write latency vs parameters (marker area ~ MACs) as PNG")
    return p


def _source(args: argparse.Namespace) -> Tuple[str, Optional[str]]:
    for flag, kind in (("engine", "engine"), ("onnx", "onnx"), ("model", "model"), ("export_dir", "export-dir")):
        if getattr(args, flag):
            return kind, getattr(args, flag)
    return "all", None


def _output_paths(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """(flag, path) of every file the run will write, the claims CSV beside --csv included."""
    from ..bench.report import claims_csv_path

    out = [(f"--{k}", getattr(args, k)) for k in ("json", "csv", "markdown", "plot") if getattr(args, k) is not None]
    if args.csv:
        out.append(("--csv", str(claims_csv_path(args.csv))))
    return out


def _check_outputs(args: argparse.Namespace) -> None:
    from ..bench.report import check_output_path
    from ..errors import InvalidInputError

    seen: Dict[str, str] = {}
    for flag, path in _output_paths(args):
        key = os.path.realpath(str(check_output_path(path, flag)))
        if key in seen:
            raise InvalidInputError(f"{flag} {path}: {seen[key]} writes the same file; give each output its own path")
        seen[key] = flag
    if args.plot:
        from .._optional import require

        require("matplotlib", extra="bench", purpose="--plot")


def _check_args(args: argparse.Namespace) -> Optional[str]:
    """Everything that can be wrong with the arguments, before any model is loaded or measured; the line naming the
    accuracy data, when there is some."""
    from ..errors import InvalidInputError

    if args.weights is not None and not args.model:
        raise InvalidInputError("--weights goes with --model NAME (an ONNX file, engine or export folder already holds its weights)")
    for flag, value in (("--max-images", args.max_images), ("--split", args.split)):
        if value is not None and not args.data:
            raise InvalidInputError(f"{flag} {value} chooses the accuracy images: it needs --data DIR")
    _check_outputs(args)
    if args.data:
        return _check_data(args.data, DEFAULT_SPLIT if args.split is None else args.split, args.max_images)
    return None


def _check_data(data: str, split: str, max_images: Optional[int]) -> str:
    """A bad folder or split is an error now, not after the timing. Returns the line saying which images are scored."""
    from ..bench.accuracy import select_samples
    from ..data.layouts import describe_data, detect_layout
    from ..errors import DataError, LightsegError

    try:
        samples = select_samples(data, split)
    except LightsegError as exc:
        raise DataError(f"--data {data} --split {split}: {exc}") from exc
    if not samples:
        raise DataError(f"--data {data} --split {split}: expected image/mask pairs in that split, found none")
    return describe_data(data, detect_layout(data), split, min(len(samples), max_images or len(samples)), len(samples))


def _write(report, args: argparse.Namespace) -> List[str]:
    """The requested files. When one cannot be written (a full disk), the measurements are not lost: the full report
    goes to a fallback file (or stdout), and the one error line says where."""
    from ..bench.report import save_fallback, write_outputs
    from ..errors import OutputError

    try:
        return [str(p) for p in write_outputs(report, args.json, args.csv, args.markdown, args.plot)]
    except OutputError as exc:
        where = save_fallback(report)
        raise OutputError(f"{exc}; the measurements are saved in {where}") from exc


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``timeout``, a job scheduler) ends the run like Ctrl-C: temporary exports are removed, the rows
    measured so far stay in the partial --json/--csv."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(argv: List[str]) -> int:
    if any(a == "--triton" or a.startswith("--triton=") for a in argv):  # its own options: cli/bench_triton.py
        from .bench_triton import run_cli_args

        return run_cli_args(argv)
    args = _parser().parse_args(argv)
    data_line = _check_args(args)
    from ..bench.environment import collect_environment
    from ..bench.machine import usable_cores
    from ..bench.matrix import BenchOptions, env_summary, make_plan
    from ..bench.memory import DEFAULT_MEMORY_RUNS, MIN_MEMORY_RUNS
    from ..bench.report import format_report, write_outputs
    from ..bench.runner import finish, run_jobs
    from ..bench.timing import TimingConfig
    from ..errors import OutputError

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    if data_line:
        progress(data_line)
    timing = TimingConfig(warmup=args.warmup, iters=args.iters, min_time=args.min_time)
    runtimes, precisions, split = args.runtime, args.precision, DEFAULT_SPLIT if args.split is None else args.split
    env = collect_environment()
    threads = args.threads or usable_cores()
    # A quick run (--iters N) gets a memory loop of the same length: between 3 and the default 20 inferences.
    memory_runs = min(DEFAULT_MEMORY_RUNS, max(MIN_MEMORY_RUNS, args.iters)) if args.iters else DEFAULT_MEMORY_RUNS
    opts = BenchOptions(runtimes=runtimes, precisions=precisions, batches=args.batch, img_size=args.img_size, timing=timing,
                        threads=threads, tta=args.tta, data=args.data, split=split, max_images=args.max_images, env=env_summary(env), memory_runs=memory_runs,
                        gpu=bool((env.get("gpu") or {}).get("present")))
    kind, value = _source(args)
    settings = {
        "command": "lightseg-bench " + " ".join(argv), "source": kind, "value": value, "weights": args.weights,
        "runtimes": list(runtimes) if runtimes else None, "precisions": list(precisions) if precisions else None,
        "batches": list(opts.batches), "img_size": args.img_size, "threads": threads, "tta": args.tta, "timing": timing.to_dict(),
        "timing_description": timing.describe(), "memory_runs": opts.memory_runs, "data": args.data, "split": split,
        "max_images": args.max_images, "process_per_job": True,
    }
    with _terminate_as_interrupt():
        plan = make_plan(kind, value, opts, weights=args.weights, progress=progress)

        partial_failures: List[str] = []  # said once; the final write reports for good (and saves the measurements)

        def save_partial(rows, left: int) -> None:
            # JSON/CSV only (no claims, no figures): cheap enough after every job, and a killed run keeps its rows
            if left and (args.json or args.csv):
                partial = finish(list(plan.rows) + rows, [], env, {**settings, "partial": f"{left} job(s) not run yet"}, plan.notes, claims=False)
                try:
                    write_outputs(partial, args.json, args.csv)
                except OutputError as exc:  # the run goes on: the measurements are in memory
                    if not partial_failures:
                        progress(f"warning: partial results not saved: {exc}")
                    partial_failures.append(str(exc))

        try:
            # progress=None when quiet: the jobs' accuracy bars are asked for only when someone reads them
            rows = list(plan.rows) + run_jobs(plan.jobs, isolate=True, environment=env, progress=None if args.quiet else progress,
                                              on_rows=save_partial)
            report = finish(rows, plan.models, env, settings, plan.notes, progress)
        finally:
            plan.cleanup()
    try:
        written = _write(report, args)  # files first: a closed stdout must not lose them
    finally:
        print(format_report(report, verbosity=0 if args.quiet else 2 if args.verbose else 1))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if report.counts["ok"] else 1


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
