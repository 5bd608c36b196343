"""A lightseg predictor served through a real Triton Inference Server with NVIDIA PyTriton.

PyTriton's wheel bundles ``tritonserver`` with only the Python backend: Triton owns HTTP/gRPC, the dynamic batcher,
statistics and metrics; every batch Triton forms is handed to :func:`_infer` in this process, which runs the loaded
predictor's ``predict_batch`` (and ``predict_proba_batch`` when the client asks for ``PROBABILITY``).

The served model (default name ``lightseg``):

* input ``IMAGE``: uint8, one HxWx3 RGB image per request item (``[-1, -1, 3]``; Triton adds the batch dimension);
* outputs ``MASK``: uint8 HxW in {0, 1} at the image's own size, and ``PROBABILITY``: float32 HxW (only computed
  when requested).

Two things the bundled server needs from the interpreter running it, set here for the server process only:

* ``LD_LIBRARY_PATH`` leads to this interpreter's ``libpython`` (sysconfig ``LIBDIR``); otherwise the Python
  backend stub loads the system's ``libpython3.x`` and fails while starting.
* The stub's embedded interpreter (pybind11, built against NumPy 1) cannot use NumPy 2: outputs arrive empty
  ("output tensor shape does not match size of output"). It ignores ``PYTHONPATH`` (isolated config) but puts its
  working directory first on ``sys.path``, so with NumPy >= 2 installed the server is started inside a folder
  holding a NumPy 1.x (``LIGHTSEG_TRITON_STUB_SITE`` or ``~/.cache/lightseg-edge/triton-stub-site``), made once with
  ``pip install --no-deps --target ~/.cache/lightseg-edge/triton-stub-site "numpy<2"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from .._optional import require
from ..errors import BackendUnavailableError, InvalidInputError, MissingDependencyError

LOG = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "lightseg"
MAX_SERVE_SIDE = 8192  # a larger side is refused per request (a 8192x8192x3 image is already 200 MB)
STUB_SITE_ENV = "LIGHTSEG_TRITON_STUB_SITE"
DEFAULT_QUEUE_DELAY_US = 2000


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_name: str = DEFAULT_MODEL_NAME
    max_batch_size: int = 8
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    threshold: Optional[float] = None
    verbose: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


def stub_site_dir() -> Path:
    env = os.environ.get(STUB_SITE_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lightseg-edge" / "triton-stub-site"


def _numpy1_in(folder: Path) -> bool:
    return (folder / "numpy" / "__init__.py").is_file() and any(folder.glob("numpy-1.*.dist-info"))


def stub_workdir() -> Optional[Path]:
    """The folder the server must start in so its Python backend imports a NumPy 1.x; None when this interpreter's
    NumPy is already 1.x. Raises MissingDependencyError (with the one command that fixes it) when none is there."""
    if int(np.__version__.split(".")[0]) < 2:
        return None
    folder = stub_site_dir()
    if _numpy1_in(folder):
        return folder
    raise MissingDependencyError(
        f"the Triton Python backend bundled with PyTriton needs NumPy 1.x but this environment has NumPy {np.__version__}; "
        f"install a private copy for it once (it does not touch this environment): pip install --no-deps --target {folder} "
        f"\"numpy<2\"  (or point {STUB_SITE_ENV} to a folder holding one)")


def _libpython_dir() -> Optional[str]:
    """The folder of this interpreter's shared libpython, or None for a static build."""
    libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib and str(ldlib).endswith(".so") and Path(libdir, ldlib).exists():
        return str(libdir)
    return None


_ZERO_SIZE_COPY = b'shm.buf[offset + total_size : offset + total_size + frame.nbytes] = frame.cast("B")'


def _ragged(original: Callable) -> Callable:
    def patched(self, model_config):
        original(self, model_config)
        for item in model_config.get("input", []):
            if item.get("name") == "IMAGE":
                item["allow_ragged_batch"] = True

    return patched


def _zero_size_safe(original: Callable) -> Callable:
    def patched(self):
        files = original(self)
        for key, text in files.items():
            if key.endswith("/data.py") and _ZERO_SIZE_COPY in text:
                files[key] = text.replace(_ZERO_SIZE_COPY, b"if frame.nbytes:\n                " + _ZERO_SIZE_COPY)
        return files

    return patched


@contextlib.contextmanager
def _pytriton_patches() -> Iterator[None]:
    """Two things PyTriton 0.7 has no option for, patched while the model is bound; if its internals change, each
    patch falls away and the server runs as PyTriton writes it.

    * The image input is marked ``allow_ragged_batch``. Without it Triton's dynamic batcher only batches requests of
      equal shape, and with images of mixed sizes in the queue it was measured here to spin (two server threads at
      100 % CPU, 1 image/s at 4 clients). The Python backend hands each request's tensor over separately, so images of
      different sizes in one batch are fine for :func:`make_infer_func`.
    * The proxy model PyTriton copies into the server cannot pass a zero-size tensor on (``memoryview.cast`` refuses a
      zero in the shape): an empty image failed with a ``TypeError`` traceback before reaching this process. Skipping
      the copy of an empty frame lets it through to :func:`check_image`, which answers with a clear error."""
    targets = []
    with contextlib.suppress(ImportError, AttributeError):
        from pytriton.model_config import generator

        targets.append((generator.ModelConfigGenerator, "_set_model_signature", _ragged))
    with contextlib.suppress(ImportError, AttributeError):
        from pytriton.models import model

        targets.append((model.Model, "get_proxy_model_files", _zero_size_safe))
    originals = [(cls, name, getattr(cls, name)) for cls, name, _ in targets]
    for cls, name, wrap in targets:
        setattr(cls, name, wrap(getattr(cls, name)))
    try:
        yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


@contextlib.contextmanager
def _server_environment(workdir: Optional[Path]) -> Iterator[None]:
    """LD_LIBRARY_PATH (and the working directory) the tritonserver child inherits; restored once it started."""
    old_ld, old_cwd = os.environ.get("LD_LIBRARY_PATH"), os.getcwd()
    lib = _libpython_dir()
    if lib is None:
        raise BackendUnavailableError("this Python has no shared libpython (built without --enable-shared); the Triton "
                                      "Python backend stub needs one to embed this interpreter")
    os.environ["LD_LIBRARY_PATH"] = lib + (":" + old_ld if old_ld else "")
    try:
        if workdir is not None:
            os.chdir(workdir)
        yield
    finally:
        os.chdir(old_cwd)
        if old_ld is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old_ld


def check_ports_free(host: str, ports: Dict[str, int]) -> None:
    """Refuse, naming the flag, a port something already listens on (Triton itself would wait, then time out)."""
    import socket

    for flag, port in ports.items():
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise InvalidInputError(f"--host {host}: cannot be resolved ({exc})") from None
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                raise InvalidInputError(f"{flag} {port}: {host}:{port} is not available ({exc.strerror or exc}); "
                                        f"choose another port") from None


def check_image(image: np.ndarray, index: int) -> Optional[str]:
    """Why one request image cannot be segmented, or None. Triton already enforces dtype and rank."""
    what = f"request item {index}"
    if image.dtype != np.uint8:
        return f"{what}: IMAGE must be uint8, got {image.dtype}"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"{what}: IMAGE must be HxWx3 RGB, got shape {list(image.shape)}"
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        return f"{what}: IMAGE is empty ({h}x{w})"
    if max(h, w) > MAX_SERVE_SIDE:
        return f"{what}: IMAGE is {h}x{w}; the largest side accepted is {MAX_SERVE_SIDE} px"
    return None


def _batch_error(problems: List[str], n_requests: int) -> str:
    """PyTriton answers every request of a batch with one error, so a valid request that Triton's dynamic batcher
    put beside an invalid one (within the queue delay) gets this message too, and is told to send again."""
    text = "; ".join(problems)
    if n_requests > 1:
        text += (f" (this batch held {n_requests} requests and none was run: a valid request batched with the invalid "
                 "one can be sent again)")
    return text


def make_infer_func(predictor: Any, threshold: Optional[float] = None) -> Callable[[List[Dict[str, np.ndarray]]], List[Dict[str, np.ndarray]]]:
    """The PyTriton inference callable: a list of requests (each {"IMAGE": [n, H, W, 3]}) -> a list of responses.
    Images of different sizes are fine (the predictor resizes each); every image keeps its own output size."""
    from pytriton.exceptions import PyTritonBadParameterError

    lock = threading.Lock()  # one predictor, one call at a time

    def infer(requests):
        images: List[np.ndarray] = []
        counts: List[int] = []
        problems: List[str] = []
        want_proba = False
        for r, req in enumerate(requests):
            batch = (req.data if hasattr(req, "data") else req).get("IMAGE")
            if batch is None or batch.ndim != 4:
                problems.append(f"request {r}: IMAGE must be [batch, H, W, 3] uint8")
                counts.append(0)
                continue
            counts.append(len(batch))
            for k, image in enumerate(batch):
                why = check_image(image, k)
                if why:
                    problems.append(why)
                images.append(np.ascontiguousarray(image))
            names = getattr(req, "requested_output_names", None)
            want_proba = want_proba or bool(names and "PROBABILITY" in names)
        if problems:
            raise PyTritonBadParameterError(_batch_error(problems, len(requests)))
        with lock:
            try:
                masks = predictor.predict_batch(images, threshold=threshold)
                probas = predictor.predict_proba_batch(images) if want_proba else None
            except InvalidInputError as exc:
                raise PyTritonBadParameterError(str(exc)) from exc
        out, i = [], 0
        for n in counts:
            item: Dict[str, np.ndarray] = {}
            if n:
                shapes = {m.shape for m in masks[i:i + n]}
                if len(shapes) > 1:  # one request carrying images of several sizes: cannot stack
                    raise PyTritonBadParameterError("the images of one request must share their size; send one image per request")
                item["MASK"] = np.stack(masks[i:i + n]).astype(np.uint8)
                if probas is not None:
                    item["PROBABILITY"] = np.stack(probas[i:i + n]).astype(np.float32)
            out.append(item)
            i += n
        return out

    return infer


class TritonSegServer:
    """``with TritonSegServer(predictor, cfg) as s: s.serve()`` — or ``s.start()`` / ``s.stop()`` from a test."""

    def __init__(self, predictor: Any, config: ServeConfig) -> None:
        self.predictor = predictor
        self.config = config
        self._triton = None
        self.log_file: Optional[Path] = None

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.config.http_port}"

    def start(self) -> "TritonSegServer":
        pytriton_triton = require("pytriton.triton", extra="serve", purpose="lightseg-serve (NVIDIA PyTriton)")
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        workdir = stub_workdir()
        c = self.config
        check_ports_free(c.host, {"--http-port": c.http_port, "--grpc-port": c.grpc_port, "--metrics-port": c.metrics_port})
        if not c.verbose and "log_file" not in c.extra:  # Triton's own log to a file, not the terminal
            import tempfile

            self.log_file = Path(tempfile.mkdtemp(prefix="lightseg-serve-")) / "tritonserver.log"
            c.extra["log_file"] = self.log_file
        cfg = pytriton_triton.TritonConfig(
            http_address=c.host, http_port=c.http_port, grpc_address=c.host, grpc_port=c.grpc_port,
            metrics_address=c.host, metrics_port=c.metrics_port, allow_gpu_metrics=False,
            log_verbose=1 if c.verbose else 0, exit_timeout_secs=5, **c.extra)
        # PyTriton guards the admin endpoints with a random token; statistics stay readable (read-only; what
        # lightseg-bench --triton reads the batch sizes from), the rest (model repository, shared memory, ...) guarded.
        guarded = [e for e in getattr(pytriton_triton, "DEFAULT_PROTECTED_ENDPOINTS", []) if e != "statistics"]
        security = pytriton_triton.TritonSecurityConfig(restricted_endpoints=guarded) if guarded else None
        triton = pytriton_triton.Triton(config=cfg, security_config=security) if security else pytriton_triton.Triton(config=cfg)
        try:
            with _server_environment(workdir), _pytriton_patches():
                triton.bind(
                    model_name=c.model_name,
                    infer_func=make_infer_func(self.predictor, c.threshold),
                    inputs=[Tensor(name="IMAGE", dtype=np.uint8, shape=(-1, -1, 3))],
                    outputs=[Tensor(name="MASK", dtype=np.uint8, shape=(-1, -1)),
                             Tensor(name="PROBABILITY", dtype=np.float32, shape=(-1, -1))],
                    config=ModelConfig(max_batch_size=c.max_batch_size,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=c.queue_delay_us)),
                    strict=False,
                )
                triton.run()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                triton.stop()
            from pytriton.exceptions import PyTritonError

            if isinstance(exc, (PyTritonError, TimeoutError)):
                where = f"; Triton's log: {self.log_file}" if self.log_file else ""
                raise BackendUnavailableError(f"the Triton server did not start ({type(exc).__name__}: {exc}){where}") from exc
            raise
        self._triton = triton
        return self

    def wait(self, stop_event: Optional[threading.Event] = None, period_s: float = 1.0) -> None:
        """Block until the server dies or ``stop_event`` is set."""
        while self._triton is not None and self._triton.is_alive():
            if stop_event is not None and stop_event.wait(period_s):
                return
            if stop_event is None:
                threading.Event().wait(period_s)

    def stop(self) -> None:
        if self._triton is not None:
            triton, self._triton = self._triton, None
            triton.stop()
            if self.log_file is not None:  # a clean stop leaves nothing behind; a failed start keeps the log it names
                shutil.rmtree(self.log_file.parent, ignore_errors=True)
                self.log_file = None

    def __enter__(self) -> "TritonSegServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(predictor: Any, config: ServeConfig, ready: Optional[Callable[[TritonSegServer], None]] = None) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop Triton cleanly (models unloaded, workspace removed)."""
    stop_event = threading.Event()

    def on_signal(signum, frame):
        stop_event.set()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        with TritonSegServer(predictor, config) as server:
            if ready is not None:
                ready(server)
            server.wait(stop_event)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
