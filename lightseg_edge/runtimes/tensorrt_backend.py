"""Native TensorRT adapter: deserialize a ``.plan``/``.engine`` and run it with the name-based I/O API.

UNVERIFIED: written against the TensorRT 10/11 Python API documentation and NVIDIA's samples; it has never run here
(this project's machines have no GPU). Only attributes present in TensorRT 10.3, 10.16 and 11.4 are used
unconditionally (``tests/export/test_tensorrt_api_surface.py`` checks that against the releases' binding name
lists); anything version-specific sits behind ``hasattr``. The same code path exists from TensorRT 8.5 on
(``set_tensor_address`` / ``execute_async_v3``).

How a call runs: the batch is copied into a pinned host buffer, copied to the device on the predictor's own CUDA
stream, the context is enqueued with ``execute_async_v3`` on that stream, the logits are copied back into a pinned
buffer, and the stream is synchronised. Buffers are allocated once for the engine's largest shape (the
optimisation profile's max batch for dynamic engines) and their addresses are bound once. ``cuda_graph=True``
captures ``execute_async_v3`` into a CUDA graph after the first eager call for a shape and replays it while the
shape stays the same (a new shape drops the graph and runs eagerly again).

Where device memory comes from (``buffers=``): torch CUDA tensors are preferred, then cuda-python, then pycuda,
and running a TensorRT predictor must never import torch (a firmware image ships tensorrt without
torch). ``buffers="auto"`` satisfies both:

1. ``torch`` if torch is *already imported* in this process: the application uses it anyway, so sharing its CUDA
   context and caching allocator costs nothing and avoids a second context;
2. ``cuda-python`` (``cuda.bindings.runtime``): NVIDIA's own samples use it and it has binary wheels;
3. ``pycuda``: works, but has no binary wheels (needs nvcc to install); its primary context is pushed per call;
4. ``torch``, imported now, only when it is the one CUDA binding installed.

So with cuda-python or pycuda installed no torch is imported; ``buffers="torch"|"cuda-python"|"pycuda"`` forces one.

Errors: a missing, empty or (per the manifest's sha256) truncated file is an ``EngineError`` before TensorRT is even
imported. An engine that TensorRT refuses (built by another TensorRT version or for another GPU, or corrupted) is an
``EngineError`` that states the versions and GPUs involved and what TensorRT logged.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .._optional import is_available, require
from ..errors import BackendUnavailableError, EngineError, InvalidInputError
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import DEFAULT_THRESHOLD, BasePredictor

BUFFER_PROVIDERS = ("torch", "cuda-python", "pycuda")
_log = logging.getLogger("lightseg_edge.runtimes.tensorrt")


# ---------------------------------------------------------------------------------------------------------------------
# engine file checks and deserialization
# ---------------------------------------------------------------------------------------------------------------------
def read_engine_file(path: Union[str, Path], expected_sha256: Optional[str] = None) -> bytes:
    """The engine bytes; EngineError for a missing, empty or (per ``expected_sha256``) truncated/corrupted file."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: TensorRT engine file not found")
    data = path.read_bytes()
    if not data:
        raise EngineError(f"{path}: the engine file is empty (0 bytes); rebuild it with lightseg-export or copy it again")
    if expected_sha256:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise EngineError(
                f"{path}: sha256 {got[:12]}... ({len(data)} bytes) does not match the manifest's {expected_sha256[:12]}...; "
                f"the engine file is truncated or corrupted (or not the one this export built). Copy it again or rebuild it"
            )
    return data


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors, so a refused engine's message can name the reason.

    Built inside a function: subclassing ``trt.ILogger`` at module level would import tensorrt on import.
    """

    class _CaptureLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(str(msg).strip())

    return _CaptureLogger()


def _describe(version: Any, gpu: Any, cc: Any) -> str:
    parts = [f"TensorRT {version or '?'}"]
    if gpu:
        parts.append(f"on {gpu}")
    if cc:
        parts.append(f"(compute capability {cc})")
    return " ".join(parts)


def engine_load_error(path: Union[str, Path], here: Dict[str, Any], built_with: Optional[Dict[str, Any]], log: List[str]) -> EngineError:
    """The message for an engine TensorRT refused: what built it, what runs here, what TensorRT said, what to do."""
    msg = f"{path}: TensorRT could not deserialize this engine. "
    here_s = _describe(here.get("version"), here.get("gpu"), here.get("compute_capability"))
    if built_with:
        built_s = _describe(built_with.get("version"), built_with.get("gpu"), built_with.get("compute_capability"))
        msg += f"It was built with {built_s}; this machine has {here_s}. "
        if built_with.get("version") and here.get("version") and str(built_with["version"]) != str(here["version"]):
            msg += "The TensorRT versions differ: an engine runs only on the TensorRT version that built it (unless built version-compatible). "
        if built_with.get("compute_capability") and here.get("compute_capability") and str(built_with["compute_capability"]) != str(here["compute_capability"]):
            msg += "The GPU architectures differ: an engine runs only on the GPU architecture it was built for (unless built hardware-compatible). "
    else:
        msg += f"This machine has {here_s}; engines run only on the TensorRT version and GPU architecture that built them. "
    msg += "A truncated or corrupted file fails the same way. Rebuild the engine on this device from the ONNX (lightseg-export) or copy it again."
    if log:
        msg += " TensorRT said: " + " | ".join(log[-5:])
    return EngineError(msg)


def deserialize_engine(trt: Any, data: bytes, path: Union[str, Path], here: Dict[str, Any],
                       built_with: Optional[Dict[str, Any]] = None, allow_host_code: bool = False) -> Tuple[Any, Any, Any]:
    """(runtime, engine, logger); the runtime must outlive the engine, so the caller keeps all three."""
    logger = _make_logger(trt)
    runtime = trt.Runtime(logger)
    if allow_host_code:
        # Version-compatible engines embed a lean runtime (host code): only for engines from a trusted source.
        runtime.engine_host_code_allowed = True
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # noqa: BLE001 - some releases raise instead of returning None; reported below
        logger.messages.append(f"{type(exc).__name__}: {exc}")
        engine = None
    if engine is None:
        raise engine_load_error(path, here, built_with, logger.messages)
    return runtime, engine, logger


# ---------------------------------------------------------------------------------------------------------------------
# CUDA buffer providers: one small interface over torch, cuda-python and pycuda
# ---------------------------------------------------------------------------------------------------------------------
class _Buffer:
    """A pinned host buffer (``host``: flat uint8 view) and a device buffer (``device``: pointer) of ``nbytes``."""

    def __init__(self, host: np.ndarray, device: int, nbytes: int, keep: Tuple[Any, ...] = ()) -> None:
        self.host = host
        self.device = int(device)
        self.nbytes = nbytes
        self.keep = keep  # owners (tensors / allocations) that must stay alive


class _TorchCuda:
    name = "torch"

    def __init__(self, index: int) -> None:
        torch = require("torch", purpose="TensorRT device buffers through torch")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"TensorRT buffers via torch: torch {torch.__version__} sees no CUDA device")
        self._torch = torch
        self._index = index
        self._dev = torch.device("cuda", index)
        self._stream = torch.cuda.Stream(device=self._dev)

    @property
    def stream_handle(self) -> int:
        return int(self._stream.cuda_stream)

    def activate(self):
        return self._torch.cuda.device(self._index)

    def alloc(self, nbytes: int) -> _Buffer:
        torch = self._torch
        host_t = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        dev_t = torch.empty(nbytes, dtype=torch.uint8, device=self._dev)
        return _Buffer(host_t.numpy(), dev_t.data_ptr(), nbytes, keep=(host_t, dev_t))

    def h2d(self, buf: _Buffer, nbytes: int) -> None:
        host_t, dev_t = buf.keep
        with self._torch.cuda.stream(self._stream):
            dev_t[:nbytes].copy_(host_t[:nbytes], non_blocking=True)

    def d2h(self, buf: _Buffer, nbytes: int) -> None:
        host_t, dev_t = buf.keep
        with self._torch.cuda.stream(self._stream):
            host_t[:nbytes].copy_(dev_t[:nbytes], non_blocking=True)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def capture(self, fn: Callable[[], None]) -> Any:
        graph = self._torch.cuda.CUDAGraph()
        with self._torch.cuda.graph(graph, stream=self._stream):
            fn()
        return graph

    def launch(self, graph: Any) -> None:
        with self._torch.cuda.stream(self._stream):
            graph.replay()

    def device_info(self) -> Dict[str, Any]:
        major, minor = self._torch.cuda.get_device_capability(self._index)
        return {"gpu": self._torch.cuda.get_device_name(self._index), "compute_capability": f"{major}.{minor}"}

    def free(self, buf: _Buffer) -> None:
        buf.keep = ()

    def close(self) -> None:
        self._stream = None


def _import_cudart() -> Any:
    require("cuda", purpose="TensorRT device buffers through cuda-python")
    try:
        return importlib.import_module("cuda.bindings.runtime")  # cuda-python >= 12.6
    except ImportError:
        return importlib.import_module("cuda.cudart")  # older cuda-python 11.x/12.x layout


class _CudaPython:
    name = "cuda-python"

    def __init__(self, index: int) -> None:
        self._rt = _import_cudart()
        self._index = index
        n = self._call(self._rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if index >= n:
            raise BackendUnavailableError(f"CUDA device {index} requested but {n} device(s) are visible")
        self._call(self._rt.cudaSetDevice(index), "cudaSetDevice")
        self._stream = self._call(self._rt.cudaStreamCreate(), "cudaStreamCreate")
        self._graphs: List[Tuple[Any, Any]] = []

    def _call(self, result: Any, what: str) -> Any:
        """cuda-python returns (error, *values); raise on error, unwrap a single value."""
        if not isinstance(result, tuple):
            result = (result,)
        err, values = result[0], result[1:]
        if err != self._rt.cudaError_t.cudaSuccess:
            text = self._rt.cudaGetErrorString(err)
            text = text[1] if isinstance(text, tuple) else text
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise BackendUnavailableError(f"CUDA call {what} failed on device {self._index}: {text}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    @property
    def stream_handle(self) -> int:
        try:
            from cuda.bindings.utils import get_cuda_native_handle  # int(handle) is deprecated from 12.9

            return int(get_cuda_native_handle(self._stream))
        except ImportError:
            return int(self._stream)

    @contextlib.contextmanager
    def activate(self):
        # The current device is per thread in the runtime API; a call may come from any thread.
        self._call(self._rt.cudaSetDevice(self._index), "cudaSetDevice")
        yield

    def alloc(self, nbytes: int) -> _Buffer:
        host_ptr = int(self._call(self._rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        host = np.ctypeslib.as_array(ctypes.cast(host_ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        dev_ptr = int(self._call(self._rt.cudaMalloc(nbytes), "cudaMalloc"))
        return _Buffer(host, dev_ptr, nbytes, keep=(host_ptr,))

    def h2d(self, buf: _Buffer, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(buf.device, buf.keep[0], nbytes, kind, self._stream), "cudaMemcpyAsync(H2D)")

    def d2h(self, buf: _Buffer, nbytes: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(buf.keep[0], buf.device, nbytes, kind, self._stream), "cudaMemcpyAsync(D2H)")

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def capture(self, fn: Callable[[], None]) -> Any:
        mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call(self._rt.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        try:
            fn()
        finally:
            graph = self._call(self._rt.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        exec_graph = self._call(self._rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._graphs.append((graph, exec_graph))
        return exec_graph

    def launch(self, graph: Any) -> None:
        self._call(self._rt.cudaGraphLaunch(graph, self._stream), "cudaGraphLaunch")

    def device_info(self) -> Dict[str, Any]:
        props = self._call(self._rt.cudaGetDeviceProperties(self._index), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}

    def free(self, buf: _Buffer) -> None:
        if buf.keep:
            self._rt.cudaFree(buf.device)
            self._rt.cudaFreeHost(buf.keep[0])
            buf.keep = ()

    def close(self) -> None:
        for graph, exec_graph in self._graphs:
            self._rt.cudaGraphExecDestroy(exec_graph)
            self._rt.cudaGraphDestroy(graph)
        self._graphs = []
        if self._stream is not None:
            self._rt.cudaStreamDestroy(self._stream)
            self._stream = None


class _PyCuda:
    name = "pycuda"

    def __init__(self, index: int) -> None:
        require("pycuda", purpose="TensorRT device buffers through pycuda")
        drv = importlib.import_module("pycuda.driver")
        drv.init()
        if index >= drv.Device.count():
            raise BackendUnavailableError(f"CUDA device {index} requested but {drv.Device.count()} device(s) are visible")
        self._drv = drv
        self._device = drv.Device(index)
        # The primary context is the one TensorRT's runtime-API calls use; pycuda.autoinit would create a second one.
        self._ctx = self._device.retain_primary_context()
        with self.activate():
            self._stream = drv.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    @contextlib.contextmanager
    def activate(self):
        # pycuda contexts are per thread: push for the duration of each call, whichever thread makes it.
        self._ctx.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def alloc(self, nbytes: int) -> _Buffer:
        host = self._drv.pagelocked_empty(nbytes, np.uint8)
        dev = self._drv.mem_alloc(nbytes)
        return _Buffer(host, int(dev), nbytes, keep=(host, dev))

    def h2d(self, buf: _Buffer, nbytes: int) -> None:
        self._drv.memcpy_htod_async(buf.keep[1], buf.keep[0][:nbytes], self._stream)

    def d2h(self, buf: _Buffer, nbytes: int) -> None:
        self._drv.memcpy_dtoh_async(buf.keep[0][:nbytes], buf.keep[1], self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def capture(self, fn: Callable[[], None]) -> Any:
        raise BackendUnavailableError("cuda_graph=True needs buffers='torch' or 'cuda-python'; the pycuda provider has no graph capture here")

    def launch(self, graph: Any) -> None:  # pragma: no cover - capture() refuses first
        raise BackendUnavailableError("no CUDA graphs with pycuda")

    def device_info(self) -> Dict[str, Any]:
        major, minor = self._device.compute_capability()
        return {"gpu": self._device.name(), "compute_capability": f"{major}.{minor}"}

    def free(self, buf: _Buffer) -> None:
        if buf.keep:
            buf.keep[1].free()
            buf.keep = ()

    def close(self) -> None:
        self._stream = None
        self._ctx.detach()


_PROVIDER_CLASSES = {"torch": _TorchCuda, "cuda-python": _CudaPython, "pycuda": _PyCuda}
_PROVIDER_MODULES = {"torch": "torch", "cuda-python": "cuda", "pycuda": "pycuda"}


def choose_buffer_provider(buffers: str = "auto") -> str:
    """The provider ``buffers="auto"`` picks here (see the module docstring for the order and why)."""
    if buffers != "auto":
        if buffers not in _PROVIDER_CLASSES:
            raise InvalidInputError(f"buffers={buffers!r}: expected 'auto' or one of {', '.join(BUFFER_PROVIDERS)}")
        return buffers
    if "torch" in sys.modules:
        return "torch"
    for name in ("cuda-python", "pycuda", "torch"):
        if is_available(_PROVIDER_MODULES[name]):
            return name
    raise BackendUnavailableError(
        "the TensorRT runtime needs a CUDA binding for device buffers and none is installed: "
        "pip install cuda-python (recommended; match your CUDA major version), or pycuda, or torch with CUDA"
    )


def _device_index(device: Optional[str]) -> int:
    if device is None or device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BackendUnavailableError(f"device {device!r}: the TensorRT runtime runs on a CUDA GPU; expected 'cuda' or 'cuda:N'")


# ---------------------------------------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------------------------------------
class TensorRTPredictor(BasePredictor):
    """A deserialized engine with one float input and one float logits output. UNVERIFIED (see module docstring)."""

    runtime_kind = Runtime.TENSORRT

    def __init__(self, path: Union[str, Path], preprocess: PreprocessConfig, input_spec: Optional[InputSpec] = None,
                 device: Optional[str] = None, buffers: str = "auto", cuda_graph: bool = False,
                 precision: Union[str, Precision] = Precision.FP16, expected_sha256: Optional[str] = None,
                 built_with: Optional[Dict[str, Any]] = None, allow_host_code: bool = False,
                 threshold: float = DEFAULT_THRESHOLD, tta: str = "none") -> None:
        path = Path(path)
        self._source = str(path)  # error messages during set-up name the file (BasePredictor sets it again)
        data = read_engine_file(path, expected_sha256)  # before importing tensorrt: cheap, clear failures first
        index = _device_index(device)
        trt = require("tensorrt", purpose="the TensorRT runtime")
        self._trt = trt
        self._cuda = _PROVIDER_CLASSES[choose_buffer_provider(buffers)](index)
        self._buffers: List[_Buffer] = []
        self._graph = None
        self._graph_shape: Optional[Tuple[int, ...]] = None
        self._use_graph = bool(cuda_graph)
        if self._use_graph and self._cuda.name == "pycuda":
            self._cuda.close()
            raise BackendUnavailableError("cuda_graph=True needs buffers='torch' or 'cuda-python'; the pycuda provider has no graph capture here")
        try:
            with self._cuda.activate():
                self._setup(trt, data, path, preprocess, input_spec, built_with, allow_host_code)
        except BaseException:
            self._release()
            raise
        h, w = self._in_shape_max[2], self._in_shape_max[3]
        spec = InputSpec(name=self._in_name, shape=(None if self._dynamic_batch else self._in_shape_max[0], 3,
                                                    None if self._engine_in_shape[2] < 0 else h,
                                                    None if self._engine_in_shape[3] < 0 else w),
                         dtype="float32", output_name=self._out_name)
        super().__init__(spec, preprocess, precision=Precision(precision), device=f"cuda:{index}", threshold=threshold, tta=tta,
                         source=str(path), max_batch_size=self._in_shape_max[0])

    def _setup(self, trt: Any, data: bytes, path: Path, preprocess: PreprocessConfig, input_spec: Optional[InputSpec],
               built_with: Optional[Dict[str, Any]], allow_host_code: bool) -> None:
        here = {"version": getattr(trt, "__version__", None)}
        try:
            here.update(self._cuda.device_info())
        except Exception as exc:  # noqa: BLE001 - diagnostics only; never hide the real error behind this one
            _log.debug("could not query the CUDA device for diagnostics: %s", exc)
        self._runtime, engine, self._logger = deserialize_engine(trt, data, path, here, built_with, allow_host_code)
        self._engine = engine

        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{path}: expected an engine with one input and one logits output, it has inputs {inputs} and outputs {outputs}")
        self._in_name, self._out_name = inputs[0], outputs[0]
        self._in_dtype = self._np_dtype(trt, engine.get_tensor_dtype(self._in_name), path, self._in_name)
        self._out_dtype = self._np_dtype(trt, engine.get_tensor_dtype(self._out_name), path, self._out_name)

        shape = tuple(int(d) for d in engine.get_tensor_shape(self._in_name))
        if len(shape) != 4 or shape[1] != 3:
            raise EngineError(f"{path}: input {self._in_name!r} has shape {list(shape)}; expected (N, 3, H, W)")
        self._engine_in_shape = shape
        self._dynamic_batch = shape[0] < 0
        if any(d < 0 for d in shape):
            # get_tensor_profile_shape -> (min, opt, max) of optimisation profile 0: size buffers for the max.
            profile = engine.get_tensor_profile_shape(self._in_name, 0)
            max_shape = tuple(int(d) for d in profile[-1])
        else:
            max_shape = shape
        if any(d < 0 for d in max_shape):
            raise EngineError(f"{path}: input {self._in_name!r} has dynamic shape {list(shape)} but no optimisation profile bounds it")
        if any(d < 0 for d in shape[2:]):
            max_shape = max_shape[:2] + tuple(int(s) for s in preprocess.size)
        self._in_shape_max = max_shape
        if input_spec is not None:
            if input_spec.name != self._in_name:
                raise EngineError(f"{path}: the manifest/option names the input {input_spec.name!r} but the engine's input is {self._in_name!r}")
            for axis, (a, b) in enumerate(zip(input_spec.shape, shape)):
                if a is not None and b >= 0 and a != b:
                    raise EngineError(f"{path}: the manifest/option says input shape {list(input_spec.shape)} but the engine has {list(shape)} (axis {axis})")

        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"{path}: TensorRT could not create an execution context (out of device memory?) " + " | ".join(self._logger.messages[-3:]))
        self._context = context
        self._last_shape: Optional[Tuple[int, ...]] = None
        self._set_shape(max_shape)
        out_max = tuple(int(d) for d in context.get_tensor_shape(self._out_name))
        if any(d < 0 for d in out_max):
            raise EngineError(f"{path}: cannot infer the output shape of {self._out_name!r} for input {list(max_shape)}")
        in_bytes = int(np.prod(max_shape)) * np.dtype(self._in_dtype).itemsize
        out_bytes = int(np.prod(out_max)) * np.dtype(self._out_dtype).itemsize
        self._in_buf = self._cuda.alloc(in_bytes)
        self._out_buf = self._cuda.alloc(out_bytes)
        self._buffers = [self._in_buf, self._out_buf]
        # Addresses never change (buffers are sized for the max shape), so bind them once.
        if not context.set_tensor_address(self._in_name, self._in_buf.device) or not context.set_tensor_address(self._out_name, self._out_buf.device):
            raise EngineError(f"{path}: TensorRT refused the I/O buffer addresses: " + " | ".join(self._logger.messages[-3:]))

    @staticmethod
    def _np_dtype(trt: Any, dtype: Any, path: Path, name: str) -> Any:
        try:
            np_type = np.dtype(trt.nptype(dtype))
        except TypeError as exc:  # bf16 / fp8 tensors have no numpy type
            raise EngineError(f"{path}: tensor {name!r} has TensorRT type {dtype}, which has no numpy equivalent; export with float32 I/O") from exc
        if np_type not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise EngineError(f"{path}: tensor {name!r} is {np_type}; expected float32 (or float16) I/O")
        return np_type.type

    def _set_shape(self, shape: Tuple[int, ...]) -> None:
        if shape == self._last_shape:
            return
        if any(d < 0 for d in self._engine_in_shape) and not self._context.set_input_shape(self._in_name, shape):
            raise InvalidInputError(f"{self._source or 'engine'}: TensorRT refused input shape {list(shape)} (outside the engine's optimisation profile?)")
        self._last_shape = shape
        self._graph = None  # a captured graph is only valid for the shape it was captured with

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._cuda.stream_handle):
            raise EngineError(f"{self._source}: TensorRT execute_async_v3 failed: " + " | ".join(self._logger.messages[-3:]))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._cuda.activate():
            self._set_shape(tuple(batch.shape))
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._out_name))
            n_in = batch.size * np.dtype(self._in_dtype).itemsize
            n_out = int(np.prod(out_shape)) * np.dtype(self._out_dtype).itemsize
            host_in = self._in_buf.host[:n_in].view(self._in_dtype).reshape(batch.shape)
            np.copyto(host_in, batch, casting="same_kind")  # float32 -> float16 for fp16-I/O engines
            self._cuda.h2d(self._in_buf, n_in)
            if self._graph is not None and self._graph_shape == batch.shape:
                self._cuda.launch(self._graph)
            else:
                self._enqueue()
            self._cuda.d2h(self._out_buf, n_out)
            self._cuda.synchronize()
            if self._use_graph and self._graph is None:
                # TensorRT needs one eager enqueue per shape before capture (deferred initialisation).
                self._graph = self._cuda.capture(self._enqueue)
                self._graph_shape = tuple(batch.shape)
            out = self._out_buf.host[:n_out].view(self._out_dtype).reshape(out_shape)
            return out.astype(np.float32)  # a copy: the pinned buffer is reused by the next call

    def _release(self) -> None:
        cuda = getattr(self, "_cuda", None)
        if cuda is None:
            return
        for buf in getattr(self, "_buffers", []):
            try:
                cuda.free(buf)
            except Exception as exc:  # noqa: BLE001 - freeing during teardown must not mask the original error
                _log.debug("freeing a TensorRT buffer failed: %s", exc)
        self._buffers = []
        self._graph = None
        # Drop TensorRT objects before the CUDA stream/context they ran on (context, engine, then runtime).
        self._context = None
        self._engine = None
        self._runtime = None
        cuda.close()
        self._cuda = None

    def _close(self) -> None:
        self._release()
