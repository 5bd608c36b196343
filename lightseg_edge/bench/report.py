"""Turning a ``BenchReport`` into a console table, JSON, CSV, Markdown and a PNG plot.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``; the temporary file is
removed on failure), so an interrupted run never leaves half a report that a script could mistake for a whole one.
The CSV holds the result rows; the claims table goes to a sibling ``<name>.claims.csv``.

``check_output_path`` refuses, before any measurement, a path that cannot be written; ``save_fallback`` keeps the
measurements when writing still fails at the end (a full disk).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .._atomic import describe_os_error, write_bytes_atomic
from ..errors import InvalidInputError, OutputError
from ..metrics import expected_drop
from .environment import cpu_label
from .records import BenchReport, BenchResult, ClaimCheck

PathLike = Union[str, "os.PathLike[str]"]

RESULT_COLUMNS = ("model", "runtime", "prec", "batch", "status", "params", "GMACs", "size MB", "load MB", "peak MB",
                  "p50 ms", "p99 ms", "e2e p50", "img/s", "mDice", "dmDice")


# ---------------------------------------------------------------------------------------------------------- helpers
def atomic_write(path: PathLike, data: bytes) -> Path:
    """``data`` to ``path`` through a temporary file and a rename; OutputError (one line naming the path) on failure."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a folder; expected a file path to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder ({describe_os_error(exc)})") from exc
    return write_bytes_atomic(path, data)


def check_output_path(path: PathLike, flag: str) -> Path:
    """Refuse, naming ``flag``, an output path that cannot be written: it must name a file in an existing, writable
    folder. Checked before any measurement, so a typo costs nothing."""
    p = Path(path)
    parent = p.parent
    if p.is_dir():
        problem = "it is a folder"
    elif not parent.exists():
        problem = f"its folder {parent} does not exist"
    elif not parent.is_dir():
        problem = f"{parent} is a file, not a folder"
    elif not os.access(str(parent), os.W_OK | os.X_OK):
        problem = f"its folder {parent} is not writable"
    else:
        return p
    raise InvalidInputError(f"{flag} {p}: expected a file path in an existing, writable folder, but {problem}")


def save_fallback(report: BenchReport) -> str:
    """Where the full report went when the requested files could not be written: a JSON file in the system's
    temporary folder or, when that fails too, standard output."""
    name = f"lightseg-bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    try:
        return str(write_json(report, Path(tempfile.gettempdir()) / name))
    except (OSError, OutputError):
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, allow_nan=True) + "\n")
        sys.stdout.flush()
        return "standard output (the JSON printed above)"


def _num(value: Optional[float], fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _mb(value: Optional[float]) -> str:
    return _num(value, ".1f")


def _params(n: Optional[float]) -> str:
    return "-" if n is None else f"{int(n):,}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _result_cells(r: BenchResult, note_ref: str = "") -> List[str]:
    lat, mem, acc = r.latency, r.memory, r.accuracy
    status = status_label(r) + (f" {note_ref}" if note_ref else "")
    return [
        r.model, r.runtime, r.precision, str(r.batch), status, _params(r.params), _num(None if r.macs is None else r.macs / 1e9, ".4f"),
        _num(None if r.size_bytes is None else r.size_bytes / 1e6, ".2f"), _mb(mem.load_delta_mb if mem else None),
        _mb(mem.inference_peak_delta_mb if mem else None), _num(lat.p50 if lat else None, ".2f"), _num(lat.p99 if lat else None, ".2f"),
        _num(r.e2e.p50 if r.e2e else None, ".2f"), _num(lat.throughput if lat else None, ".1f"), _num(acc.mdice if acc else None, ".4f"),
        _num(acc.delta_mdice if acc else None, "+.4f"),
    ]


def _row_notes(r: BenchResult) -> List[str]:
    """What a reader must know about a row: why it did not run, what it ran (test-time augmentation), why it has no
    accuracy, why its latency is noise."""
    if not r.ok:
        return [r.reason or ""]
    return [t for t in (_tta_note(r), r.noise, None if r.accuracy is not None else r.accuracy_note, _low_accuracy(r)) if t]


def _tta_note(r: BenchResult) -> Optional[str]:
    from ..data.tta import VIEWS, check_tta

    views = len(VIEWS[check_tta(r.tta)])
    return None if views == 1 else f"test-time augmentation '{r.tta}': {views} network runs per image, all in its latency, memory and mDice"


def _low_accuracy(r: BenchResult) -> Optional[str]:
    """Ultralytics' 'exported, but accuracy below threshold': the row ran, and lost more mDice than its precision may."""
    acc = r.accuracy
    if acc is None or acc.within_expected is not False:
        return None
    return (f"accuracy below threshold: {r.precision} loses {-acc.delta_mdice:.4f} mDice against {acc.reference} "
            f"(allowed {expected_drop(r.precision):.4f})")


def status_label(r: BenchResult) -> str:
    """The status a reader sees: ok, low-acc (ran, accuracy below its precision's allowance), skipped, failed."""
    return "low-acc" if r.ok and r.accuracy is not None and r.accuracy.within_expected is False else r.status


def _note_ref(r: BenchResult, notes: Dict[str, int]) -> str:
    """'[1][3]': footnote numbers for ``r``'s notes, numbering new texts as they come."""
    refs = []
    for text in _row_notes(r):
        notes.setdefault(text, len(notes) + 1)
        refs.append(f"[{notes[text]}]")
    return "".join(refs)


# ---------------------------------------------------------------------------------------------------------- console
def format_results(results: Sequence[BenchResult]) -> str:
    """The Table-4-style results table; reasons of skipped/failed rows and accuracy notes as numbered footnotes."""
    notes: Dict[str, int] = {}
    rows = [_result_cells(r, _note_ref(r, notes)) for r in results]
    right = [False] * 5 + [True] * (len(RESULT_COLUMNS) - 5)
    right[3] = True
    out = _table(RESULT_COLUMNS, rows, right)
    if notes:
        out += "\n\n" + "\n".join(f"[{i}] {text}" for text, i in notes.items())
    return out


def _claim_value(c: ClaimCheck, value: Optional[float], printed: bool = False) -> str:
    """A claim figure; ``printed``: as the paper prints it (no added digits)."""
    if value is None:
        return "-"
    if c.claim == "params":
        return f"{int(value):,}"
    return f"{value:g}" if printed else f"{value:.4f}"


def _real_memory(c: ClaimCheck) -> str:
    measured = (c.extra or {}).get("measured") or []
    if c.claim != "memory_mb" or not measured:
        return ""
    return ", ".join(f"{m['runtime']} {m['precision']} +{m['inference_peak_delta_mb']:.1f}" for m in measured)


def format_claims(claims: Sequence[ClaimCheck], width: int = 118, why: bool = True) -> str:
    header = ("model", "claim", "paper", "released", "ours", "verdict", "real inference RSS (MB)")
    rows = [[c.model, c.claim, _claim_value(c, c.paper, True), _claim_value(c, c.released, True), _claim_value(c, c.measured), c.verdict,
             _real_memory(c)] for c in claims]
    out = _table(header, rows, [False, False, True, True, True, False, False])
    reasons = [textwrap.fill(f"{c.model} {c.claim} ({c.verdict}): {c.why}", width=width, subsequent_indent="    ")
               for c in claims if c.verdict in ("differs", "not claimed", "not measured") or c.claim == "memory_mb"]
    if not reasons:
        return out
    return out + ("\n\nwhy:\n" + "\n".join(reasons) if why else "\n\n(--verbose gives the reason behind each verdict)")


def format_header(report: BenchReport) -> str:
    env = report.environment or {}
    cpu = env.get("cpu") or {}
    gpu = ", ".join(d.get("name") or "?" for d in (env.get("gpu") or {}).get("devices", [])) or "none"
    s = report.settings or {}
    lines = [
        f"machine: {cpu_label(cpu)}, {cpu.get('usable_cores')} usable cores, GPU: {gpu}; onnxruntime "
        f"{(env.get('onnxruntime') or {}).get('version')}, torch {(env.get('torch') or {}).get('version')}, TensorRT "
        f"{(env.get('tensorrt') or {}).get('version') or 'not installed'}",
        f"threads: {s.get('threads')}; timing: {s.get('timing_description')}; memory: {s.get('memory_runs')} inferences in a separate loop",
    ]
    loads = [r.machine.get("loadavg_before") for r in report.results if r.machine.get("loadavg_before")]
    others = [r.machine.get("other_cpu_share") for r in report.results if r.machine.get("other_cpu_share") is not None]
    if loads:
        lines.append(f"machine load during the run: 1-min load average {min(x[0] for x in loads):.2f}-{max(x[0] for x in loads):.2f} "
                     f"on {cpu.get('usable_cores')} cores; other processes used {min(others or [0]):.0%}-{max(others or [0]):.0%} of the CPU")
    noisy = [r for r in report.results if r.noise]
    if noisy:
        lines.append(f"{len(noisy)} of {sum(1 for r in report.results if r.latency)} timed rows are unreliable (load or spread, see the notes): "
                     f"do not quote their latencies")
    return "\n".join(lines)


def format_report(report: BenchReport, verbosity: int = 1) -> str:
    """The console report; ``verbosity`` 0: header and results only, 1: with the claims table, 2: with every claim's
    reason as well."""
    parts = [format_header(report), "", format_results(report.results)]
    if report.claims and verbosity > 0:
        parts += ["", "paper claims vs measured:", format_claims(report.claims, why=verbosity > 1)]
    if report.notes:
        parts += ["", "notes:"] + [f"- {n}" for n in report.notes]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------- files
def write_json(report: BenchReport, path: PathLike) -> Path:
    return atomic_write(path, (json.dumps(report.to_dict(), indent=2, allow_nan=True) + "\n").encode("utf-8"))


def _flat(prefix: str, d: Optional[Dict[str, Any]], keys: Sequence[str]) -> Dict[str, Any]:
    return {f"{prefix}_{k}": (None if d is None else d.get(k)) for k in keys}


def result_record(r: BenchResult) -> Dict[str, Any]:
    """One result as a flat dict (CSV row)."""
    lat_keys = ("n", "mean", "std", "min", "p50", "p90", "p99", "max", "throughput", "clock")
    mem_keys = ("load_delta_mb", "load_peak_delta_mb", "inference_peak_delta_mb", "process_peak_mb", "rss_before_load_mb", "runs",
                "device_source", "device_load_delta_mb", "device_inference_peak_delta_mb", "engine_device_mb")
    acc_keys = ("images", "mdice", "miou", "dice_star", "iou_star", "split", "delta_mdice", "delta_miou")
    rec: Dict[str, Any] = {
        "model": r.model, "source": r.source, "runtime": r.runtime, "precision": r.precision, "batch": r.batch, "status": r.status,
        "reason": r.reason, "img_h": r.img_size[0] if r.img_size else None, "img_w": r.img_size[1] if r.img_size else None,
        "device": r.device, "threads": r.threads, "tta": r.tta, "weights": r.weights, "params": r.params, "deploy_params": r.deploy_params,
        "macs": r.macs, "size_bytes": r.size_bytes,
    }
    rec.update(_flat("compute", r.latency.to_dict() if r.latency else None, lat_keys))
    rec.update(_flat("e2e", r.e2e.to_dict() if r.e2e else None, lat_keys))
    rec["e2e_image_hw"] = "x".join(map(str, r.e2e_image_hw)) if r.e2e_image_hw else None
    rec.update(_flat("mem", r.memory.to_dict() if r.memory else None, mem_keys))
    rec.update(_flat("acc", r.accuracy.to_dict() if r.accuracy else None, acc_keys))
    rec["accuracy_note"] = r.accuracy_note
    m = r.machine or {}
    rec.update({
        "loadavg_1m_before": (m.get("loadavg_before") or [None])[0], "loadavg_1m_after": (m.get("loadavg_after") or [None])[0],
        "other_cpu_s": m.get("other_cpu_s"), "other_cpu_share": m.get("other_cpu_share"),
        "cpu_mhz": (m.get("cpu") or {}).get("current_mhz"), "cpu_governor": (m.get("cpu") or {}).get("governor"),
        "torch_imported": (r.process or {}).get("torch_imported"), "started": r.started, "notes": " | ".join(r.notes),
    })
    rec.update({f"env_{k}": v for k, v in (r.env or {}).items()})
    return rec


def _csv_bytes(records: List[Dict[str, Any]]) -> bytes:
    cols: List[str] = []
    for rec in records:
        cols += [k for k in rec if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for rec in records:
        w.writerow({k: ("" if v is None else v) for k, v in rec.items()})
    return buf.getvalue().encode("utf-8")


def claims_csv_path(path: PathLike) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}.claims.csv")


def write_csv(report: BenchReport, path: PathLike) -> List[Path]:
    """The result rows to ``path`` and, when there are claims, the claims table to ``<stem>.claims.csv`` beside it."""
    out = [atomic_write(path, _csv_bytes([result_record(r) for r in report.results]))]
    if report.claims:
        recs = [{"model": c.model, "claim": c.claim, "unit": c.unit, "paper": c.paper, "released": c.released, "measured": c.measured,
                 "verdict": c.verdict, "why": c.why, "real_memory": _real_memory(c)} for c in report.claims]
        out.append(atomic_write(claims_csv_path(path), _csv_bytes(recs)))
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def format_results_markdown(results: Sequence[BenchResult]) -> str:
    """The results table in Markdown, with numbered notes (reasons, missing accuracy, unreliable latency) below it."""
    notes: Dict[str, int] = {}
    out = _md_table(RESULT_COLUMNS, [_result_cells(r, _note_ref(r, notes)) for r in results])
    return out + ("\n\n" + "\n".join(f"{i}. {t}" for t, i in notes.items()) if notes else "")


def format_claims_markdown(claims: Sequence[ClaimCheck], why: bool = True) -> str:
    header = ("model", "claim", "paper", "released", "ours", "verdict") + (("why",) if why else ())
    return _md_table(header, [[c.model, c.claim, _claim_value(c, c.paper, True), _claim_value(c, c.released, True),
                               _claim_value(c, c.measured), c.verdict] + ([c.why] if why else []) for c in claims])


def format_markdown(report: BenchReport) -> str:
    parts = ["# lightseg-bench results", "", f"Created {report.created}.", "", "```", format_header(report), "```", "", "## Results", ""]
    parts.append(format_results_markdown(report.results))
    parts += ["", "Latency: compute only = `infer()` on a preprocessed batch; e2e = `predict` on uint8 images with pre/post-processing. "
              "Memory: RSS added by loading (load MB) and peak RSS added during inference (peak MB), sampled in a separate loop. "
              "GMACs: torch FlopCounterMode on the deployed forward."]
    if report.claims:
        parts += ["", "## Paper claims vs measured", "", format_claims_markdown(report.claims)]
    if report.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(parts) + "\n"


def write_markdown(report: BenchReport, path: PathLike) -> Path:
    return atomic_write(path, format_markdown(report).encode("utf-8"))


def plot_points(results: Sequence[BenchResult]) -> List[BenchResult]:
    """The rows a latency-vs-parameters plot can place: ok, smallest batch per (model, runtime, precision), params known."""
    best: Dict[Tuple[str, str, str], BenchResult] = {}
    for r in results:
        if not r.ok or r.latency is None or r.params is None:
            continue
        key = (r.model, r.runtime, r.precision)
        if key not in best or r.batch < best[key].batch:
            best[key] = r
    return list(best.values())


def write_plot(report: BenchReport, path: PathLike) -> Path:
    """Compute-only p50 latency vs parameters (log-log), marker area proportional to MACs, one colour per runtime/precision."""
    from .._optional import require

    require("matplotlib", extra="bench", purpose="the benchmark plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    pts = plot_points(report.results)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    try:
        if pts:
            macs = [r.macs or 0 for r in pts]
            top = max(macs) or 1
            groups: Dict[str, List[BenchResult]] = {}
            for r in pts:
                groups.setdefault(f"{r.runtime} {r.precision}", []).append(r)
            for label, rs in sorted(groups.items()):
                sizes = [30 + 900 * math.sqrt((r.macs or 0) / top) for r in rs]
                ax.scatter([r.params for r in rs], [r.latency.p50 for r in rs], s=sizes, alpha=0.55, label=label, edgecolors="k", linewidths=0.5)
            for r in pts:
                ax.annotate(r.model, (r.params, r.latency.p50), fontsize=7, xytext=(4, 4), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_yscale("log")
            leg = ax.legend(fontsize=8, loc="best", title=f"marker area ~ MACs (largest {top / 1e9:.3g} G)", title_fontsize=8)
            for handle in getattr(leg, "legend_handles", None) or getattr(leg, "legendHandles", []):
                handle.set_sizes([40])  # legend markers show the colour only
        else:
            ax.text(0.5, 0.5, "no successful result with a known parameter count to plot", ha="center", va="center", transform=ax.transAxes)
        cpu = ((report.environment or {}).get("cpu") or {}).get("model") or "?"
        b = min((r.batch for r in pts), default=1)
        ax.set_xlabel("parameters")
        ax.set_ylabel("compute-only latency p50 (ms)")
        ax.set_title(f"latency vs parameters, batch {b}, {report.settings.get('threads')} threads, {cpu}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return atomic_write(path, buf.getvalue())


def write_outputs(report: BenchReport, json_path: Optional[PathLike] = None, csv_path: Optional[PathLike] = None,
                  markdown_path: Optional[PathLike] = None, plot_path: Optional[PathLike] = None) -> List[Path]:
    """The requested files, in this order. A file that cannot be written is an OutputError naming its flag and path
    (the files before it are written, the ones after it are not tried)."""
    outputs: Sequence[Tuple[str, Optional[PathLike], Callable[[BenchReport, PathLike], Any]]] = (
        ("--json", json_path, write_json), ("--csv", csv_path, write_csv), ("--markdown", markdown_path, write_markdown),
        ("--plot", plot_path, write_plot))
    written: List[Path] = []
    for flag, path, writer in outputs:
        if not path:
            continue
        try:
            done = writer(report, path)
        except OSError as exc:
            raise OutputError(f"{flag} {path}: cannot write ({describe_os_error(exc)})") from exc
        except OutputError as exc:
            raise OutputError(f"{flag} {exc}") from exc
        written += done if isinstance(done, list) else [done]
    return written
