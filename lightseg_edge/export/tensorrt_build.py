"""TensorRT engine (``.plan``) from a precision-carrying ONNX graph.

UNVERIFIED: written against NVIDIA's documented TensorRT Python API (releases 10.3, 10.16 and 11.4; the names used
are checked by tests/export/test_tensorrt_api_surface.py) and NVIDIA's ONNX sample, but
never run: the development machine has no GPU and no TensorRT. Build and run it on the target before relying on it.

How precision gets into the engine:
- TensorRT >= 9 (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists): a strongly-typed network. Every tensor
  keeps the type the ONNX graph gives it (FP32 graph, FP16 graph with FP32 I/O, or a Q/DQ INT8 graph), and no
  precision builder flag is set; TensorRT 10.12 deprecated them and 11.0 removed them. In 11.x the flag is ignored
  (strong typing is always on) but still accepted.
- TensorRT 8.5/8.6 (JetPack 5 / 6.0, no STRONGLY_TYPED): the same graphs with ``BuilderFlag.FP16`` for the FP16
  graph and ``BuilderFlag.INT8`` for the Q/DQ graph (8.x needs the flag for any quantized network).
Every branch is chosen by feature detection (``hasattr``), never by parsing version strings.

Also: a persistent timing cache (reused when it fits this GPU and TensorRT version), a workspace memory limit, an
optimization profile for a dynamic batch, and the built engine is deserialized once to prove it loads. Engines are
specific to the TensorRT version and the GPU (compute capability), which ``EngineInfo`` records for the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from .._atomic import write_bytes_atomic
from .._optional import is_available, require
from ..errors import EngineError
from .config import DEFAULT_WORKSPACE_MB

log = logging.getLogger("lightseg_edge.export")

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class EngineInfo:
    path: Path
    precision: str
    mode: str  # "strongly-typed" | "builder-flags"
    tensorrt: str
    gpu: str
    compute_capability: str
    workspace_mb: int
    profile: Optional[dict]
    timing_cache: Optional[str]
    size_bytes: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = self.path.name
        return d

    def summary(self) -> str:
        return (
            f"{self.path.name}: {self.precision} {self.mode} engine, TensorRT {self.tensorrt} on {self.gpu} (sm {self.compute_capability})"
        )


def gpu_info() -> Optional[Tuple[str, str]]:
    """(GPU name, compute capability 'major.minor') of device 0, or None without a usable CUDA GPU. UNVERIFIED."""
    if is_available("torch"):
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
        return None
    for mod in ("cuda.bindings.runtime", "cuda.cudart"):  # cuda-python, new and old module names
        try:
            cudart = __import__(mod, fromlist=["cudaGetDeviceProperties"])
        except ImportError:
            continue
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            return None
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return name.rstrip("\x00"), f"{prop.major}.{prop.minor}"
    return None


def target_status() -> Tuple[bool, str]:
    """(can an engine be built here, why not)."""
    if not is_available("tensorrt"):
        return False, "TensorRT is not installed here (pip 'tensorrt' on a desktop GPU, JetPack's python3-libnvinfer on a Jetson)"
    if gpu_info() is None:
        return False, "no CUDA GPU is available here (torch.cuda / cuda-python found none)"
    return True, ""


def _network_flags(trt) -> Tuple[int, bool]:
    """(create_network flags, strongly typed?)."""
    flags = 0
    kinds = trt.NetworkDefinitionCreationFlag
    # Implicit batch went away in TensorRT 10 together with the binding API; before that, explicit batch is opt-in.
    if hasattr(trt.ICudaEngine, "num_bindings") and hasattr(kinds, "EXPLICIT_BATCH"):
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if hasattr(kinds, "STRONGLY_TYPED"):
        return flags | (1 << int(kinds.STRONGLY_TYPED)), True
    return flags, False


def _set_workspace(trt, config, workspace_mb: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    else:  # TensorRT <= 8.3
        config.max_workspace_size = workspace_mb << 20


def _precision_flags(trt, config, precision: str) -> None:
    """Weakly-typed TensorRT (8.5/8.6) only: let the builder use the precision the graph was converted to."""
    wanted = {"fp16": "FP16", "int8": "INT8"}.get(precision)
    if wanted is None:
        return
    if not hasattr(trt.BuilderFlag, wanted):
        raise EngineError(f"this TensorRT has neither strongly-typed networks nor BuilderFlag.{wanted}; cannot build a {precision} engine")
    config.set_flag(getattr(trt.BuilderFlag, wanted))


def _load_timing_cache(config, path: Optional[Path]):
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        log.info("timing cache %s does not fit this GPU/TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)




def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    input_name: str,
    profile: Optional[Tuple[Shape, Shape, Shape]] = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: Optional[Path] = None,
) -> EngineInfo:
    """Parse ``onnx_path`` (whose tensor types carry ``precision``) and write a serialized engine. UNVERIFIED.

    ``profile`` = (min, opt, max) input shapes for a dynamic batch; None for a static graph.
    """
    trt = require("tensorrt", extra="trt", purpose="building a TensorRT engine")
    gpu = gpu_info()
    if gpu is None:
        raise EngineError("no CUDA GPU is available to build the engine on")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags, strongly_typed = _network_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors: List[str] = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"{onnx_path}: the TensorRT ONNX parser rejected the graph: {'; '.join(errors) or 'no detail given'}")
    config = builder.create_builder_config()
    _set_workspace(trt, config, workspace_mb)
    if not strongly_typed:
        _precision_flags(trt, config, precision)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets lightseg-bench show per-layer precisions
    _load_timing_cache(config, timing_cache)
    prof_dict = None
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(input_name, profile[0], profile[1], profile[2])
        config.add_optimization_profile(opt_profile)
        prof_dict = {"min": list(profile[0]), "opt": list(profile[1]), "max": list(profile[2])}
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build a {precision} engine (see the TensorRT log above)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None or engine.num_io_tensors != 2:
        raise EngineError(f"{engine_path.name}: the engine just built does not load back with one input and one output")
    write_bytes_atomic(engine_path, memoryview(serialized), durable=True)
    if timing_cache is not None:
        write_bytes_atomic(timing_cache, memoryview(config.get_timing_cache().serialize()), durable=True)
    return EngineInfo(
        path=engine_path,
        precision=precision,
        mode="strongly-typed" if strongly_typed else "builder-flags",
        tensorrt=str(getattr(trt, "__version__", "unknown")),
        gpu=gpu[0],
        compute_capability=gpu[1],
        workspace_mb=workspace_mb,
        profile=prof_dict,
        timing_cache=timing_cache.name if timing_cache is not None else None,
        size_bytes=engine_path.stat().st_size,
    )


def target_command(onnx_path: Path, precision: str, dynamic_batch: Optional[Tuple[int, int, int]], workspace_mb: int) -> str:
    """The command that builds this export's engine on the target device, from the exported folder."""
    parts = ["lightseg-export", "--from-onnx", str(onnx_path)]
    if precision == "fp16":
        parts.append("--fp16")
    elif precision == "int8":
        parts.append("--int8")
    if dynamic_batch is not None:
        parts += ["--dynamic-batch", ",".join(str(v) for v in dynamic_batch)]
    if workspace_mb != DEFAULT_WORKSPACE_MB:
        parts += ["--workspace", str(workspace_mb)]
    return " ".join(parts)
