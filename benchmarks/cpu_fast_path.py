"""The CPU fast path: each zoo model's deploy forms on ONNX Runtime, OpenVINO and LiteRT (fp32), as ratios to the
baseline export measured side by side in one run.

    python benchmarks/cpu_fast_path.py [--models ucmnet,lmsaunet,...] [--rounds 9] [--iters 40] [--threads 2]
                                       [--pause-pid PID] [--out bench-results]

Variants of one model, all fp32 and through the project's own predictors (``infer()`` on one preprocessed real
ISIC image, batch 1):

- ``ort-baseline``: ONNX Runtime on the export as it was before the deploy-form work: ``deploy()`` with every
  ``ChannelLayerNorm2d`` put back as ``LayerNorm2d`` (Transpose -> LayerNormalization -> Transpose) and UCM-Net's
  block doubling kept, simplified by onnxsim with all its passes (which folds each GELU's 0.5 into the next 1x1
  conv, so ONNX Runtime cannot fuse the GELU); for a model without a LayerNorm, its default deploy form, simplified
  that way. Every ratio is to this one.
- ``ort-default``: ONNX Runtime on today's default deploy form (what ``lightseg-export`` writes as ``model.onnx``);
- ``ort-default-extended``: the same with ``graph_optimization_level="extended"``, i.e. without ONNX Runtime's NCHWc
  layout (one of the settings the export's CPU default times);
- ``ov-default``: OpenVINO (``inference_precision`` f32) on the default form;
- ``ov-openvino``: OpenVINO on the model's OpenVINO deploy form, where it has one (what the openvino target converts);
- ``litert-default``: LiteRT (XNNPACK) fp32 converted from the default form as the tflite target converts a model
  without a LiteRT form, where litert-torch is installed;
- ``litert-litert``: LiteRT on the model's LiteRT deploy form, where it has one (what the tflite target converts).

A child process (so this one holds no torch thread pool) builds the forms from the same weights (shipped, else
random with ``--seed``), checks each against the training form on the eight committed ISIC sample images (max
|dlogit|, flipped mask pixels), and exports it to ONNX (batch 1 and batch 8, simplified as ``lightseg-export``
does). This process runs every variant on the eight images (max |dlogit| against PyTorch's training form, min mask
Dice), then times them interleaved: each round times ``--iters`` calls of every variant, in reversed order every
other round; a variant's figure is the median of its round medians and its ratio the median of its per-round ratios
to the baseline (the baseline ran in the same round, so the ratio survives this VM's switches between two speeds
about 2x apart, which absolute figures do not). Machine load and other processes' CPU share are recorded per model.
The two fastest batch-1 variants are then timed at batch 8 (per-image figures, interleaved the same way).

Writes ``cpu_fast_path.json`` and ``.md`` into ``--out``; exit status 1 when a variant breaks the accuracy bar
(max |dlogit| >= 1e-3 or min mask Dice < 0.999).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "assets" / "isic_sample" / "images"
BASELINE = "ort-baseline"
MAX_DLOGIT, MIN_DICE = 1e-3, 0.999
# The bars, batch-1 p50 ratio to the baseline: (all runtimes, ONNX Runtime alone)
TARGETS = {"ucmnet": (0.40, 0.65), "lmsaunet": (0.45, None)}
BATCH_LARGE = 8
TITLE = "# CPU fast path: deploy forms on ONNX Runtime, OpenVINO and LiteRT (fp32), ratios to the baseline export\n\n"


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ucmnet,lmsaunet,lmsaunet_n32,egeunet,malunet,unext_s")
    # short rounds: this VM switches between two speeds about 2x apart, and a round that spans a switch is lost
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--iters", type=int, default=15, help="timed calls per variant and round (default 15)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="random-weight seed for models without shipped weights")
    p.add_argument("--pause-pid", type=int, action="append", default=[], help="SIGSTOP this process while measuring (repeatable)")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--export-to", help=argparse.SUPPRESS)  # the child process: export into this folder and exit
    return p.parse_args(argv)


def _sample_batch(name: str) -> np.ndarray:
    from lightseg_edge.data.io import read_image
    from lightseg_edge.data.transforms import preprocess_batch
    from lightseg_edge.models import get_model_config

    return preprocess_batch([read_image(p) for p in sorted(SAMPLE.iterdir())], get_model_config(name).preprocess)


# -- the child process: the forms, checked and exported ------------------------------------------------------------------
def baseline_form(train: Any) -> Any:
    """``deploy()`` with each ``ChannelLayerNorm2d`` back as the training form's ``LayerNorm2d`` and each in-place
    change ``deploy()`` makes to a block (UCM-Net's dropped doubling) undone."""
    from lightseg_edge.models._layers import ChannelLayerNorm2d

    deployed = copy.deepcopy(train).deploy()
    for path, child in list(deployed.named_modules()):
        if isinstance(child, ChannelLayerNorm2d):
            parent, _, name = path.rpartition(".")
            setattr(deployed.get_submodule(parent), name, copy.deepcopy(train.get_submodule(path)))
        elif hasattr(child, "doubled"):
            child.doubled = train.get_submodule(path).doubled
    return deployed.eval()


@contextlib.contextmanager
def _simplified_as_before():
    """onnxsim with all its passes, as the export ran before it kept GELUs fusable (lightseg_edge.export.simplify)."""
    from lightseg_edge.export import simplify

    kept, simplify._KEEP_GELU = simplify._KEEP_GELU, ()
    try:
        yield
    finally:
        simplify._KEEP_GELU = kept


def _export_child(folder: Path, models: List[str], seed: int) -> Dict[str, Any]:
    import torch

    from lightseg_edge.export.onnx_export import export_onnx, input_spec
    from lightseg_edge.export.simplify import simplify_onnx
    from lightseg_edge.models import create_model, get_model_config
    from lightseg_edge.models._weights import has_pretrained, pretrained_path, sha256_file

    info: Dict[str, Any] = {}
    for name in models:
        shipped = has_pretrained(name)
        torch.manual_seed(seed)
        train = create_model(name, pretrained=shipped).eval()
        forms = {"baseline": baseline_form(train), "default": copy.deepcopy(train).deploy()}
        forms.update({f.value: copy.deepcopy(train).deploy(f) for f in type(train).deploy_forms})
        x = torch.from_numpy(_sample_batch(name))
        size = get_model_config(name).input_size
        # which shipped weights: the accuracy columns belong to them (the timings do not depend on the weights)
        weights = f"shipped:{sha256_file(pretrained_path(name))[:12]}" if shipped else f"random:{seed}"
        rec: Dict[str, Any] = {"weights": weights, "forms": {}}
        with torch.no_grad():
            ref = train(x)
            np.save(folder / f"{name}-reference.npy", ref.numpy())
            for form, model in forms.items():
                out = model(x)
                paths = {}
                for batch in (1, BATCH_LARGE):
                    raw = export_onnx(model, folder / f"{name}-{form}-b{batch}.raw.onnx", input_spec(batch, size, False))
                    with _simplified_as_before() if form == "baseline" else contextlib.nullcontext():
                        paths[batch] = str(simplify_onnx(raw, folder / f"{name}-{form}-b{batch}.onnx")[0])
                rec["forms"][form] = {"onnx": paths, "torch_max_abs_vs_training": float((out.double() - ref.double()).abs().max()),
                                      "torch_mask_pixels_flipped": int(((out > 0) != (ref > 0)).sum())}
            rec["tflite"] = {f: _tflite(forms[f], folder / f"{name}-{f}", size) for f in ("default", "litert") if f in forms}
        info[name] = rec
    return info


def _tflite(model: Any, stem: Path, size: Any) -> Dict[str, str]:
    """{batch: .tflite path} of the default form, converted as the tflite target does; {} without litert-torch."""
    from lightseg_edge._optional import is_available

    if not is_available("litert_torch"):
        return {}
    from lightseg_edge.export.targets.litert import convert_fp32

    out = {}
    for batch in (1, BATCH_LARGE):
        path = Path(f"{stem}-b{batch}.tflite")
        try:
            path.write_bytes(convert_fp32(model, (batch, 3, *size)))
        except Exception as exc:  # noqa: BLE001 - a model the converter cannot take is a note, not a failed run
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out[str(batch)] = str(path)
    return out


# -- this process --------------------------------------------------------------------------------------------------------
def _variants(model: str, rec: Dict[str, Any], work: Path, threads: int, batch: int) -> Dict[str, Any]:
    import openvino as ov

    from lightseg_edge.models import get_model_config
    from lightseg_edge.runtimes.onnxruntime_backend import OnnxRuntimePredictor
    from lightseg_edge.runtimes.openvino_backend import OpenVINOPredictor

    pre, out = get_model_config(model).preprocess, {}
    forms = rec["forms"]
    out[BASELINE] = OnnxRuntimePredictor(forms["baseline"]["onnx"][str(batch)], pre, threads=threads)
    out["ort-default"] = OnnxRuntimePredictor(forms["default"]["onnx"][str(batch)], pre, threads=threads)
    out["ort-default-extended"] = OnnxRuntimePredictor(forms["default"]["onnx"][str(batch)], pre, threads=threads,
                                                       graph_optimization_level="extended")
    for form in [f for f in forms if f in ("default", "openvino")]:
        xml = work / f"{model}-{form}-b{batch}.xml"
        ov.save_model(ov.convert_model(forms[form]["onnx"][str(batch)]), str(xml), compress_to_fp16=False)
        out[f"ov-{form}"] = OpenVINOPredictor(xml, pre, threads=threads, inference_precision="f32")
    for form, files in rec["tflite"].items():
        if files.get(str(batch)):
            from lightseg_edge.runtimes.litert_backend import LiteRTPredictor

            out[f"litert-{form}"] = LiteRTPredictor(files[str(batch)], pre, threads=threads)
    return out


def _accuracy(preds: Dict[str, Any], images: np.ndarray, ref: np.ndarray) -> Dict[str, Dict[str, float]]:
    from lightseg_edge.metrics import Confusion, dice

    acc = {}
    for name, p in preds.items():
        out = np.concatenate([p.infer(images[i:i + 1]) for i in range(len(images))])
        dices = [dice(Confusion.of(a > 0, b > 0)) for a, b in zip(out, ref)]
        acc[name] = {"max_abs_dlogit": float(np.abs(out.astype(np.float64) - ref).max()), "min_mask_dice": float(min(dices))}
    return acc


def _interleaved(preds: Dict[str, Any], batch: np.ndarray, args: argparse.Namespace) -> Dict[str, Any]:
    from lightseg_edge.bench.machine import load_between, snapshot
    from lightseg_edge.bench.timing import interleaved_rounds

    iters = max(5, args.iters // len(batch))  # about the same time per round at batch 8 as at batch 1

    calls = {n: (lambda p=p: p.infer(batch)) for n, p in preds.items()}
    before = snapshot()
    per = interleaved_rounds(calls, args.rounds, iters, args.warmup)
    load = load_between(before, snapshot(), threads=args.threads)
    rounds = {n: [ms / len(batch) for ms in v] for n, v in per.items()}
    base = next(iter(preds))
    return {"rounds_ms": rounds, "median_ms": {n: statistics.median(v) for n, v in rounds.items()},
            "ratio": {n: statistics.median(b / a for a, b in zip(rounds[base], v)) for n, v in rounds.items()},
            "ratio_range": {n: [min(b / a for a, b in zip(rounds[base], v)), max(b / a for a, b in zip(rounds[base], v))]
                            for n, v in rounds.items()},
            "loadavg_before": load["loadavg_before"], "loadavg_after": load["loadavg_after"],
            "other_cpu_share": load["other_cpu_share"], "cpu_mhz": load["cpu"].get("current_mhz")}


def _verdict(model: str, t: Dict[str, Any]) -> List[str]:
    bars = TARGETS.get(model)
    if not bars:
        return []
    best = min((r, n) for n, r in t["ratio"].items() if n != BASELINE)
    best_ort = min(r for n, r in t["ratio"].items() if n.startswith("ort-") and n != BASELINE)
    lines = [f"{model}: best {best[1]} {best[0]:.3f} vs bar {bars[0]:.2f}: {'PASS' if best[0] <= bars[0] else 'FAIL'}"]
    if bars[1] is not None:
        lines.append(f"{model}: best ONNX Runtime {best_ort:.3f} vs bar {bars[1]:.2f}: {'PASS' if best_ort <= bars[1] else 'FAIL'}")
    return lines


def _load_cell(t: Dict[str, Any]) -> str:
    load = "-" if not t["loadavg_before"] else f"{t['loadavg_before'][0]:.2f}->{t['loadavg_after'][0]:.2f}"
    share = "-" if t["other_cpu_share"] is None else f"{t['other_cpu_share']:.0%}"
    return f"{load} | {share}"


def markdown(result: Dict[str, Any]) -> str:
    s = result["settings"]
    """The Markdown tables of a run (also the README's ``cpu-fast-path`` block)."""
    lines = [f"Created {result['created']}; {result['environment'].get('cpu', '?')}; batch 1, 256x256, {s['threads']} threads; "
             f"{s['rounds']} interleaved rounds of {s['iters']} `infer()` calls per variant (batch 8: {max(5, s['iters'] // BATCH_LARGE)}); ratio = median of per-round ratios to "
             f"`{BASELINE}` (same round)" + ("; training processes stopped while measuring" if s.get("pause_pid") else "") + ".", "",
             "| model | variant | ms (median of rounds) | round medians min-max | ratio to baseline | per-round ratios min-max | max abs dlogit | min mask Dice | load avg 1 min | other processes' CPU |",
             "|---|---|---:|---|---:|---|---:|---:|---|---:|"]
    for model, m in result["models"].items():
        t, acc = m["timing"], m["accuracy"]
        for n, ms in t["median_ms"].items():
            r = t["rounds_ms"][n]
            lo, hi = t["ratio_range"][n]
            lines.append(f"| {model} | {n} | {ms:.2f} | {min(r):.2f}-{max(r):.2f} | {t['ratio'][n]:.3f} | {lo:.2f}-{hi:.2f} | "
                         f"{acc[n]['max_abs_dlogit']:.1e} | {acc[n]['min_mask_dice']:.4f} | {_load_cell(t)} |")
    lines += ["", f"Batch {BATCH_LARGE}, the two fastest batch-1 variants of each model and the baseline: ms per image.", "",
              "| model | variant | ms per image | ratio to baseline at batch 8 | load avg 1 min | other processes' CPU |", "|---|---|---:|---:|---|---:|"]
    for model, m in result["models"].items():
        t = m.get("batch8")
        for n, ms in (t or {}).get("median_ms", {}).items():
            lines.append(f"| {model} | {n} | {ms:.2f} | {t['ratio'][n]:.3f} | {_load_cell(t)} |")
    lines += ["", "Targets (batch-1 ratio to the baseline):", ""] + [f"- {v}" for v in result["verdicts"]]
    if result["notes"]:
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _measure(model: str, rec: Dict[str, Any], work: Path, args: argparse.Namespace, result: Dict[str, Any]) -> None:
    images, ref = _sample_batch(model), np.load(work / f"{model}-reference.npy").astype(np.float64)
    preds = _variants(model, rec, work, args.threads, 1)
    rec["accuracy"] = _accuracy(preds, images, ref)
    for n, a in rec["accuracy"].items():
        if a["max_abs_dlogit"] >= MAX_DLOGIT or a["min_mask_dice"] < MIN_DICE:
            result["notes"].append(f"{model} {n}: breaks the fp32 accuracy bar (max |dlogit| {a['max_abs_dlogit']:.1e}, "
                                   f"min mask Dice {a['min_mask_dice']:.4f})")
    rec["timing"] = t = _interleaved(preds, images[:1], args)
    for p in preds.values():
        p.close()
    fastest = sorted((r, n) for n, r in t["ratio"].items() if n != BASELINE)[:2]
    big = _variants(model, rec, work, args.threads, BATCH_LARGE)
    keep = {n: big[n] for n in [BASELINE] + [n for _, n in fastest]}
    rec["batch8"] = _interleaved(keep, images[:BATCH_LARGE], args)
    for p in big.values():
        p.close()
    result["verdicts"] += _verdict(model, t)
    print(f"{model}: " + ", ".join(f"{n} {t['median_ms'][n]:.2f} ms ({t['ratio'][n]:.3f})" for n in t["ratio"]), file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.export_to:
        info = _export_child(Path(args.export_to), models, args.seed)
        (Path(args.export_to) / "info.json").write_text(json.dumps(info, indent=2))
        return 0

    from lightseg_edge.bench.environment import collect_environment
    from lightseg_edge.bench.matrix import env_summary
    from lightseg_edge.bench.report import atomic_write

    result: Dict[str, Any] = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "settings": {k: v for k, v in vars(args).items() if k != "export_to"}, "models": {},
                              "verdicts": [], "notes": []}
    with tempfile.TemporaryDirectory(prefix="cpu-fast-path-") as tmp:
        work = Path(tmp)
        print(f"exporting the deploy forms of {', '.join(models)} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--export-to", str(work), "--models", ",".join(models), "--seed", str(args.seed)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: exporting failed: {done.stderr.strip()[-1500:]}")
        result["models"] = info = json.loads((work / "info.json").read_text())
        for pid in args.pause_pid:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
            for model, rec in info.items():
                _measure(model, rec, work, args, result)
        finally:
            for pid in args.pause_pid:
                os.kill(pid, signal.SIGCONT)
    import openvino
    import onnxruntime

    env = env_summary(collect_environment())
    result["environment"] = {**env, "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}
    shares = [m[k]["other_cpu_share"] for m in info.values() for k in ("timing", "batch8") if m[k].get("other_cpu_share") is not None]
    if shares and max(shares) > 0.1:
        result["notes"].append(f"other processes used up to {max(shares):.0%} of the CPU during some measurements: absolute figures "
                               f"are inflated; the ratios less so (the variants are interleaved)")
    for model, rec in info.items():  # temp paths mean nothing after the run
        for form, files in rec["tflite"].items():
            if "error" in files:
                result["notes"].append(f"{model}: LiteRT conversion of the {form} form failed: {files['error']}")
        rec.pop("tflite")
        for f in rec["forms"].values():
            f.pop("onnx")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "cpu_fast_path.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(out / "cpu_fast_path.md", (TITLE + markdown(result)).encode())
    print(markdown(result))
    return 1 if any("breaks" in n for n in result["notes"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
