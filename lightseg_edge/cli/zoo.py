"""``python -m lightseg_edge.cli.zoo``: the model-zoo table (see ``lightseg_edge.bench.zoo``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from ..bench import zoo
from ..bench.report import atomic_write
from ._common import run_cli


def _run(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m lightseg_edge.cli.zoo", description=zoo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", type=Path, help="a lightseg-bench --json report with ONNX Runtime fp32 batch-1 rows")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    p.add_argument("--readme", type=Path, help="replace the block between the zoo-table markers in this file with the table")
    args = p.parse_args(argv)
    if args.readme:
        zoo.replace_block(args.readme.read_text(), "", zoo.ZOO_BLOCK)  # no markers: an error now, before the MACs are counted
    text = zoo.zoo_markdown(zoo.zoo_rows(args.latency), args.latency)
    if args.markdown:
        atomic_write(args.markdown, text.encode())
    if args.readme:
        atomic_write(args.readme, zoo.replace_block(args.readme.read_text(), text, zoo.ZOO_BLOCK).encode())
    print(text, end="")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
