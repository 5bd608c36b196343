"""lightseg-compare: run two predictor sources on the same real images and report how far apart they are.

A and B are anything load_predictor accepts: a registry model name (shipped weights), a trainer checkpoint or
.safetensors (with --model when it does not record its model), an export folder (--precision-a/-b pick its
artifact), an .onnx file or a TensorRT engine. Examples:

  lightseg-compare ucmnet exports/ucmnet --precision-b fp16 --data data/isic2018 --out cmp --json cmp.json
  lightseg-compare exports/ucmnet exports/ucmnet --precision-a fp32 --precision-b int8 --min-agreement 0.98 --max-delta 0.01

Exit codes: 0 compared (and every gate passed), 1 a gate failed (one line on stderr says which), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .._progress import progress_bar
from ..runtimes.registry import runtime_names
from ..types import PRECISION_NAMES
from ._common import default_data_dir, existing_dir, non_negative_float, non_negative_int, output_dir, positive_int, probability, run_cli

RUNTIMES = ("auto",) + runtime_names()
PRECISIONS = PRECISION_NAMES
SPLITS = ("train", "val", "test", "all")
DEFAULT_SPLIT = "val"
DEFAULT_WORST = 5


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="reference: registry model name, checkpoint/.safetensors, export folder, .onnx or engine")
    p.add_argument("b", metavar="B", help="candidate, the same kinds as A")
    p.add_argument("--data", type=existing_dir, default=default_data_dir(),
                   help="dataset root (layout auto-detected; ground truth when it has masks) or a folder of images "
                        "(default: $LIGHTSEG_ISIC2018, else ./data/isic2018)")
    p.add_argument("--split", choices=SPLITS,
                   help=f"dataset split (default {DEFAULT_SPLIT}; 'all' for every image; not for a plain image folder)")
    p.add_argument("--images", type=positive_int, metavar="N", help="compare on the first N images only")
    for side in ("a", "b"):
        p.add_argument(f"--precision-{side}", choices=PRECISIONS,
                       help=f"{side.upper()}'s precision: which artifact of an export folder (default: the folder's own)")
        p.add_argument(f"--runtime-{side}", choices=RUNTIMES, default="auto", help=f"{side.upper()}'s runtime (default: auto)")
    p.add_argument("--model", metavar="NAME",
                   help="registry model of a checkpoint, .safetensors or bare .onnx source that does not record it")
    p.add_argument("--device", help="cpu, cuda or cuda:N for both sides (default: the best available for each runtime)")
    p.add_argument("--threshold", type=probability, default=0.5, help="mask threshold on the lesion probability (default: %(default)s)")
    p.add_argument("--worst", type=non_negative_int, default=DEFAULT_WORST, metavar="K",
                   help="list the K images where A and B agree least, and save their overlays with --out (default: %(default)s)")
    p.add_argument("--out", type=output_dir, metavar="DIR", help="write the worst images' overlays (A, B and ground-truth outlines) here")
    p.add_argument("--json", metavar="PATH", help="write everything, per image, as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the summary and the worst images as Markdown")
    p.add_argument("--min-agreement", type=probability, metavar="X", help="gate: the dataset-level A-vs-B mask Dice must be >= X")
    p.add_argument("--max-delta", type=non_negative_float, metavar="X",
                   help="gate: |mDice B - mDice A| against the ground truth must be <= X")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    from ..bench.report import check_output_path
    from ..errors import InvalidInputError

    seen: Dict[str, str] = {}
    for flag in ("--json", "--markdown"):
        path = getattr(args, flag[2:])
        if path is None:
            continue
        key = os.path.realpath(str(check_output_path(path, flag)))
        if key in seen:
            raise InvalidInputError(f"{flag} {path}: {seen[key]} writes the same file; give each output its own path")
        seen[key] = flag


def _check_model(args: argparse.Namespace) -> None:
    """--model goes to file sources only (a folder or a registry name names its own model); checked before loading."""
    from ..errors import InvalidInputError
    from ._common import check_model

    if args.model is None:
        return
    if not any(Path(s).is_file() for s in (args.a, args.b)):
        raise InvalidInputError(f"--model {args.model}: applies to a checkpoint, .safetensors or .onnx file source; "
                                f"neither A nor B is a file")
    check_model(args.model)  # imports the zoo (torch): only when the user names a model


def _load(label: str, source: str, runtime: str, precision: Optional[str], args: argparse.Namespace) -> Any:
    from ..errors import LightsegError
    from ..runtimes import load_predictor

    options: Dict[str, Any] = {"threshold": args.threshold}
    if precision:
        options["precision"] = precision
    if args.model and Path(source).is_file():
        options["model"] = args.model
    try:
        return load_predictor(source, runtime=runtime, device=args.device, **options)
    except LightsegError as exc:
        raise LightsegError(f"{label}: {exc}" if source in str(exc) else f"{label} ({source}): {exc}") from exc


def _report(args: argparse.Namespace, argv: List[str], images, comparison, gates, overlays: List[str]) -> Dict[str, Any]:
    from dataclasses import asdict

    body = comparison.to_dict()
    per_image = body.pop("images")
    return {"command": "lightseg-compare " + " ".join(argv),
            "data": {"root": str(images.root.resolve()), "layout": images.layout, "split": images.split, "images": len(images.samples),
                     "available": images.available, "ground_truth": images.has_truth},
            **body, "gates": [asdict(g) for g in gates], "passed": all(g.passed for g in gates), "overlays": overlays,
            "images": per_image}


def _write_overlays(out: Path, comparison, kept, samples) -> List[str]:
    from .._atomic import make_dir, remove_stale_temporaries
    from ..bench.compare import overlay, overlay_name
    from ..data.io import read_image, write_png_atomic

    make_dir(out, "--out")
    remove_stale_temporaries(out)  # what a killed run's atomic writes left behind
    written = []
    for rank, (i, mask_a, mask_b, truth) in enumerate(kept, start=1):
        record = comparison.images[i]
        path = out / overlay_name(rank, record)
        write_png_atomic(path, overlay(read_image(samples[i].image), mask_a, mask_b, truth, comparison, record))
        written.append(str(path))
    return written


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    from contextlib import ExitStack

    from .._atomic import write_text_atomic
    from ..bench.compare import Side, check_gates, compare, format_console, format_markdown, select_images
    from ..errors import DataError

    _check_outputs(args)
    _check_model(args)
    if not args.data:
        raise DataError("no images: pass --data DIR (a dataset root or a folder of images) or set LIGHTSEG_ISIC2018")
    images = select_images(args.data, args.split, args.images, DEFAULT_SPLIT)
    if args.max_delta is not None and not images.has_truth:
        raise DataError(f"--max-delta needs ground truth: {images.missing_truth} of the {len(images.samples)} images in {args.data} "
                        f"have no mask")
    data_line = images.describe()
    print(data_line, flush=True)
    with ExitStack() as stack:
        a = stack.enter_context(_load("A", args.a, args.runtime_a, args.precision_a, args))
        b = stack.enter_context(_load("B", args.b, args.runtime_b, args.precision_b, args))
        print(f"{Side.of('A', a).describe()}\n{Side.of('B', b).describe()}", flush=True)
        with progress_bar(len(images.samples), "compare", enabled=not args.no_progress) as bar:
            comparison, kept = compare(a, b, images.samples, args.threshold, args.worst, on_image=lambda _: bar.update(1))
    gates = check_gates(comparison.summary, args.min_agreement, args.max_delta)
    overlays = _write_overlays(Path(args.out), comparison, kept, images.samples) if args.out and kept else []
    written = list(overlays)
    if args.json:
        report = _report(args, argv, images, comparison, gates, overlays)
        written.append(str(write_text_atomic(args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")))
    if args.markdown:
        written.append(str(write_text_atomic(args.markdown, format_markdown(comparison, gates, data_line))))
    print(format_console(comparison, gates, sides=False))
    for path in written:
        print(f"wrote {path}")
    failed = [g.reason for g in gates if not g.passed]
    if failed:
        print(f"gate failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
