"""The channels-first LayerNorm in deploy form: Transpose + LayerNormalization (old) against reductions over the
channel axis (new, ``ChannelLayerNorm2d``), under ONNX Runtime and OpenVINO on CPU.

    python benchmarks/deploy_forms.py [--models ucmnet,egeunet,unext_s] [--rounds 7] [--iters 50] [--threads 2]
                                      [--pause-pid PID] [--out bench-results]

For each model that has a ``LayerNorm2d`` (shipped weights, else random ones with ``--seed``), a child process (so
this one holds no torch thread pool competing with the runtimes') builds two deploy forms from the same weights:

- ``old``: ``deploy()`` with every ``ChannelLayerNorm2d`` put back as ``LayerNorm2d`` (permute + ``F.layer_norm``),
  which exports as Transpose -> LayerNormalization -> Transpose: the deploy form before the rewrite;
- ``new``: ``deploy()`` as it is, ReduceMean over axis 1 ... in NCHW, no Transposes;

checks both against the training form on the committed ISIC sample images (max |logit difference|, masks), exports
each to ONNX (``export_onnx``, opset 17, batch 1, the model's input size) and simplifies it as ``lightseg-export``
does, and counts the graph's nodes. This process then times ``infer()`` on one preprocessed real image, batch 1, on
``--threads`` threads, with ONNX Runtime fp32 and, if OpenVINO is installed, OpenVINO f32 (the ONNX converted with
``openvino.convert_model``, weights kept fp32, ``inference_precision="f32"``). The two forms are interleaved: each
round times ``--iters`` calls of each (old then new, then new then old, ...); a form's figure is the median of its
round medians; the median of the per-round ratios (old and new of one round ran back to back) is given beside it,
as it is the figure that survives a change of machine speed between rounds. The machine load (load averages, other processes' CPU share) is recorded per model and runtime.

Writes ``deploy_forms.json`` and ``deploy_forms.md`` into ``--out``; exit status 0, or 1 when a deploy form is not
equivalent (max |dlogit| above ``--atol`` or a mask pixel flipped) or the two ONNX files disagree under ONNX Runtime.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from prepost import _median_ms  # noqa: E402  (one timing loop for the benchmark scripts)

SAMPLE = ROOT / "tests" / "assets" / "isic_sample" / "images"
FORMS = ("old", "new")


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ucmnet,egeunet,unext_s", help="comma-separated registry models with a LayerNorm2d")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per form and round (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per form before the rounds (default 10)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runtimes", default="onnxruntime,openvino", help="onnxruntime and/or openvino (skipped when not installed)")
    p.add_argument("--seed", type=int, default=0, help="random-weight seed for models without shipped weights")
    p.add_argument("--atol", type=float, default=1e-4, help="max |dlogit| allowed between a deploy form and the training form")
    p.add_argument("--pause-pid", type=int, help="SIGSTOP this process while measuring (SIGCONT afterwards)")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--export-to", help=argparse.SUPPRESS)  # the child process: export into this folder and exit
    return p.parse_args(argv)


# -- the child process: both deploy forms, checked and exported ---------------------------------------------------------
def old_form(model: Any) -> Any:
    """``model.deploy()`` with each ``ChannelLayerNorm2d`` back as a ``LayerNorm2d`` over the same Parameters."""
    from lightseg_edge.models._layers import ChannelLayerNorm2d, LayerNorm2d

    deployed = model.deploy()
    found = [(parent, name, child) for parent in deployed.modules() for name, child in parent.named_children()
             if isinstance(child, ChannelLayerNorm2d)]
    for parent, name, child in found:
        ln = LayerNorm2d(child.channels, eps=child.eps)
        ln.weight, ln.bias = child.weight, child.bias
        setattr(parent, name, ln)
    return deployed.eval()


def _sample_batch(name: str) -> np.ndarray:
    from lightseg_edge.data.io import read_image
    from lightseg_edge.data.transforms import preprocess_batch
    from lightseg_edge.models import get_model_config

    return preprocess_batch([read_image(p) for p in sorted(SAMPLE.iterdir())], get_model_config(name).preprocess)


def _export_child(folder: Path, models: List[str], seed: int) -> Dict[str, Any]:
    import copy

    import onnx
    import torch

    from lightseg_edge.export.onnx_export import check_onnx, export_onnx, input_spec
    from lightseg_edge.export.simplify import simplify_onnx
    from lightseg_edge.models import create_model, get_model_config
    from lightseg_edge.models._layers import LayerNorm2d
    from lightseg_edge.models._weights import has_pretrained

    info: Dict[str, Any] = {}
    for name in models:
        shipped = has_pretrained(name)
        torch.manual_seed(seed)
        train = create_model(name, pretrained=shipped).eval()
        n_ln = sum(isinstance(m, LayerNorm2d) for m in train.modules())
        if not n_ln:
            info[name] = {"error": "no LayerNorm2d in this model: nothing to compare"}
            continue
        forms = {"old": old_form(copy.deepcopy(train)), "new": copy.deepcopy(train).deploy()}
        x = torch.from_numpy(_sample_batch(name))
        rec: Dict[str, Any] = {"weights": "shipped" if shipped else f"random:{seed}", "layer_norms": n_ln, "images": len(x), "forms": {}}
        with torch.no_grad():
            ref = train(x)
            for form, model in forms.items():
                out = model(x)
                onnx_path = folder / name / f"{form}.onnx"
                onnx_path.parent.mkdir(parents=True, exist_ok=True)
                raw = export_onnx(model, onnx_path.with_suffix(".raw.onnx"), input_spec(1, get_model_config(name).input_size, False))
                _, simplifier = simplify_onnx(raw, onnx_path)
                check_onnx(onnx_path)
                ops = Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)
                rec["forms"][form] = {
                    "onnx": str(onnx_path), "simplifier": simplifier, "nodes": sum(ops.values()),
                    "ops": {k: ops.get(k, 0) for k in ("LayerNormalization", "Transpose", "ReduceMean", "Sqrt", "Div", "Mul")},
                    "max_abs_vs_training": float((out.double() - ref.double()).abs().max()),
                    "mask_pixels_flipped": int(((out > 0) != (ref > 0)).sum()),
                }
        info[name] = rec
    return info


# -- this process: timing ------------------------------------------------------------------------------------------------
def _predictors(runtime: str, model: str, rec: Dict[str, Any], work: Path, threads: int) -> Dict[str, Any]:
    from lightseg_edge.models import get_model_config

    pre = get_model_config(model).preprocess
    out = {}
    for form in FORMS:
        onnx_path = Path(rec["forms"][form]["onnx"])
        if runtime == "onnxruntime":
            from lightseg_edge.runtimes.onnxruntime_backend import OnnxRuntimePredictor

            out[form] = OnnxRuntimePredictor(onnx_path, pre, threads=threads)
        else:
            import openvino as ov

            from lightseg_edge.runtimes.openvino_backend import OpenVINOPredictor

            xml = work / model / f"{form}.xml"
            ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
            out[form] = OpenVINOPredictor(xml, pre, threads=threads, inference_precision="f32")
    return out


def _time_pair(preds: Dict[str, Any], batch: np.ndarray, args: argparse.Namespace) -> Dict[str, Any]:
    from lightseg_edge.bench.machine import load_between, snapshot

    for form in FORMS:
        for _ in range(args.warmup):
            preds[form].infer(batch)
    rounds: Dict[str, List[float]] = {f: [] for f in FORMS}
    before = snapshot()
    for r in range(args.rounds):
        for form in (FORMS if r % 2 == 0 else FORMS[::-1]):
            time.sleep(0.05)  # let the other session's worker threads stop spinning
            rounds[form].append(_median_ms(lambda: preds[form].infer(batch), args.iters))
    load = load_between(before, snapshot(), threads=args.threads)
    med = {f: statistics.median(v) for f, v in rounds.items()}
    return {"rounds_ms": rounds, "median_ms": med, "spread_ms": {f: [min(v), max(v)] for f, v in rounds.items()},
            "new_over_old": med["new"] / med["old"],
            # old and new of one round ran back to back: their ratio survives a change of machine speed between rounds
            # (this VM has been seen to switch between two speeds ~2x apart), which the ratio of medians does not
            "paired_new_over_old": statistics.median(b / a for a, b in zip(rounds["old"], rounds["new"])), "loadavg_before": load["loadavg_before"],
            "loadavg_after": load["loadavg_after"], "other_cpu_share": load["other_cpu_share"], "cpu_mhz": load["cpu"].get("current_mhz")}


def _markdown(result: Dict[str, Any]) -> str:
    s = result["settings"]
    lines = ["# Channels-first LayerNorm deploy forms: Transpose + LayerNormalization (old) vs channel reductions (new)", "",
             f"Created {result['created']}; batch 1, the model's input size (256x256), {s['threads']} threads, fp32; "
             f"{s['rounds']} interleaved rounds of {s['iters']} `infer()` calls per form, median of round medians"
             + (f"; process {s['pause_pid']} (training) stopped while measuring" if s.get("pause_pid") else "") + ".", "",
             "| model | runtime | old ms | new ms | new / old | median of per-round new / old | old round medians (min-max) | new round medians (min-max) | load avg 1 min | other processes' CPU share |",
             "|---|---|---:|---:|---:|---:|---|---|---|---:|"]
    for model, m in result["models"].items():
        for runtime, t in m.get("timing", {}).items():
            if "error" in t:
                lines.append(f"| {model} | {runtime} | - | - | - | - | {t['error']} | | | |")
                continue
            med, spr = t["median_ms"], t["spread_ms"]
            load = "-" if not t["loadavg_before"] else f"{t['loadavg_before'][0]:.2f} -> {t['loadavg_after'][0]:.2f}"
            share = "-" if t["other_cpu_share"] is None else f"{t['other_cpu_share']:.0%}"
            lines.append(f"| {model} | {runtime} | {med['old']:.2f} | {med['new']:.2f} | {t['new_over_old']:.3f} | {t['paired_new_over_old']:.3f} | "
                         f"{spr['old'][0]:.2f}-{spr['old'][1]:.2f} | {spr['new'][0]:.2f}-{spr['new'][1]:.2f} | {load} | {share} |")
    lines += ["", "Equivalence on the committed ISIC sample images (PyTorch, each deploy form against the training form) and the "
              "exported graphs (after simplification):", "",
              "| model | weights | LayerNorm2d | form | max abs dlogit vs training | mask pixels flipped | ONNX nodes | LayerNormalization | Transpose | ReduceMean | ORT old vs new max abs dlogit |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, m in result["models"].items():
        if "error" in m:
            lines.append(f"| {model} | - | - | - | {m['error']} | | | | | | |")
            continue
        for form in FORMS:
            f = m["forms"][form]
            ort = f"{m['ort_old_vs_new_max_abs']:.2e}" if m.get("ort_old_vs_new_max_abs") is not None else "-"
            lines.append(f"| {model} | {m['weights']} | {m['layer_norms']} | {form} | {f['max_abs_vs_training']:.2e} | "
                         f"{f['mask_pixels_flipped']} | {f['nodes']} | {f['ops']['LayerNormalization']} | {f['ops']['Transpose']} | "
                         f"{f['ops']['ReduceMean']} | {ort} |")
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.export_to:
        info = _export_child(Path(args.export_to), models, args.seed)
        (Path(args.export_to) / "info.json").write_text(json.dumps(info, indent=2))
        return 0

    from lightseg_edge._optional import is_available
    from lightseg_edge.bench.report import atomic_write

    runtimes = [r for r in args.runtimes.split(",") if r]
    result: Dict[str, Any] = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "settings": {k: v for k, v in vars(args).items() if k != "export_to"}, "models": {}, "notes": []}
    failed = False
    with tempfile.TemporaryDirectory(prefix="deploy-forms-") as tmp:
        work = Path(tmp)
        print(f"exporting old and new deploy forms of {', '.join(models)} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--export-to", str(work), "--models", ",".join(models), "--seed", str(args.seed)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: exporting failed: {done.stderr.strip()[-1500:]}")
        info = json.loads((work / "info.json").read_text())
        result["models"] = info
        if args.pause_pid:
            os.kill(args.pause_pid, signal.SIGSTOP)
        try:
            for model, rec in info.items():
                if "error" in rec:
                    continue
                for form, f in rec["forms"].items():
                    if f["max_abs_vs_training"] > args.atol or f["mask_pixels_flipped"]:
                        failed = True
                        result["notes"].append(f"{model} {form}: NOT equivalent to the training form (max |dlogit| "
                                               f"{f['max_abs_vs_training']:.2e}, {f['mask_pixels_flipped']} mask pixels flipped)")
                images = _sample_batch(model)
                batch = images[:1]
                rec["timing"] = {}
                for runtime in runtimes:
                    if not is_available(runtime):
                        rec["timing"][runtime] = {"error": f"{runtime} is not installed"}
                        continue
                    preds = _predictors(runtime, model, rec, work, args.threads)
                    outs = {f: np.concatenate([p.infer(images[i:i + 1]) for i in range(len(images))]) for f, p in preds.items()}
                    diff = float(np.abs(outs["old"].astype(np.float64) - outs["new"]).max())
                    rec[f"{'ort' if runtime == 'onnxruntime' else 'ov'}_old_vs_new_max_abs"] = diff
                    if diff > args.atol:
                        failed = True
                        result["notes"].append(f"{model}: the two ONNX files disagree under {runtime} (max |dlogit| {diff:.2e})")
                    t = _time_pair(preds, batch, args)
                    rec["timing"][runtime] = t
                    for p in preds.values():
                        p.close()
                    time.sleep(0.2)
                    print(f"{model} {runtime}: old {t['median_ms']['old']:.2f} ms, new {t['median_ms']['new']:.2f} ms, "
                          f"new/old {t['new_over_old']:.3f}, paired {t['paired_new_over_old']:.3f} (old vs new max |dlogit| {diff:.1e}; load "
                          f"{t['loadavg_before'][0] if t['loadavg_before'] else '?'}, other CPU {t['other_cpu_share']})",
                          file=sys.stderr, flush=True)
        finally:
            if args.pause_pid:
                os.kill(args.pause_pid, signal.SIGCONT)
    try:
        from lightseg_edge.bench.environment import collect_environment
        from lightseg_edge.bench.matrix import env_summary

        result["environment"] = env_summary(collect_environment())
    except Exception as exc:  # noqa: BLE001 - the environment is a record, not the measurement
        result["environment"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        import openvino

        result["environment"]["openvino"] = openvino.__version__
    except ImportError:
        pass
    shares = [t["other_cpu_share"] for m in info.values() for t in m.get("timing", {}).values() if t.get("other_cpu_share") is not None]
    if shares and max(shares) > 0.1:
        result["notes"].append(f"other processes used up to {max(shares):.0%} of the CPU during some measurements: those figures are "
                               f"inflated; the old/new ratio is less affected (the forms are interleaved)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for rec in info.values():  # temp paths mean nothing after the run
        for f in rec.get("forms", {}).values():
            f["onnx"] = Path(f["onnx"]).name
    atomic_write(out / "deploy_forms.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(out / "deploy_forms.md", _markdown(result).encode())
    print(_markdown(result))
    print(f"wrote {out / 'deploy_forms.json'} and {out / 'deploy_forms.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
