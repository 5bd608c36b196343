"""ONNX Runtime vs PyTorch eager on CPU, side by side in one run: the issue's performance targets.

    nice -n 19 python benchmarks/ort_vs_eager.py [--out bench-results/] [--passes 2] [--iters 50] [--threads 2]

Targets (batch 1, 256x256, 2 CPU threads, compute-only p50 of the same weights):
- ucmnet:   ONNX Runtime fp32 p50 <= 0.5 x PyTorch eager p50
- lmsaunet: ONNX Runtime fp32 p50 <= 0.7 x PyTorch eager p50 (relies on the exact conv-based bicubic of deploy())
- INT8 ONNX vs fp32 ONNX on CPU: reported, no target.

Method: each model is exported once with seeded random weights (the export's parity step
checks ONNX Runtime against PyTorch on real images, proving the weights are the same); then every (model, variant)
job runs in a fresh process (``lightseg_edge.bench.runner.run_isolated``) with ``--warmup`` untimed and ``--iters``
timed calls of ``infer`` on one preprocessed image. Jobs are interleaved: pass 1 runs them in order, pass 2 in
reverse order, and so on, so a change in machine load hits both sides of each ratio. A variant's p50 is the median of
its per-pass p50s. Load averages and other processes' CPU share are recorded per job: on a loaded machine (e.g. a
training job on the same cores) multi-threaded PyTorch stalls in OpenMP barriers, which the ratios then reflect.

Writes ``ort_vs_eager.json`` and ``ort_vs_eager.md`` into ``--out`` and prints PASS/FAIL per target. Exit status: 0
all targets met, 1 a target missed, 2 a measurement failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

TARGETS = {"ucmnet": 0.5, "lmsaunet": 0.7}


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-results", help="output folder (default bench-results/)")
    p.add_argument("--models", default="ucmnet,lmsaunet", help="comma-separated registry models (default ucmnet,lmsaunet)")
    p.add_argument("--passes", type=int, default=2, help="interleaved passes (default 2)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per job (default 10)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per job and pass (default 50)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random-weight seed shared by the export and PyTorch (default 0)")
    p.add_argument("--calib-images", type=int, default=16, help="INT8 calibration images from the data's train split (default 16; INT8 speed does not depend on it)")
    p.add_argument("--data", help="dataset root for the export's parity check and INT8 calibration (default: ISIC 2018 copy or the test sample)")
    return p.parse_args(argv)


def _export(model: str, out: Path, args: argparse.Namespace) -> Any:
    from lightseg_edge.export import ExportConfig, export

    cfg = ExportConfig(model=model, weights="random", seed=args.seed, int8=True, calib_data=args.data or _default_data(),
                       calib_images=args.calib_images, output=str(out), data=args.data, parity_images=4, eval_images=4,
                       fp16_check_images=4, engine="off", progress=False)
    return export(cfg)


def _default_data() -> Optional[str]:
    from lightseg_edge.export.images import default_image_root

    return default_image_root()


def _jobs(model: str, folder: Path, args: argparse.Namespace) -> Dict[str, Any]:
    from lightseg_edge.bench.jobs import Job
    from lightseg_edge.bench.timing import TimingConfig

    common = dict(model=model, batches=(1,), threads=args.threads, timing=TimingConfig(warmup=args.warmup, iters=args.iters).to_dict(),
                  memory_runs=0, e2e=False, weights_label=f"random:{args.seed}", accuracy=False, device="cpu")
    return {
        "eager": Job(kind="model", source=model, runtime="pytorch", precision="fp32", weights=f"random:{args.seed}", **common),
        "ort_fp32": Job(kind="export-dir", source=str(folder), runtime="onnxruntime", precision="fp32", **common),
        "ort_int8": Job(kind="export-dir", source=str(folder), runtime="onnxruntime", precision="int8", **common),
    }


def _row_record(row: Any) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"status": row.status, "reason": row.reason}
    if row.ok and row.latency is not None:
        lat = row.latency
        rec.update(p50_ms=lat.p50, mean_ms=lat.mean, min_ms=lat.min, p90_ms=lat.p90, p99_ms=lat.p99, n=lat.n)
    m = row.machine or {}
    rec.update(loadavg_before=m.get("loadavg_before"), other_cpu_share=m.get("other_cpu_share"), torch_imported=(row.process or {}).get("torch_imported"))
    return rec


def _median_p50(passes: List[Dict[str, Any]]) -> Optional[float]:
    vals = [p["p50_ms"] for p in passes if p.get("p50_ms") is not None]
    return statistics.median(vals) if len(vals) == len(passes) and vals else None


def markdown_tables(result: Dict[str, Any]) -> str:
    """The per-variant table and the checks table (also what the README shows)."""
    lines = ["| model | variant | p50 per pass (ms) | p50 (median of passes) | load avg 1 min | other processes' CPU share |",
             "|---|---|---|---|---|---|"]
    for model, m in result["models"].items():
        for name, v in m["variants"].items():
            per = " / ".join("-" if p.get("p50_ms") is None else f"{p['p50_ms']:.2f}" for p in v["passes"])
            loads = " / ".join("-" if not p.get("loadavg_before") else f"{p['loadavg_before'][0]:.2f}" for p in v["passes"])
            share = " / ".join("-" if p.get("other_cpu_share") is None else f"{p['other_cpu_share']:.0%}" for p in v["passes"])
            lines.append(f"| {model} | {name} | {per} | {'-' if v['p50_ms'] is None else format(v['p50_ms'], '.2f')} | {loads} | {share} |")
    lines += ["", "| check | ratio | target | verdict |", "|---|---|---|---|"]
    for c in result["checks"]:
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.3f}"
        lines.append(f"| {c['name']} | {ratio} | {c['target'] if c['target'] is not None else 'none (reported)'} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def _markdown(result: Dict[str, Any]) -> str:
    lines = ["# ONNX Runtime vs PyTorch eager (CPU)", "", f"Created {result['created']}; {result['settings_text']}.", "",
             markdown_tables(result), "Parity of the exported weights (ONNX Runtime vs PyTorch, max |logit difference| on real images): "
             + ", ".join(f"{k}: {v}" for k, v in result["parity"].items()), ""]
    if result.get("notes"):
        lines += [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    from lightseg_edge.bench.environment import collect_environment
    from lightseg_edge.bench.matrix import env_summary
    from lightseg_edge.bench.report import atomic_write
    from lightseg_edge.bench.runner import run_isolated

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    env = collect_environment()
    out_dir = Path(args.out)
    result: Dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"batch": 1, "img_size": 256, "threads": args.threads, "warmup": args.warmup, "iters": args.iters, "passes": args.passes,
                     "seed": args.seed, "measure": "compute-only p50 of infer() on one preprocessed 1x3x256x256 image, fresh process per job"},
        "environment": env_summary(env), "models": {}, "checks": [], "parity": {}, "notes": [],
    }
    result["settings_text"] = (f"batch 1, 256x256, {args.threads} threads, {args.warmup} warm-up + {args.iters} timed calls per job, "
                               f"{args.passes} interleaved passes, each job in a fresh process")
    failed = False
    with tempfile.TemporaryDirectory(prefix="ort-vs-eager-") as work:
        jobs: Dict[str, Dict[str, Any]] = {}
        for model in models:
            print(f"exporting {model} (fp32 + int8, random weights seed {args.seed}) ...", file=sys.stderr, flush=True)
            res = _export(model, Path(work) / model, args)
            par = res.parity.to_dict() if res.parity is not None else {}
            result["parity"][model] = f"{par['max_abs']:.2e} on {par.get('images')} images" if "max_abs" in par else "not recorded"
            jobs[model] = _jobs(model, res.output, args)
            result["models"][model] = {"export": str(res.output), "variants": {k: {"passes": []} for k in jobs[model]}}
        order = [(m, k) for m in models for k in jobs[m]]
        for p in range(args.passes):
            seq = order if p % 2 == 0 else list(reversed(order))
            for model, key in seq:
                print(f"pass {p + 1}/{args.passes}: {model} {key} ...", file=sys.stderr, flush=True)
                row = run_isolated(jobs[model][key], timeout=1800)[0]
                rec = _row_record(row)
                result["models"][model]["variants"][key]["passes"].append(rec)
                print(f"   {'p50 %.2f ms' % rec['p50_ms'] if rec.get('p50_ms') is not None else row.status + ': ' + str(row.reason)}"
                      f" (load {rec['loadavg_before'][0] if rec.get('loadavg_before') else '?'})", file=sys.stderr, flush=True)
    for model in models:
        variants = result["models"][model]["variants"]
        for v in variants.values():
            v["p50_ms"] = _median_p50(v["passes"])
        eager, o32, o8 = (variants[k]["p50_ms"] for k in ("eager", "ort_fp32", "ort_int8"))
        target = TARGETS.get(model)
        ratio = None if eager is None or o32 is None else o32 / eager
        verdict = "FAILED TO MEASURE" if ratio is None else ("PASS" if target is None or ratio <= target else "FAIL")
        failed |= ratio is None
        result["checks"].append({"name": f"{model}: ONNX Runtime fp32 p50 / PyTorch eager p50", "ratio": ratio, "target": target, "verdict": verdict})
        r8 = None if o8 is None or o32 is None else o8 / o32
        result["checks"].append({"name": f"{model}: INT8 ONNX p50 / fp32 ONNX p50", "ratio": r8, "target": None,
                                 "verdict": "reported" if r8 is not None else "FAILED TO MEASURE"})
        failed |= r8 is None
    passes = [p for m in result["models"].values() for v in m["variants"].values() for p in v["passes"]]
    shares = [p["other_cpu_share"] for p in passes if p.get("other_cpu_share") is not None]
    loads = [p["loadavg_before"][0] for p in passes if p.get("loadavg_before")]
    if shares and max(shares) > 0.1:
        result["notes"].append(f"other processes used up to {max(shares):.0%} of the CPU during some jobs (1-min load average "
                               f"{min(loads or [0]):.2f}-{max(loads or [0]):.2f} on {env_summary(env).get('cores')} cores): those passes are "
                               f"inflated, multi-threaded PyTorch most (OpenMP barrier stalls); compare the per-pass figures")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "ort_vs_eager.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(out_dir / "ort_vs_eager.md", _markdown(result).encode())
    for c in result["checks"]:
        ratio = "-" if c["ratio"] is None else f"{c['ratio']:.3f}"
        tgt = f" (target <= {c['target']})" if c["target"] is not None else ""
        print(f"{c['verdict']:>8}  {c['name']}: {ratio}{tgt}")
    for n in result["notes"]:
        print(f"note: {n}")
    print(f"wrote {out_dir / 'ort_vs_eager.json'} and {out_dir / 'ort_vs_eager.md'}", file=sys.stderr)
    if failed:
        return 2
    return 1 if any(c["verdict"] == "FAIL" for c in result["checks"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
