"""``python -m lightseg_edge.bench.worker JOB.json OUT.json``: run one benchmark job in a fresh process.

The parent (``bench.runner``) writes the job, this process measures it with ``jobs.run_job`` and writes the rows.
A fresh process per job keeps each job's RSS, thread pools and allocator state its own, and a backend that crashes
the interpreter (a segfault in a native library) costs one row, not the run.

When the job file says ``"progress": true``, the accuracy step reports on stderr in lines of its own
(``progress_line``); the parent takes those out of the stderr it keeps and shows them as a bar.
"""

from __future__ import annotations

import json
import sys
from typing import Optional, Tuple

PROGRESS_PREFIX = "lightseg-bench-progress "


def progress_line(done: int, total: int) -> str:
    return f"{PROGRESS_PREFIX}{int(done)} {int(total)}\n"


def parse_progress_line(line: str) -> Optional[Tuple[int, int]]:
    """(done, total) of a ``progress_line``; None for any other line (it is the worker's own stderr)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    parts = line[len(PROGRESS_PREFIX):].split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _report(done: int, total: int) -> None:
    sys.stderr.write(progress_line(done, total))
    sys.stderr.flush()  # the parent shows it now, not when the buffer fills


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m lightseg_edge.bench.worker JOB.json OUT.json", file=sys.stderr)
        return 2
    from .._atomic import write_text_atomic
    from .jobs import Job, run_job

    with open(args[0], encoding="utf-8") as f:
        spec = json.load(f)
    job = Job.from_dict(spec["job"])
    rows = run_job(job, spec.get("environment"), on_accuracy=_report if spec.get("progress") else None)
    write_text_atomic(args[1], json.dumps([r.to_dict() for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
