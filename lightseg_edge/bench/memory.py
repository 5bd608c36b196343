"""Memory measurement: host RSS, GPU memory (NVML), Jetson RAM (tegrastats), and file sizes.

Method (worked out by measurement here):
- Peak RSS is sampled every 1 ms by a psutil thread **in a loop of its own**, never while latency is timed: a Python
  sampling thread competes for the GIL and inflated torch-eager times 20-30x when it ran during timing.
- Deltas count the process's private (anonymous) resident memory, RSS minus its file-backed and shared pages: the
  kernel drops and re-reads shared-library pages as the page cache needs, which moved total-RSS deltas by 15 MB on
  a busy machine. Process totals (``process_peak_mb``) are full RSS.
- "Load" is private memory after creating the predictor minus private memory just before (the runtime package
  already imported, so the import itself is not counted); "inference" is the peak during ``runs`` inferences minus
  the level just before the first of them. The benchmark runs this loop before any timing, so the first inference (allocator growth, lazy kernel
  selection) is inside it.
- ``ru_maxrss`` is not used: for a process that execs ONNX Runtime, Linux keeps the parent's high-water mark.
- NVML (desktop GPU; run on an H100/H200): this process's ``usedGpuMemory`` from ``nvmlDeviceGetComputeRunningProcesses``
  when NVML lists it, else device-wide used memory (containers hide PIDs), said so in ``device_source``. NVML memory
  queries return NotSupported on Jetson, so there ``tegrastats`` (always on L4T) is read instead: system RAM used,
  which is shared by CPU and GPU (UNVERIFIED here: no Jetson).
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._optional import require

MB = float(1 << 20)
SAMPLE_INTERVAL_S = 0.001
DEFAULT_MEMORY_RUNS = 20
DEFAULT_MEMORY_MAX_S = 10.0  # a slow model (U-Net on a loaded CPU) stops after this, once it has MIN_MEMORY_RUNS
MIN_MEMORY_RUNS = 3


def rss_bytes() -> int:
    psutil = require("psutil", purpose="measuring memory")
    return int(psutil.Process().memory_info().rss)


def private_bytes(info: Any = None) -> int:
    """Anonymous resident memory (RSS minus file-backed/shared pages) from ``info`` or a fresh reading."""
    if info is None:
        info = require("psutil", purpose="measuring memory").Process().memory_info()
    return int(info.rss - getattr(info, "shared", 0))


# ---------------------------------------------------------------------------------------------------- device probes
class NvmlProbe:
    """GPU memory through nvidia-ml-py (tests/bench/test_memory.py ran it on an H100 and an H200)."""

    def __init__(self, device_index: int = 0) -> None:
        self._nvml = require("pynvml", extra="gpu", purpose="GPU memory via NVML")
        self._nvml.nvmlInit()
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(int(device_index))
        self._pid = os.getpid()
        self.process_seen = False

    def read(self) -> Tuple[Optional[int], Optional[int]]:
        """(bytes used by this process or None when NVML does not list it, bytes used on the whole device)."""
        nv = self._nvml
        proc = None
        try:
            for p in nv.nvmlDeviceGetComputeRunningProcesses(self._handle):
                used = getattr(p, "usedGpuMemory", None)
                if p.pid == self._pid and used is not None:
                    proc = int(used)
                    self.process_seen = True
        except nv.NVMLError:
            proc = None
        try:
            device = int(nv.nvmlDeviceGetMemoryInfo(self._handle).used)
        except nv.NVMLError:  # NotSupported on Jetson (unified memory)
            device = None
        return proc, device

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a probe must not hide a measurement
            pass


_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?")


def parse_tegrastats(line: str) -> Optional[Dict[str, Optional[int]]]:
    """One tegrastats line -> RAM used/total (MB), swap used, GPU load (%) and frequency (MHz); None if no RAM field.

    Example line (Orin, JetPack 6): ``RAM 2915/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,...]
    EMC_FREQ 0% GR3D_FREQ 0% cpu@48.5C ... VDD_IN 4467mW/4467mW``.
    """
    m = _RAM.search(line)
    if not m:
        return None
    swap = _SWAP.search(line)
    gr3d = _GR3D.search(line)
    return {
        "ram_used_mb": int(m.group(1)),
        "ram_total_mb": int(m.group(2)),
        "swap_used_mb": int(swap.group(1)) if swap else None,
        "gr3d_percent": int(gr3d.group(1)) if gr3d else None,
        "gr3d_mhz": int(gr3d.group(2)) if gr3d and gr3d.group(2) else None,
    }


class TegrastatsMonitor:
    """Runs ``tegrastats --interval MS`` while a loop runs and keeps the peak RAM and GPU load. UNVERIFIED (no Jetson)."""

    def __init__(self, executable: str, interval_ms: int = 100) -> None:
        self._cmd = [executable, "--interval", str(int(interval_ms))]
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None
        self.readings: List[Dict[str, Optional[int]]] = []

    def __enter__(self) -> "TegrastatsMonitor":
        self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            r = parse_tegrastats(line)
            if r is not None:
                self.readings.append(r)

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()  # the process this monitor started, by its handle
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self, before_mb: Optional[int] = None) -> Optional[Dict[str, Any]]:
        if not self.readings:
            return None
        peak = max(r["ram_used_mb"] or 0 for r in self.readings)
        first = before_mb if before_mb is not None else self.readings[0]["ram_used_mb"]
        loads = [r["gr3d_percent"] for r in self.readings if r["gr3d_percent"] is not None]
        return {
            "ram_before_mb": first, "ram_peak_mb": peak, "ram_peak_delta_mb": None if first is None else peak - first,
            "ram_total_mb": self.readings[0]["ram_total_mb"], "gr3d_peak_percent": max(loads) if loads else None,
            "readings": len(self.readings),
        }


# ---------------------------------------------------------------------------------------------------- RSS sampler
class PeakSampler:
    """A background thread that samples RSS (and, every ``device_every`` samples, the device probe) until stopped."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S, device: Optional[NvmlProbe] = None, device_every: int = 10) -> None:
        psutil = require("psutil", purpose="measuring memory")
        self._proc = psutil.Process()
        self._interval = interval_s
        self._device = device
        self._device_every = max(1, device_every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0  # full RSS
        self.private_peak = 0
        self.samples = 0
        self.device_peak_process: Optional[int] = None
        self.device_peak_total: Optional[int] = None

    def _sample(self) -> None:
        info = self._proc.memory_info()
        self.peak = max(self.peak, info.rss)
        self.private_peak = max(self.private_peak, private_bytes(info))
        if self._device is not None and self.samples % self._device_every == 0:
            proc, total = self._device.read()
            if proc is not None:
                self.device_peak_process = max(proc, self.device_peak_process or 0)
            if total is not None:
                self.device_peak_total = max(total, self.device_peak_total or 0)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the state at the end counts too (a loop shorter than one interval)


def _device_delta(probe: Optional[NvmlProbe], before: Tuple[Optional[int], Optional[int]], sampler: PeakSampler) -> Tuple[Optional[str], Optional[float], Optional[float]]:
    """(source, delta MB of the peak, total used MB) preferring this process's own figure."""
    if probe is None:
        return None, None, None
    total = None if sampler.device_peak_total is None else sampler.device_peak_total / MB
    if probe.process_seen and sampler.device_peak_process is not None:
        return "nvml-process", (sampler.device_peak_process - (before[0] or 0)) / MB, total
    if sampler.device_peak_total is not None and before[1] is not None:
        return "nvml-device", (sampler.device_peak_total - before[1]) / MB, total
    return None, None, total


def measure_load(load: Callable[[], Any], device: Optional[NvmlProbe] = None, interval_s: float = SAMPLE_INTERVAL_S) -> Tuple[Any, Dict[str, Any]]:
    """Call ``load()`` (creating a predictor) with the sampler on; return its result and what it added."""
    gc.collect()  # garbage freed during load() would otherwise hide part of what it adds
    dev_before = device.read() if device is not None else (None, None)
    rss_before, before = rss_bytes(), private_bytes()
    with PeakSampler(interval_s, device) as s:
        value = load()
    after = private_bytes()
    source, dev_delta, _ = _device_delta(device, dev_before, s)
    return value, {
        "rss_before_load_mb": rss_before / MB, "load_delta_mb": (after - before) / MB,
        "load_peak_delta_mb": (s.private_peak - before) / MB,
        "device_source": source, "device_load_delta_mb": dev_delta,
    }


def measure_inference(run: Callable[[], Any], runs: int = DEFAULT_MEMORY_RUNS, max_seconds: float = DEFAULT_MEMORY_MAX_S,
                      device: Optional[NvmlProbe] = None, tegrastats: Optional[str] = None,
                      interval_s: float = SAMPLE_INTERVAL_S) -> Dict[str, Any]:
    """Peak RSS (and device memory) during up to ``runs`` calls of ``run``, relative to RSS just before the first.

    Stops early after ``max_seconds`` once ``MIN_MEMORY_RUNS`` calls were made (a slow model on a loaded CPU).
    """
    gc.collect()
    dev_before = device.read() if device is not None else (None, None)
    monitor = TegrastatsMonitor(tegrastats) if tegrastats else None
    rss_before, before = rss_bytes(), private_bytes()
    done = 0
    t0 = time.perf_counter()
    try:
        if monitor is not None:
            monitor.__enter__()
        with PeakSampler(interval_s, device) as s:
            for done in range(1, runs + 1):
                run()
                if done >= MIN_MEMORY_RUNS and time.perf_counter() - t0 > max_seconds:
                    break
    finally:
        if monitor is not None:
            monitor.__exit__(None, None, None)
    source, dev_delta, dev_total = _device_delta(device, dev_before, s)
    tegra = monitor.summary() if monitor is not None else None
    if tegra is not None and source is None:
        source = "tegrastats"
    return {
        "rss_before_inference_mb": rss_before / MB, "inference_peak_delta_mb": (s.private_peak - before) / MB, "process_peak_mb": s.peak / MB,
        "runs": done, "samples": s.samples, "sampler_interval_ms": interval_s * 1000.0, "device_source": source,
        "device_inference_peak_delta_mb": dev_delta, "device_total_used_mb": dev_total, "tegrastats": tegra,
    }


def file_sizes(paths: Dict[str, Optional[str]]) -> Dict[str, int]:
    """name -> bytes on disk, for the files that exist."""
    out = {}
    for name, p in paths.items():
        if p and Path(p).is_file():
            out[name] = Path(p).stat().st_size
    return out


def cuda_index(device: Optional[str]) -> Optional[int]:
    """The CUDA device index behind a predictor's device string ('cuda:1', 'cuda', an ORT CUDA/TensorRT provider), else None."""
    text = str(device or "")
    if text.startswith("cuda"):
        index = text.partition(":")[2]
        return int(index) if index.isdigit() else 0
    if text in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        return 0  # ORT reports the provider, not the device; the runtimes default to device 0
    return None


def nvml_probe_for(device: Optional[str]) -> Optional[NvmlProbe]:
    """An NVML probe for a CUDA device when nvidia-ml-py and a driver are present, else None."""
    from .._optional import is_available

    index = cuda_index(device)
    if index is None or not is_available("pynvml"):
        return None
    try:
        return NvmlProbe(index)
    except Exception:  # noqa: BLE001 - no driver / NotSupported: device memory is then simply not reported
        return None


def tegrastats_path(environment: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The tegrastats executable on a Jetson, else None."""
    import shutil

    env = environment or {}
    jetson = (env.get("jetson") or {}).get("detected")
    if jetson is False:
        return None
    found = ((env.get("tools") or {}).get("tegrastats")) or shutil.which("tegrastats")
    return found if found and (jetson or os.path.exists("/etc/nv_tegra_release")) else None


def engine_device_mb(predictor: Any) -> Optional[float]:
    """TensorRT activation/scratch memory, if the predictor exposes it (``device_memory_bytes``); else None."""
    value = getattr(predictor, "device_memory_bytes", None)
    try:
        return None if value is None else float(value) / MB
    except (TypeError, ValueError):
        return None

