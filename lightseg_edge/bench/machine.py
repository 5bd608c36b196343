"""How busy the machine was while a measurement ran, and at what clock, recorded with every result.

A latency figure from a loaded machine is not comparable with one from a quiet machine (measured here:
torch 2-thread medians rose from 14 ms to 69-1,884 ms while another process used the cores). So each job records:
- the 1/5/15-minute load averages before and after (``os.getloadavg``);
- ``other_cpu_s``: CPU seconds that *other* processes used during the job (system busy time minus this process's
  own), and that as a share of the cores available over the job's wall time;
- the CPU clock (psutil, else /proc/cpuinfo) and the frequency governor where Linux exposes it.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Optional


def _loadavg() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def cpu_frequency() -> Dict[str, Any]:
    """Current/min/max MHz and the governor, as far as this OS reports them (None where it does not)."""
    out: Dict[str, Any] = {"current_mhz": None, "min_mhz": None, "max_mhz": None, "governor": None, "source": None}
    try:
        import psutil

        f = psutil.cpu_freq()
        if f is not None and f.current:
            out.update(current_mhz=round(f.current, 1), min_mhz=round(f.min, 1) or None, max_mhz=round(f.max, 1) or None, source="psutil")
    except Exception:  # noqa: BLE001 - some VMs raise instead of returning None
        pass
    if out["current_mhz"] is None:
        try:
            with open("/proc/cpuinfo") as fh:
                mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", fh.read(), re.MULTILINE)]
            if mhz:
                out.update(current_mhz=round(sum(mhz) / len(mhz), 1), source="/proc/cpuinfo")
        except OSError:
            pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as fh:
            out["governor"] = fh.read().strip() or None
    except OSError:
        pass
    return out


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def speed_probe_ms(repeats: int = 7) -> float:
    """The median time of a fixed single-threaded workload (8 x the sines of 250,000 floats), in ms: the machine's
    single-thread speed at that moment, which a cloud VM may change with no process of its own running (neither the
    load average nor other processes' CPU share shows it). A change in how the runtime's threads share the cores is
    not seen by it; interleaved comparisons (``benchmarks/``) are the remedy for that."""
    import numpy as np

    from .timing import median_ms

    x = np.linspace(0.0, 1.0, 250_000, dtype=np.float32)
    out = np.empty_like(x)

    def work() -> None:
        for _ in range(8):
            np.sin(x, out=out)

    return median_ms(work, repeats)


def snapshot() -> Dict[str, Any]:
    """State at one moment; two of them make a ``load_between`` record."""
    snap: Dict[str, Any] = {"wall": time.perf_counter(), "loadavg": _loadavg(), "busy_s": None, "own_s": None,
                            "probe_ms": speed_probe_ms()}
    try:
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        snap["busy_s"] = sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        own = psutil.Process().cpu_times()
        snap["own_s"] = own.user + own.system + own.children_user + own.children_system
    except Exception:  # noqa: BLE001 - psutil missing or restricted: the load averages alone remain
        pass
    return snap


def load_between(before: Dict[str, Any], after: Dict[str, Any], threads: Optional[int] = None) -> Dict[str, Any]:
    wall = max(after["wall"] - before["wall"], 1e-9)
    rec: Dict[str, Any] = {
        "loadavg_before": before["loadavg"], "loadavg_after": after["loadavg"], "wall_s": round(wall, 3),
        "other_cpu_s": None, "other_cpu_share": None, "cores": usable_cores(), "threads": threads, "cpu": cpu_frequency(),
        "speed_probe_ms": [round(before["probe_ms"], 4), round(after["probe_ms"], 4)] if "probe_ms" in before and "probe_ms" in after else None,
    }
    if before.get("busy_s") is not None and after.get("busy_s") is not None:
        other = max(0.0, (after["busy_s"] - before["busy_s"]) - (after["own_s"] - before["own_s"]))
        rec["other_cpu_s"] = round(other, 3)
        rec["other_cpu_share"] = round(other / (wall * rec["cores"]), 3)
    return rec
