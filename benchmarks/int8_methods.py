"""INT8 routes and calibration methods compared on masks, not on tensor error.

    python benchmarks/int8_methods.py --onnx exports/ucmnet/model.onnx --data ../shared/data/isic2018 --out benchmarks/results

From one FP32 ONNX (written by ``lightseg-export``, which records its preprocessing in the ONNX metadata), each
route makes a Q/DQ INT8 model calibrated on the same seeded ``train`` images (``--calib-images``, the calibration
list hashed), with nothing kept in higher precision (``--int8-keep none``: the calibration alone is compared). Each
is scored like an export scores its variants: ONNX Runtime CPU predictor, ``--images`` held-out ``val`` images,
mDice against the ground truth, its change against FP32 and the mask agreement (Dice) with the FP32 masks; also the
worst image's agreement, since one broken image hides in a mean. Routes:

- ``ort``: ONNX Runtime ``quantize_static`` with ``minmax``, ``entropy`` (2048-bin histogram) and ``percentile``;
- ``modelopt``: NVIDIA ModelOpt ONNX PTQ with ``max`` (minmax) and ``entropy`` (skipped when not installed).

Seconds are wall time on this machine under its load at the time (recorded), for orientation only. Writes
``int8_methods.json`` and ``int8_methods.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

ROUTES = (("ort", "minmax"), ("ort", "entropy"), ("ort", "percentile"), ("modelopt", "minmax"), ("modelopt", "entropy"))


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True, help="an FP32 model.onnx written by lightseg-export")
    p.add_argument("--data", required=True, help="dataset root: train split for calibration, val split for scoring")
    p.add_argument("--calib-images", type=int, default=400)
    p.add_argument("--images", type=int, default=100, help="held-out images scored (default 100, as the export)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from lightseg_edge._optional import is_available
    from lightseg_edge.export.accuracy import HeldoutScorer
    from lightseg_edge.export.images import calibration_set, heldout_set, load_inputs, load_masks
    from lightseg_edge.export.int8 import quantize_int8
    from lightseg_edge.runtimes.loader import load_predictor

    pre = load_predictor(args.onnx, runtime="onnxruntime", device="cpu").preprocess_config
    held = heldout_set(args.data, args.images, args.seed)
    calib = calibration_set(args.data, args.calib_images, args.seed)
    scorer = HeldoutScorer(load_inputs(held.samples, pre), load_masks(held.samples), 1, True, "val", pre)
    fp32 = scorer.measure(Path(args.onnx), "fp32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-methods-") as work:
        for route, method in ROUTES:
            if route == "modelopt" and not is_available("modelopt"):
                rows.append({"route": route, "method": method, "skipped": "nvidia-modelopt is not installed"})
                continue
            out = Path(work) / f"{route}-{method}.onnx"
            t0 = time.perf_counter()
            q = quantize_int8(Path(args.onnx), out, calib, pre, 1, method, False, route)
            seconds = time.perf_counter() - t0
            acc = scorer.measure(out, "int8")
            rows.append({"route": route, "method": method, "seconds": round(seconds, 1), "quantize_linear": q.quantize_linear,
                         "mdice": acc.mdice, "delta_mdice": acc.delta_mdice, "agreement": acc.agreement_dice,
                         "worst_image_agreement": acc.worst_agreement})
            print(rows[-1], flush=True)
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "onnx": str(args.onnx), "fp32_mdice": fp32.mdice, "images": len(held), "calibration": {
            "images": len(calib), "split": calib.split, "seed": args.seed, "list_sha256": calib.list_sha256()},
        "load_avg": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows,
    }


def markdown(report: dict) -> str:
    c = report["calibration"]
    lines = [f"UCM-Net FP32 ONNX (mDice {report['fp32_mdice']:.4f} on {report['images']} `val` images); every route calibrated on "
             f"the same {c['images']} `{c['split']}` images (seed {c['seed']}, list sha256 `{c['list_sha256'][:12]}`), nothing kept "
             f"in higher precision; agreement = mask Dice against the FP32 masks; seconds on {report['cpus']} cores, load "
             f"{report['load_avg'][0]:.1f}:", "",
             "| route | calibration | Q nodes | mDice | Δ mDice | agreement | worst image | seconds |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['route']} | {r['method']} | not run: {r['skipped']} | | | | | |")
            continue
        lines.append(f"| {r['route']} | {r['method']} | {r['quantize_linear']} | {r['mdice']:.4f} | {r['delta_mdice']:+.4f} | "
                     f"{r['agreement']:.4f} | {r['worst_image_agreement']:.4f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_methods.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "int8_methods.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
