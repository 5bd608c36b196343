"""``lightseg-bench --triton URL``: the command line of the Triton load sweep (``lightseg_edge.bench.triton_load``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List

from .._optional import require
from ..bench import triton_load
from ..serve.triton_server import DEFAULT_MODEL_NAME
from ._common import existing_dir, positive_float, positive_int, positive_int_list


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-bench --triton", description=triton_load.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triton", required=True, metavar="URL", help="the server's HTTP endpoint, e.g. 127.0.0.1:8000 or http://host:8000")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, metavar="NAME", help="the served model's name (default: %(default)s, lightseg-serve's)")
    p.add_argument("--data", type=existing_dir, required=True, metavar="DIR", help="real images: a dataset root or a folder of images")
    p.add_argument("--split", help="dataset split to take images from (default: all)")
    p.add_argument("--max-images", type=positive_int, default=triton_load.DEFAULT_MAX_IMAGES, metavar="N", help="images loaded and cycled through (default: %(default)s)")
    p.add_argument("--concurrency", type=positive_int_list, default=triton_load.DEFAULT_CONCURRENCY, metavar="LIST", help="client counts, e.g. 1,2,4,8 (the default)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--requests", type=positive_int, metavar="N", help=f"requests per concurrency level (default {triton_load.DEFAULT_REQUESTS})")
    budget.add_argument("--duration", type=positive_float, metavar="S", help="seconds per concurrency level instead")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def run_cli_args(argv: List[str]) -> int:
    args = parser().parse_args(argv)
    if args.json:
        from ..bench.report import check_output_path

        check_output_path(args.json, "--json")
    require("tritonclient.http", extra="serve", purpose="lightseg-bench --triton")
    images = triton_load.load_images(args.data, args.max_images, args.split)

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    progress(f"{len(images)} image(s) from {args.data}")
    report = triton_load.sweep(args.triton, args.model, images, args.concurrency,
                   requests=None if args.duration else (args.requests or triton_load.DEFAULT_REQUESTS), duration_s=args.duration, progress=progress)
    report["command"] = "lightseg-bench " + " ".join(argv)
    if args.json:
        from .._atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2, default=str))
        progress(f"wrote {args.json}")
    print(triton_load.format_table(report))
    return 0 if all(r["requests"] for r in report["levels"]) else 1
