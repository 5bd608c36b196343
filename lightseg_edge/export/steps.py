"""Timing, logging and error wrapping for the export steps, and the step table the CLI prints."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Type, TypeVar

from ..errors import ExportError

log = logging.getLogger("lightseg_edge.export")
T = TypeVar("T")

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass(frozen=True)
class StepRecord:
    name: str
    seconds: float
    status: str  # ok | skipped | failed
    output: str  # what the step produced (file, numbers), or why it was skipped / how it failed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


def concise(message: str, limit: int = 600) -> str:
    """One line, at most ``limit`` characters: library errors can run to pages (every missing state-dict key)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 25].rstrip() + f" ... [{len(text) - limit + 25} more chars]"


class StepLog:
    """Runs each step, times it, logs one line, and turns any failure into ``ExportError(step, message)``."""

    def __init__(self) -> None:
        self.records: List[StepRecord] = []

    def run(self, name: str, fn: Callable[[], T], describe: Callable[[T], str] = str,
            skip_on: Tuple[Type[BaseException], ...] = ()) -> Optional[T]:
        """``skip_on``: exceptions that mean "cannot run on this machine", recorded as a skipped step (None returned)."""
        log.info("[%s] ...", name)
        t0 = time.perf_counter()
        try:
            result = fn()
        except KeyboardInterrupt:
            self.records.append(StepRecord(name, time.perf_counter() - t0, FAILED, "interrupted"))
            raise
        except ExportError as exc:
            self.records.append(StepRecord(name, time.perf_counter() - t0, FAILED, str(exc)))
            raise
        except skip_on as exc:
            self.skip(name, f"not runnable here: {exc}")
            return None
        except Exception as exc:  # every failure of a step becomes an ExportError naming the step
            log.debug("step %s failed", name, exc_info=True)
            msg = concise(str(exc) or type(exc).__name__)
            self.records.append(StepRecord(name, time.perf_counter() - t0, FAILED, msg))
            raise ExportError(name, msg) from exc
        rec = StepRecord(name, time.perf_counter() - t0, OK, describe(result))
        self.records.append(rec)
        log.info("[%s] ok in %.1f s: %s", name, rec.seconds, rec.output)
        return result

    def skip(self, name: str, reason: str) -> None:
        self.records.append(StepRecord(name, 0.0, SKIPPED, reason))
        log.info("[%s] skipped: %s", name, reason)

    def last(self, name: str) -> Optional[StepRecord]:
        for rec in reversed(self.records):
            if rec.name == name:
                return rec
        return None


def format_table(records: Sequence[StepRecord], width: int = 100) -> str:
    """A plain-text table: step | status | seconds | output (long outputs wrapped)."""
    import textwrap

    rows: List[Tuple[str, str, str, str]] = [(r.name, r.status, f"{r.seconds:.1f}", r.output) for r in records]
    w_name = max([4] + [len(r[0]) for r in rows])
    w_status = max([6] + [len(r[1]) for r in rows])
    w_sec = max([7] + [len(r[2]) for r in rows])
    w_out = max(30, width - w_name - w_status - w_sec - 6)
    lines = [f"{'step':<{w_name}}  {'status':<{w_status}}  {'seconds':>{w_sec}}  output", "-" * (w_name + w_status + w_sec + 6 + w_out)]
    for name, status, sec, out in rows:
        wrapped = textwrap.wrap(out, w_out) or [""]
        lines.append(f"{name:<{w_name}}  {status:<{w_status}}  {sec:>{w_sec}}  {wrapped[0]}")
        pad = " " * (w_name + w_status + w_sec + 6)
        lines.extend(pad + more for more in wrapped[1:])
    total = sum(r.seconds for r in records)
    lines.append(f"{'total':<{w_name}}  {'':<{w_status}}  {total:>{w_sec}.1f}")
    return "\n".join(lines)
