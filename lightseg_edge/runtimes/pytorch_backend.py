"""PyTorch adapter: a zoo model (its ``deploy()`` form) on CPU or CUDA.

torch is imported when a predictor is created, never at module import. On CUDA, ``precision="fp16"`` runs the model
under ``torch.autocast(float16)`` (weights stay fp32, logits come back as float32), and ``cuda_graph=True`` captures
one CUDA graph for the first batch shape seen and replays it for that shape (other shapes run eagerly).
On CUDA, fp32 means IEEE fp32 convolutions: cuDNN's default TF32 is switched off inside the forward pass.
The CUDA paths (fp32, fp16 autocast, CUDA graphs) were run on an NVIDIA H100 with torch 2.11 + CUDA 13.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import numpy as np

from .._optional import require
from ..errors import BackendUnavailableError, InvalidInputError
from ..types import InputSpec, Precision, PreprocessConfig, Runtime
from .base import DEFAULT_THRESHOLD, BasePredictor, check_threads

_GRAPH_WARMUP = 3  # eager iterations on a side stream before capture, as the torch CUDA-graph docs require


def _ieee_fp32_convolutions(torch: Any):
    """cuDNN runs fp32 convolutions in TF32 by default; "fp32" here means fp32, so batch and single calls agree."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False)


def resolve_torch_device(torch: Any, device: Optional[str]) -> Any:
    """``None`` -> CUDA when available, else CPU; an explicit CUDA device that is missing is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"device {device!r} is not a torch device; expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but this PyTorch build sees no CUDA device (torch {torch.__version__}); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


class PyTorchPredictor(BasePredictor):
    runtime_kind = Runtime.PYTORCH

    def __init__(self, model: Any, preprocess: Optional[PreprocessConfig] = None, device: Optional[str] = None,
                 precision: str = "fp32", cuda_graph: bool = False, threads: Optional[int] = None,
                 threshold: float = DEFAULT_THRESHOLD, source: str = "", tta: str = "none") -> None:
        torch = require("torch", purpose="the PyTorch runtime")
        self._torch = torch
        dev = resolve_torch_device(torch, device)
        prec = Precision(precision)
        if prec is Precision.INT8:
            raise BackendUnavailableError("the PyTorch runtime has no INT8 mode; export an INT8 ONNX (lightseg-export --precision int8) and use runtime='onnxruntime' or 'tensorrt'")
        if prec is Precision.FP16 and dev.type != "cuda":
            raise BackendUnavailableError(f"precision='fp16' (autocast) needs a CUDA device, got {dev}; use precision='fp32' on CPU or an fp16 ONNX with onnxruntime")
        if cuda_graph and dev.type != "cuda":
            raise BackendUnavailableError(f"cuda_graph=True needs a CUDA device, got {dev}")
        threads = check_threads(threads)
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide in PyTorch: documented in load_predictor
        if preprocess is None:
            cfg = getattr(model, "cfg", None)
            if cfg is None or not hasattr(cfg, "preprocess"):
                raise InvalidInputError(f"{type(model).__name__}: not a lightseg zoo model (no .cfg.preprocess); pass preprocess=PreprocessConfig(...)")
            preprocess = cfg.preprocess
        deploy = getattr(model, "deploy", None)
        model = deploy() if callable(deploy) else model
        self._model = model.eval().to(dev)
        self._dev = dev
        self._fp16 = prec is Precision.FP16
        self._use_graph = bool(cuda_graph)
        self._graph = None  # (shape, graph, static_in, static_out)
        h, w = preprocess.size
        spec = InputSpec(name="input", shape=(None, 3, int(h), int(w)))
        super().__init__(spec, preprocess, precision=prec, device=str(dev), threshold=threshold, tta=tta,
                         source=source or getattr(model, "name", type(model).__name__))

    @property
    def model(self) -> Any:
        return self._model

    def _autocast(self):
        if self._fp16:
            return self._torch.autocast(device_type="cuda", dtype=self._torch.float16)
        if self._dev.type == "cuda":
            return _ieee_fp32_convolutions(self._torch)
        return contextlib.nullcontext()

    def _forward(self, x):
        with self._autocast():
            return self._model(x)

    def _capture(self, x):
        torch = self._torch
        static_in = torch.empty_like(x)
        static_in.copy_(x)
        side = torch.cuda.Stream(device=self._dev)
        side.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(side):
            for _ in range(_GRAPH_WARMUP):
                self._forward(static_in)
        torch.cuda.current_stream(self._dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        self._graph = (tuple(x.shape), graph, static_in, static_out)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            x = torch.from_numpy(batch).to(self._dev)
            if self._use_graph:
                if self._graph is None:
                    self._capture(x)
                shape, graph, static_in, static_out = self._graph
                if tuple(x.shape) == shape:
                    static_in.copy_(x)
                    graph.replay()
                    return static_out.float().cpu().numpy()
            return self._forward(x).float().cpu().numpy()

    def _close(self) -> None:
        self._graph = None
        self._model = None
        if self._dev.type == "cuda":
            self._torch.cuda.empty_cache()
