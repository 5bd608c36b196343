"""lightseg-bench --triton URL: a concurrency sweep against a running Triton server (lightseg-serve or any Triton
serving the same IMAGE -> MASK model), with tritonclient over HTTP.

For each concurrency level C, C client threads (one HTTP connection each) send real images one per request, back to
back, for ``requests`` requests per level (or ``duration`` seconds). Reported per level: client-side latency p50/p95/p99
(ms, request sent -> MASK decoded), images/s over the level's wall time, and the batch sizes Triton's dynamic batcher
formed (the difference of the model's ``batch_stats`` in ``get_inference_statistics`` before and after the level).
The machine's load average is recorded before and after each level: the client runs on the same machine as the
server only if you run it so, and then it competes with it for the CPU.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._optional import require
from ..errors import BackendUnavailableError, DataError, InvalidInputError

DEFAULT_CONCURRENCY = (1, 2, 4, 8)
DEFAULT_REQUESTS = 64
DEFAULT_MAX_IMAGES = 32


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    images_per_s: float
    batch_sizes: Dict[int, int] = field(default_factory=dict)  # batch size -> executions Triton ran with it
    load_before: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpu_busy_pct: Optional[float] = None  # whole machine (server + clients + anything else), from /proc/stat
    first_error: Optional[str] = None


def _strip_scheme(url: str) -> str:
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            return url[len(prefix):].rstrip("/")
    return url.rstrip("/")


def _client(url: str, timeout_s: float):
    http = require("tritonclient.http", extra="serve", purpose="lightseg-bench --triton")
    return http.InferenceServerClient(_strip_scheme(url), connection_timeout=timeout_s, network_timeout=timeout_s)


def batch_counts(client: Any, model: str) -> Dict[int, int]:
    """batch size -> number of executions, from Triton's statistics endpoint."""
    stats = client.get_inference_statistics(model_name=model)
    counts: Dict[int, int] = {}
    for m in stats.get("model_stats", []):
        for b in m.get("batch_stats", []) or []:
            n = int((b.get("compute_infer") or {}).get("count", 0))
            counts[int(b["batch_size"])] = counts.get(int(b["batch_size"]), 0) + n
    return counts


def load_images(data: str, max_images: Optional[int] = DEFAULT_MAX_IMAGES, split: Optional[str] = None) -> List[np.ndarray]:
    """Real RGB uint8 images from a dataset root (any layout lightseg knows) or a plain folder of images."""
    from ..data.io import read_image
    from .compare import select_images

    chosen = select_images(data, split=split or "all", limit=max_images)
    images = [read_image(s.image) for s in chosen.samples]
    if not images:
        raise DataError(f"--data {data}: no images found")
    return images


def _cpu_times() -> Optional[Tuple[float, float]]:
    """(busy, total) jiffies of the whole machine; None where /proc/stat is missing (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def run_level(url: str, model: str, images: Sequence[np.ndarray], concurrency: int, requests: Optional[int] = DEFAULT_REQUESTS,
              duration_s: Optional[float] = None, timeout_s: float = 60.0) -> LevelResult:
    http = require("tritonclient.http", extra="serve", purpose="lightseg-bench --triton")
    # tritonclient.http runs on gevent: a client belongs to the thread that made it, so each worker makes its own
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()
    lock = threading.Lock()
    latencies: List[float] = []
    errors: List[str] = []
    issued = [0]
    stop_at = [0.0]

    def take() -> Optional[int]:
        with lock:
            if duration_s is not None:
                if time.perf_counter() >= stop_at[0]:
                    return None
            elif issued[0] >= requests:
                return None
            issued[0] += 1
            return issued[0] - 1

    def worker(k: int) -> None:
        c = None
        try:
            c = _client(url, timeout_s)
            _infer(http, c, model, images[k % len(images)])  # warm-up: not timed, before the statistics snapshot
        except Exception as exc:
            with lock:
                errors.append(" ".join(str(exc).split())[:300])
            c = None
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        go.wait()
        while c is not None:
            i = take()
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                _infer(http, c, model, images[i % len(images)])
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
            except Exception as exc:  # counted and reported; the sweep goes on
                with lock:
                    errors.append(" ".join(str(exc).split())[:300])
        if c is not None:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    stats_client = _client(url, timeout_s)
    before = batch_counts(stats_client, model)
    load_before = os.getloadavg()
    cpu_before = _cpu_times()
    t_start = time.perf_counter()
    stop_at[0] = t_start + (duration_s or 0.0)
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    cpu_after = _cpu_times()
    busy = None
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        busy = round(100.0 * (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1]), 1)
    # Triton records an execution's statistics just after its responses went out: wait (briefly) until they add up
    after, settle = batch_counts(stats_client, model), time.monotonic() + 2.0
    while _images_in(after) - _images_in(before) < len(latencies) and time.monotonic() < settle:
        time.sleep(0.02)
        after = batch_counts(stats_client, model)
    stats_client.close()
    batches = {b: after.get(b, 0) - before.get(b, 0) for b in sorted(set(after) | set(before)) if after.get(b, 0) - before.get(b, 0) > 0}
    ms = [x * 1e3 for x in latencies]
    return LevelResult(concurrency=concurrency, requests=len(latencies), errors=len(errors), wall_s=wall,
                       p50_ms=_percentile(ms, 50), p95_ms=_percentile(ms, 95), p99_ms=_percentile(ms, 99),
                       images_per_s=len(latencies) / wall if wall > 0 else 0.0, batch_sizes=batches,
                       load_before=tuple(round(v, 2) for v in load_before), load_after=tuple(round(v, 2) for v in os.getloadavg()),
                       cpu_busy_pct=busy, first_error=errors[0] if errors else None)


def _images_in(counts: Dict[int, int]) -> int:
    return sum(b * n for b, n in counts.items())


def _infer(http: Any, client: Any, model: str, image: np.ndarray) -> np.ndarray:
    x = image[None]
    inp = http.InferInput("IMAGE", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=True)
    res = client.infer(model, [inp], outputs=[http.InferRequestedOutput("MASK", binary_data=True)])
    mask = res.as_numpy("MASK")
    if mask is None or mask.shape[1:] != image.shape[:2]:
        raise InvalidInputError(f"MASK shape {None if mask is None else list(mask.shape)} does not match the image {list(image.shape[:2])}")
    return mask


def check_server(url: str, model: str, timeout_s: float = 10.0) -> Dict[str, Any]:
    """The model's metadata; a clear error when the server or the model is not there."""
    client = _client(url, timeout_s)
    try:
        try:
            live = client.is_server_live()
        except Exception as exc:
            raise BackendUnavailableError(f"--triton {url}: no Triton server answers there ({' '.join(str(exc).split())[:200]})") from None
        if not live:
            raise BackendUnavailableError(f"--triton {url}: the server is not live")
        if not client.is_model_ready(model):
            try:
                names = [m.get("name") for m in client.get_model_repository_index()]
            except Exception:
                names = []
            raise BackendUnavailableError(f"--triton {url}: model '{model}' is not ready there" + (f" (models: {', '.join(map(str, names))})" if names else ""))
        return client.get_model_metadata(model)
    finally:
        client.close()


def sweep(url: str, model: str, images: Sequence[np.ndarray], levels: Sequence[int], requests: Optional[int] = DEFAULT_REQUESTS,
          duration_s: Optional[float] = None, progress=None) -> Dict[str, Any]:
    meta = check_server(url, model)
    rows = []
    for c in levels:
        if progress:
            progress(f"concurrency {c} ...")
        rows.append(run_level(url, model, images, c, requests=requests, duration_s=duration_s))
    sizes = sorted({tuple(im.shape) for im in images})
    return {
        "triton_url": url, "model": model, "model_metadata": meta,
        "images": len(images), "image_shapes": [list(s) for s in sizes[:10]] + (["..."] if len(sizes) > 10 else []),
        "requests_per_level": None if duration_s else requests, "duration_s": duration_s,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": rows[0].load_before if rows else None},
        "levels": [asdict(r) for r in rows],
    }


def format_table(report: Dict[str, Any]) -> str:
    head = f"{'conc':>4}  {'reqs':>5}  {'err':>3}  {'p50 ms':>8}  {'p95 ms':>8}  {'p99 ms':>8}  {'img/s':>7}  {'CPU busy':>8}  {'load 1m':>11}  server batch sizes (size x executions)"
    lines = [f"Triton {report['triton_url']} model '{report['model']}': {report['images']} image(s), "
             f"{'%s s per level' % report['duration_s'] if report['duration_s'] else '%s request(s) per level' % report['requests_per_level']}; "
             f"{report['machine']['cpus']} CPU(s)", head, "-" * len(head)]
    for r in report["levels"]:
        batches = " ".join(f"{b}x{n}" for b, n in sorted(r["batch_sizes"].items())) or "-"
        load = f"{r['load_before'][0]:.2f}->{r['load_after'][0]:.2f}"
        busy = "-" if r.get("cpu_busy_pct") is None else f"{r['cpu_busy_pct']:.0f}%"
        lines.append(f"{r['concurrency']:>4}  {r['requests']:>5}  {r['errors']:>3}  {r['p50_ms']:>8.1f}  {r['p95_ms']:>8.1f}  {r['p99_ms']:>8.1f}  "
                     f"{r['images_per_s']:>7.2f}  {busy:>8}  {load:>11}  {batches}")
        if r["first_error"]:
            lines.append(f"      first error: {r['first_error']}")
    return "\n".join(lines)
