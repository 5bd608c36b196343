"""``python -m lightseg_edge.bench.worker JOB.json OUT.json``: run one benchmark job in a fresh process.

The parent (``bench.runner``) writes the job, this process measures it with ``jobs.run_job`` and writes the rows.
A fresh process per job keeps each job's RSS, thread pools and allocator state its own, and a backend that crashes
the interpreter (a segfault in a native library) costs one row, not the run.
"""

from __future__ import annotations

import json
import sys


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
    rows = run_job(job, spec.get("environment"))
    write_text_atomic(args[1], json.dumps([r.to_dict() for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
