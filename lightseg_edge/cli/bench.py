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
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import List, Optional, Tuple

from ._common import run_cli

RUNTIME_CHOICES = ("pytorch", "onnxruntime", "tensorrt")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--engine", metavar="FILE.plan", help="a serialized TensorRT engine (needs TensorRT and a GPU)")
    src.add_argument("--onnx", metavar="FILE.onnx", help="an ONNX model (ONNX Runtime; preprocessing from the manifest.json beside it)")
    src.add_argument("--model", metavar="NAME", help="a registry model (see lightseg_edge.list_models())")
    src.add_argument("--export-dir", metavar="DIR", help="a lightseg-export folder: every artifact in it")
    src.add_argument("--all", action="store_true", help="every registry model on every runtime and precision available here")
    p.add_argument("--weights", metavar="CKPT", help="with --model: a lightseg-train checkpoint or .safetensors file, or 'random' "
                   "(default: the shipped weights; random weights, seed 0, when the model has none)")
    p.add_argument("--runtime", metavar="LIST", help=f"comma-separated subset of {','.join(RUNTIME_CHOICES)} (default: what the source offers; "
                   "--model: pytorch; --all: all three)")
    p.add_argument("--precision", metavar="LIST", help="comma-separated subset of fp32,fp16,int8 (default: fp32; --all and --export-dir: all)")
    p.add_argument("--batch", metavar="LIST", default="1", help="batch sizes, e.g. 1,8,32 (default 1)")
    p.add_argument("--img-size", type=int, metavar="N", help="square network input size (default: the model's, 256)")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="warm-up calls before each timed loop (default 10)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, metavar="N", help="exactly N timed calls per loop (the memory loop then runs min(20, max(3, N)) inferences)")
    budget.add_argument("--min-time", type=float, metavar="S", help="timed calls until they sum to S seconds (and at least 10 calls); default 2")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for PyTorch and ONNX Runtime (default: all usable cores)")
    p.add_argument("--data", metavar="DIR", help="dataset root: accuracy (mDice/mIoU) per runtime and precision, and real images as inputs")
    p.add_argument("--split", default="test", help="data split for accuracy (default test)")
    p.add_argument("--max-images", type=int, metavar="N", help="score at most N images of the split (default: all)")
    p.add_argument("--json", metavar="PATH", help="write the full report (settings, environment, rows, claims) as JSON")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV (the claims go to PATH's .claims.csv sibling)")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write latency vs parameters (marker area ~ MACs) as PNG")
    return p


def _list(text: Optional[str], allowed: Tuple[str, ...], flag: str, aliases: Optional[dict] = None) -> Optional[Tuple[str, ...]]:
    from ..errors import InvalidInputError

    if text is None:
        return None
    out = []
    for item in (t.strip().lower() for t in text.split(",")):
        item = (aliases or {}).get(item, item)
        if item not in allowed:
            raise InvalidInputError(f"{flag} {text!r}: {item!r} is not one of {', '.join(allowed)}")
        if item not in out:
            out.append(item)
    if not out:
        raise InvalidInputError(f"{flag}: expected a comma-separated list of {', '.join(allowed)}")
    return tuple(out)


def _batches(text: str) -> Tuple[int, ...]:
    from ..errors import InvalidInputError

    try:
        values = tuple(dict.fromkeys(int(t) for t in text.split(",")))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise InvalidInputError(f"--batch {text!r}: expected positive integers separated by commas, e.g. 1,8,32")
    return values


def _source(args: argparse.Namespace) -> Tuple[str, Optional[str]]:
    for flag, kind in (("engine", "engine"), ("onnx", "onnx"), ("model", "model"), ("export_dir", "export-dir")):
        if getattr(args, flag):
            return kind, getattr(args, flag)
    return "all", None


def _check_args(args: argparse.Namespace) -> None:
    from ..errors import InvalidInputError

    if args.weights is not None and not args.model:
        raise InvalidInputError("--weights goes with --model NAME (an ONNX file, engine or export folder already holds its weights)")
    if args.img_size is not None and args.img_size < 1:
        raise InvalidInputError(f"--img-size must be a positive integer, got {args.img_size}")
    if args.threads is not None and args.threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {args.threads}")
    if args.max_images is not None and not args.data:
        raise InvalidInputError("--max-images limits the accuracy images: it needs --data DIR")
    if args.data:
        from ..bench.accuracy import select_samples

        select_samples(args.data, args.split, args.max_images)  # a bad folder or split is an error now, not after the timing


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
    args = _parser().parse_args(argv)
    _check_args(args)
    from ..bench.environment import collect_environment
    from ..bench.machine import usable_cores
    from ..bench.matrix import BenchOptions, env_summary, make_plan
    from ..bench.memory import DEFAULT_MEMORY_RUNS, MIN_MEMORY_RUNS
    from ..bench.report import format_report, write_outputs
    from ..bench.runner import finish, run_jobs
    from ..bench.timing import TimingConfig

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    timing = TimingConfig(warmup=args.warmup, iters=args.iters, min_time=args.min_time)
    runtimes = _list(args.runtime, RUNTIME_CHOICES, "--runtime", {"torch": "pytorch", "ort": "onnxruntime", "trt": "tensorrt"})
    precisions = _list(args.precision, ("fp32", "fp16", "int8"), "--precision")
    env = collect_environment()
    threads = args.threads or usable_cores()
    # A quick run (--iters N) gets a memory loop of the same length: between 3 and the default 20 inferences.
    memory_runs = min(DEFAULT_MEMORY_RUNS, max(MIN_MEMORY_RUNS, args.iters)) if args.iters else DEFAULT_MEMORY_RUNS
    opts = BenchOptions(runtimes=runtimes, precisions=precisions, batches=_batches(args.batch), img_size=args.img_size, timing=timing,
                        threads=threads, data=args.data, split=args.split, max_images=args.max_images, env=env_summary(env), memory_runs=memory_runs,
                        gpu=bool((env.get("gpu") or {}).get("present")))
    kind, value = _source(args)
    settings = {
        "command": "lightseg-bench " + " ".join(argv), "source": kind, "value": value, "weights": args.weights,
        "runtimes": list(runtimes) if runtimes else None, "precisions": list(precisions) if precisions else None,
        "batches": list(opts.batches), "img_size": args.img_size, "threads": threads, "timing": timing.to_dict(),
        "timing_description": timing.describe(), "memory_runs": opts.memory_runs, "data": args.data, "split": args.split,
        "max_images": args.max_images, "process_per_job": True,
    }
    with _terminate_as_interrupt():
        plan = make_plan(kind, value, opts, weights=args.weights, progress=progress)

        def save_partial(rows, left: int) -> None:
            # JSON/CSV only (no claims, no figures): cheap enough after every job, and a killed run keeps its rows
            if left and (args.json or args.csv):
                partial = finish(list(plan.rows) + rows, [], env, {**settings, "partial": f"{left} job(s) not run yet"}, plan.notes, claims=False)
                write_outputs(partial, args.json, args.csv)

        try:
            rows = list(plan.rows) + run_jobs(plan.jobs, isolate=True, environment=env, progress=progress, on_rows=save_partial)
            report = finish(rows, plan.models, env, settings, plan.notes, progress)
        finally:
            plan.cleanup()
    written = write_outputs(report, args.json, args.csv, args.markdown, args.plot)  # files first: a closed stdout must not lose them
    print(format_report(report))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0 if report.counts["ok"] else 1


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
