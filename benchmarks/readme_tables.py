"""Regenerate the README's measured tables from the files in ``benchmarks/results/``: nothing in them is typed by hand.

    python benchmarks/readme_tables.py            # rewrite every block in README.md
    python benchmarks/readme_tables.py --check    # exit 1 if README.md differs from what the files give (tested)

Each block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in README.md. The files come from the
project's own commands, run on a quiet machine (pause any training first: ``kill -STOP <pid>``):

- ``zoo-table`` and ``claims-table``: the shipped model cards and ``results/zoo-latency.json`` from
  ``lightseg-bench --all --runtime onnxruntime --precision fp32 --threads 2 --json benchmarks/results/zoo-latency.json``;
- ``precision-table``: ``results/export-ucmnet.json``, the manifest written by ``lightseg-export --model ucmnet
  --formats onnx,openvino,tflite,coreml,tensorrt --fp16 --int8 --calib-data DATA --data DATA --output OUT`` (copied
  from ``OUT/manifest.json``);
- ``int8-methods``: ``results/int8_methods.json`` from ``python benchmarks/int8_methods.py --onnx OUT/model.onnx
  --data DATA --out benchmarks/results`` (OUT: the precision table's export);
- ``triton-sweep``: ``results/triton-serve.json`` from ``lightseg-serve OUT --precision fp32 --runtime onnxruntime``
  and, beside it, ``lightseg-bench --triton 127.0.0.1:8000 --data DATA --split test --concurrency 1,2,4,8 --duration 10
  --json benchmarks/results/triton-serve.json``;
- ``bench-table``: ``results/bench-ucmnet.json`` from ``lightseg-bench --export-dir OUT --data DATA --threads 2
  --json benchmarks/results/bench-ucmnet.json``;
- ``cpu-targets``: ``results/ort_vs_eager.json`` from ``python benchmarks/ort_vs_eager.py --out benchmarks/results``;
- ``cpu-fast-path``: ``results/cpu_fast_path.json`` from ``python benchmarks/cpu_fast_path.py --out benchmarks/results``;
- ``prepost``: ``results/prepost.json`` from ``python benchmarks/prepost.py --rounds 9 --out benchmarks/results``;
- ``robustness``: ``results/robustness.json`` from ``python benchmarks/robustness.py --data DATA --out benchmarks/results``
  (accuracy only: the machine's load does not matter);
- ``tta``: ``results/tta.json`` from ``python benchmarks/tta.py --data DATA --out benchmarks/results`` (accuracy only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _report(name: str):
    from lightseg_edge.bench.records import BenchReport

    return BenchReport.from_dict(_json(name))


def _header(report) -> str:
    from lightseg_edge.bench.report import format_header

    return "```\n" + format_header(report) + "\n```\n"


def zoo_table() -> str:
    from lightseg_edge.bench.zoo import zoo_markdown, zoo_rows

    path = RESULTS / "zoo-latency.json"
    return zoo_markdown(zoo_rows(path), path)


def claims_table() -> str:
    from lightseg_edge.bench.report import format_claims_markdown

    report = _report("zoo-latency.json")
    return format_claims_markdown(report.claims, why=False) + "\n"


def precision_table() -> str:
    manifest = _json("export-ucmnet.json")
    acc, arts = manifest["accuracy"], manifest["artifacts"]
    lines = [f"{acc['images']} held-out images ({acc['source'].split(' of ')[0]}), each artifact on its own runtime's CPU predictor, "
             f"agreement = mask Dice vs the fp32 ONNX masks (dataset-level; worst = the lowest single image); INT8 calibrated on "
             f"{manifest['calibration']['images']} `{manifest['calibration']['split']}` images (list sha256 "
             f"`{manifest['calibration']['list_sha256'][:12]}`), seed {manifest['calibration'].get('seed', '–')}; kept = layers the "
             f"`--int8-keep`/`--fp16-keep` decision left in the higher precision:", "",
             "| artifact | runtime | mDice | Dice* | Δ mDice vs fp32 ONNX | agreement with fp32 ONNX | worst image | kept |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for v in acc["variants"].values():
        delta = "–" if v["variant"] == "fp32" else f"{v['delta_mdice']:+.4f}"
        flag = "" if v.get("within_expected", True) else " (beyond its allowance)"
        keep = arts.get(v["variant"], {}).get("keep")
        kept = f"{len(keep['kept'])} of {keep['candidates']}" if keep else "–"
        worst = f"{v['worst_agreement']:.4f}" if "worst_agreement" in v else "–"
        lines.append(f"| {v['variant']} | {v.get('runtime', 'onnxruntime')} | {v['mdice']:.4f} | {v['dice_star']:.4f} | {delta}{flag} | "
                     f"{v['agreement_dice']:.4f} | {worst} | {kept} |")
    for key, reason in (acc.get("not_scored") or {}).items():
        lines.append(f"| {key} | – | not scored: {reason} | | | | | |")
    return "\n".join(lines) + "\n"


def int8_methods_table() -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from int8_methods import markdown

    return markdown(_json("int8_methods.json"))


def triton_sweep() -> str:
    from lightseg_edge.bench.triton_load import format_table

    return "```\n" + format_table(_json("triton-serve.json")) + "\n```\n"


def bench_table() -> str:
    from lightseg_edge.bench.report import format_results_markdown

    report = _report("bench-ucmnet.json")
    return _header(report) + "\n" + format_results_markdown(report.results) + "\n"


def cpu_targets() -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ort_vs_eager import markdown_tables

    return markdown_tables(_json("ort_vs_eager.json"))


def _script_markdown(script: str, result: str) -> Callable[[], str]:
    def block() -> str:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        return __import__(script).markdown(_json(result))

    return block


BLOCKS: Dict[str, Callable[[], str]] = {
    "zoo-table": zoo_table, "claims-table": claims_table, "precision-table": precision_table, "int8-methods": int8_methods_table,
    "triton-sweep": triton_sweep,
    "bench-table": bench_table, "cpu-targets": cpu_targets,
    "cpu-fast-path": _script_markdown("cpu_fast_path", "cpu_fast_path.json"), "prepost": _script_markdown("prepost", "prepost.json"),
    "robustness": _script_markdown("robustness", "robustness.json"), "tta": _script_markdown("tta", "tta.json"),
}


def regenerate(document: str, names: List[str]) -> str:
    from lightseg_edge.bench.zoo import replace_block

    for name in names:
        document = replace_block(document, BLOCKS[name](), name)
    return document


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="do not write; exit 1 when README.md is not what the files give")
    p.add_argument("--blocks", default=",".join(BLOCKS), help=f"comma-separated subset of {','.join(BLOCKS)}")
    args = p.parse_args(argv)
    names = [n for n in args.blocks.split(",") if n]
    unknown = sorted(set(names) - set(BLOCKS))
    if unknown:
        p.error(f"--blocks: unknown {', '.join(unknown)}; expected some of {', '.join(BLOCKS)}")
    current = README.read_text(encoding="utf-8")
    fresh = regenerate(current, names)
    if args.check:
        if fresh != current:
            print("README.md differs from benchmarks/results/: run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    from lightseg_edge._atomic import write_text_atomic

    write_text_atomic(README, fresh)
    print(f"rewrote {', '.join(names)} in {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
