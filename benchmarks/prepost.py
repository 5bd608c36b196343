"""Pre/post-processing overhead: ``predict()`` on a full-size image against inference alone, side by side.

    python benchmarks/prepost.py [--models ucmnet,lmsaunet] [--size 512] [--rounds 5] [--iters 50] [--pause-pid PID]

For each model (shipped weights, else seeded random ones) it exports an fp32 ONNX (in a child process: no torch
here) and times, with ONNX Runtime on
``--threads`` threads and batch 1, three things on the same real ISIC image resized to ``--size``:

- ``infer``: the network alone on an already preprocessed 1x3x256x256 input;
- ``predict``: uint8 RGB in, uint8 mask at the image's size out (resize, per-channel lookup-table normalisation,
  inference, logits resized and compared with logit(threshold));
- ``predict (float path)``: the same through the previous float implementation (normalise every pixel in float32,
  sigmoid over the full-size logits, then threshold), kept here as the reference;
- ``predict (band 1e-3)``: ``predict`` with the earlier fixed band of 1e-3 logits around logit(threshold) instead of
  ``transforms.logit_band``'s float32-derived one (a few millionths at 0.5): where a lesion boundary puts some
  resized logits inside the wide band, the call takes the slower exact path. ``post (band 1e-3)`` is the same for
  the post-processing stage alone.
- a new image each call: ``infer`` and ``predict``, each after decoding a fresh copy of the image from JPEG
  (untimed), as an application's loop over files does. A new image is allocated and the previous one freed between
  calls, which changes what malloc hands the call (a tight loop over one image can hide page faults). They run in
  fresh child processes that do nothing else, like a small application, alternately with and without the per-thread
  scratch plane the resized logits go into (``--no-scratch``: a fresh array per call, as before it existed), two
  processes each; the minor page faults per call are counted after the timing.

Rounds are interleaved (A B C, then C B A, ...); a figure is the median of its rounds' medians. The predict paths
must give identical masks, which the script checks.

Where the overhead goes: ``pre`` (resize + normalise) and ``post`` (logits to mask) are also timed alone, back to back
(their data stays in the cache), and inside a pre -> infer -> post loop like ``predict()``'s, each stage timed on
its own (after the network has streamed its activations through the caches, their data is cold).

Writes ``prepost.json`` and ``prepost.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ucmnet,lmsaunet")
    p.add_argument("--size", type=int, default=512, help="side of the square test image (default 512)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=50, help="timed calls per variant and round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pause-pid", type=int, help="SIGSTOP this process while measuring (SIGCONT afterwards)")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--app-loop", metavar="DIR", help=argparse.SUPPRESS)  # internal: the child process of _app_loops
    p.add_argument("--no-scratch", action="store_true", help=argparse.SUPPRESS)  # with --app-loop
    return p.parse_args(argv)


def _float_path(predictor, image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The previous implementation: float normalisation of every pixel, full-size sigmoid."""
    from lightseg_edge.data.transforms import logits_to_proba, normalize_per_pixel, proba_to_mask, resize_image

    cfg = predictor.preprocess_config
    batch = normalize_per_pixel(resize_image(image, cfg.size), cfg)[None]
    return proba_to_mask(logits_to_proba(predictor.infer(batch)[0], image.shape[:2]), threshold)


def _ratio(m: Dict[str, Any], key: str) -> str:
    return f"{m[key]:.2f}" if key in m else "-"  # results taken before the band variants have none


@contextlib.contextmanager
def _wide_band() -> Iterator[None]:
    """The earlier band, 1e-3 x max(1, |logit(threshold)|), in place of ``transforms.logit_band`` (same masks, more
    calls on the exact path)."""
    from lightseg_edge.data import transforms

    band = transforms.logit_band
    transforms.logit_band = lambda t: (band(t)[0], 1e-3 * max(1.0, abs(band(t)[0])))
    try:
        yield
    finally:
        transforms.logit_band = band


def _with_wide_band(fn, *args):
    with _wide_band():
        return fn(*args)


def _decoder(image: np.ndarray):
    """A setup that decodes a new RGB copy of ``image`` from JPEG bytes, like reading the next file."""
    import cv2

    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return lambda: cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _faults_per_call(prepared, calls: int) -> Optional[float]:
    """Minor page faults per call of a ``Prepared`` (setup excluded), or None where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    faults = 0
    for _ in range(calls):
        arg = prepared.setup()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        prepared.call(arg)
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults / calls


def _paired(rounds: Dict[str, List[float]], name: str, base: str = "infer") -> float:
    return statistics.median(a / b for a, b in zip(rounds[name], rounds[base]))


def _image(size: int) -> np.ndarray:
    import cv2

    from lightseg_edge.data.io import read_image

    sample = Path(__file__).resolve().parents[1] / "tests" / "assets" / "isic_sample" / "images"
    return cv2.resize(read_image(min(sample.iterdir())), (size, size), interpolation=cv2.INTER_LINEAR)


def _predictor(model: str, work: Path, threads: int):
    """Exported in a child process, so this one holds no torch thread pool competing with ONNX Runtime's."""
    from lightseg_edge.runtimes import load_predictor

    cmd = [sys.executable, "-m", "lightseg_edge.cli.export", "--model", model, "--output", str(work / model)]
    shipped = (Path(__file__).resolve().parents[1] / "lightseg_edge" / "models" / "weights" / f"{model}.safetensors").is_file()
    done = subprocess.run(cmd if shipped else cmd + ["--weights", "random"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: exporting {model} failed: {done.stderr.strip()[-500:]}")
    return load_predictor(str(work / model), runtime="onnxruntime", precision="fp32", threads=threads), "shipped" if shipped else "random"


def _stages(pred, image: np.ndarray, rounds: int, iters: int) -> Dict[str, float]:
    """Median ms of each stage of a pre -> infer -> post loop, every stage timed on its own."""
    from lightseg_edge.data.transforms import logits_to_mask, preprocess_batch

    cfg, times = pred.preprocess_config, {"pre": [], "infer": [], "post": []}
    for _ in range(rounds * iters):
        t0 = time.perf_counter()
        x = preprocess_batch([image], cfg)
        t1 = time.perf_counter()
        logits = pred.infer(x)
        t2 = time.perf_counter()
        logits_to_mask(logits[0], image.shape[:2], pred.threshold)
        t3 = time.perf_counter()
        for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[k].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def markdown(result: Dict[str, Any]) -> str:
    """The Markdown table of a run (also the README's ``prepost`` block)."""
    args = result["settings"]
    cpu = (result.get("environment") or {}).get("cpu")
    lines = [f"Created {result['created']}{'; ' + cpu if cpu else ''}; a real ISIC image resized to {args['size']}x{args['size']}, {args['threads']} threads, "
             f"{args['rounds']} interleaved rounds of {args['iters']} calls, median of round medians; ratios are medians of the per-round ratios.", "",
             "| model | weights | infer ms | predict ms | predict / infer | new image each call: predict / infer | the same without the scratch plane | float path ms | float path / infer | band 1e-3 / infer | masks identical | other processes' CPU share |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for model, m in result["models"].items():
        med = m["median_ms"]
        share = "-" if m["other_cpu_share"] is None else f"{m['other_cpu_share']:.0%}"
        fresh = [f"{m['new_image'][k]['predict_over_infer']:.2f}" if "new_image" in m else "-" for k in ("scratch", "no scratch")]
        lines.append(f"| {model} | {m['weights']} | {med['infer']:.2f} | {med['predict']:.2f} | {m['predict_over_infer']:.2f} | {' | '.join(fresh)} | "
                     f"{med['predict (float path)']:.2f} | {m['float_path_over_infer']:.2f} | {_ratio(m, 'wide_band_over_infer')} | {m['masks_identical']} | {share} |")
    staged = {model: m for model, m in result["models"].items() if "stages_ms" in m}
    if staged:
        lines += ["", "Where the overhead goes (ms): each stage alone (back to back, its data cached) and inside a pre -> infer -> post loop; "
                  "minor page faults per call with a new image decoded before each call.", "",
                  "| model | pre alone | pre in loop | infer in loop | post alone | post alone / with band 1e-3 | post in loop | page faults: infer | predict | predict without the scratch plane |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for model, m in staged.items():
            med, st, app = m["median_ms"], m["stages_ms"], m.get("new_image") or {}
            pf = [(app.get(setting) or {}).get("page_faults_per_call", {}).get(k) for setting, k in
                  (("scratch", "infer"), ("scratch", "predict"), ("no scratch", "predict"))]
            faults = " | ".join("-" if f is None else f"{f:.0f}" for f in pf)
            lines.append(f"| {model} | {med['pre']:.3f} | {st['pre']:.3f} | {st['infer']:.2f} | {med['post']:.3f} | {_ratio(m, 'post_over_wide_band_post')} | {st['post']:.3f} | {faults} |")
    return "\n".join(lines) + "\n"


def _app_loop(model_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """``infer`` and ``predict`` each after decoding a new image, timed interleaved, then their page faults counted;
    with ``--no-scratch`` the whole process runs without the scratch plane. Runs in a fresh process (see
    ``_app_loops``): what malloc hands a call depends on everything the process allocated before, so the two
    settings cannot share one."""
    from lightseg_edge.bench.timing import Prepared, interleaved_rounds
    from lightseg_edge.data import transforms
    from lightseg_edge.runtimes import load_predictor

    if args.no_scratch:
        transforms.SCRATCH_MAX_BYTES = 0
    image = _image(args.size)
    pred = load_predictor(str(model_dir), runtime="onnxruntime", precision="fp32", threads=args.threads)
    batch = transforms.preprocess_batch([image], pred.preprocess_config)
    variants = {"infer": Prepared(_decoder(image), lambda im: pred.infer(batch)), "predict": Prepared(_decoder(image), pred.predict)}
    rounds = interleaved_rounds(variants, args.rounds, args.iters, warmup=5)
    return {"predict_over_infer": _paired(rounds, "predict"), "median_ms": {k: statistics.median(v) for k, v in rounds.items()},
            "page_faults_per_call": {k: _faults_per_call(v, args.iters) for k, v in variants.items()}}


def _app_loops(model_dir: Path, args: argparse.Namespace, repeats: int = 2) -> Dict[str, Any]:
    """``_app_loop`` in fresh child processes, with and without the scratch plane alternately (A B A B)."""
    runs: Dict[str, List[Dict[str, Any]]] = {"scratch": [], "no scratch": []}
    for _ in range(repeats):
        for setting, runs_of in runs.items():
            cmd = [sys.executable, __file__, "--app-loop", str(model_dir), "--size", str(args.size), "--rounds", str(args.rounds),
                   "--iters", str(args.iters), "--threads", str(args.threads)] + (["--no-scratch"] if setting == "no scratch" else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"error: the application loop on {model_dir.name} failed: {done.stderr.strip()[-500:]}")
            runs_of.append(json.loads(done.stdout))
    return {setting: {"predict_over_infer": statistics.median(r["predict_over_infer"] for r in rs),
                      "page_faults_per_call": {k: statistics.median(r["page_faults_per_call"][k] or 0 for r in rs) for k in ("infer", "predict")},
                      "processes": rs} for setting, rs in runs.items()}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    if args.app_loop:
        print(json.dumps(_app_loop(Path(args.app_loop), args)))
        return 0
    from lightseg_edge.bench.machine import load_between, snapshot
    from lightseg_edge.bench.timing import interleaved_rounds
    from lightseg_edge.bench.report import atomic_write
    from lightseg_edge.data.transforms import logits_to_mask, preprocess_batch

    image = _image(args.size)
    result: Dict[str, Any] = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "settings": vars(args), "models": {}}
    if args.pause_pid:
        os.kill(args.pause_pid, signal.SIGSTOP)
    try:
        with tempfile.TemporaryDirectory(prefix="prepost-") as work:
            for model in [m for m in args.models.split(",") if m]:
                pred, weights = _predictor(model, Path(work), args.threads)
                batch = preprocess_batch([image], pred.preprocess_config)
                mask = pred.predict(image)
                same = bool(np.array_equal(mask, _float_path(pred, image))
                            and np.array_equal(mask, _with_wide_band(pred.predict, image)))
                logits = pred.infer(batch)
                variants = {"infer": lambda: pred.infer(batch), "predict": lambda: pred.predict(image),
                            "predict (float path)": lambda: _float_path(pred, image),
                            "predict (band 1e-3)": lambda: _with_wide_band(pred.predict, image),
                            "pre": lambda: preprocess_batch([image], pred.preprocess_config),
                            "post": lambda: logits_to_mask(logits[0], image.shape[:2], pred.threshold),
                            "post (band 1e-3)": lambda: _with_wide_band(logits_to_mask, logits[0], image.shape[:2], pred.threshold)}
                before = snapshot()
                rounds = interleaved_rounds(variants, args.rounds, args.iters, warmup=5)
                load = load_between(before, snapshot())
                app = _app_loops(Path(work) / model, args)
                med = {k: statistics.median(v) for k, v in rounds.items()}
                stages = _stages(pred, image, args.rounds, args.iters)
                result["models"][model] = {"weights": weights, "masks_identical": same, "rounds_ms": rounds, "median_ms": med,
                                           # per-round ratios: the variants of one round ran back to back, so the
                                           # ratio survives this VM's switches between speeds, which medians do not
                                           "predict_over_infer": _paired(rounds, "predict"),
                                           "float_path_over_infer": _paired(rounds, "predict (float path)"),
                                           "wide_band_over_infer": _paired(rounds, "predict (band 1e-3)"),
                                           "post_over_wide_band_post": _paired(rounds, "post", "post (band 1e-3)"),
                                           "new_image": app, "stages_ms": stages,
                                           "loadavg": load["loadavg_before"], "other_cpu_share": load["other_cpu_share"]}
                pred.close()
                print(f"{model}: infer {med['infer']:.2f} ms, predict {med['predict']:.2f} ms "
                      f"({_paired(rounds, 'predict'):.2f}x; new image each call {app['scratch']['predict_over_infer']:.2f}x, "
                      f"without the scratch plane {app['no scratch']['predict_over_infer']:.2f}x), float path {med['predict (float path)']:.2f} ms; masks identical: {same}",
                      file=sys.stderr, flush=True)
    finally:
        if args.pause_pid:
            os.kill(args.pause_pid, signal.SIGCONT)
    from lightseg_edge.bench.environment import collect_environment
    from lightseg_edge.bench.matrix import env_summary

    result["environment"] = env_summary(collect_environment())  # after the timing: the probe does not run during it
    text = "# predict() vs inference alone (ONNX Runtime fp32, batch 1)\n\n" + markdown(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "prepost.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(out / "prepost.md", text.encode())
    print(text)
    return 0 if all(m["masks_identical"] for m in result["models"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
