"""The native TensorRT adapter.

On a CPU machine: the API-surface check (every ``trt``/engine/context attribute the adapter uses exists in TensorRT
10.3, 10.16 and 11.4, or is reached only behind ``hasattr``), the error paths that run before or around
deserialization (with a stand-in ``tensorrt`` module), and the buffer-provider choice. On a GPU with TensorRT:
build an engine from the ONNX and check it against ONNX Runtime.
"""

from __future__ import annotations

import ast
import os
import sys
import types
from pathlib import Path
from typing import ClassVar, Dict, Set

import numpy as np
import pytest

import lightseg_edge.runtimes.tensorrt_backend as trt_backend
from lightseg_edge._optional import is_available
from lightseg_edge.errors import BackendUnavailableError, EngineError, MissingDependencyError
from lightseg_edge.types import PreprocessConfig

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ("10.3.0", "10.16.1.11", "11.4.0.106")
# Receivers whose attributes are TensorRT API: the module, the runtime, engine and execution context objects.
TRT_RECEIVERS = {"trt", "runtime", "engine", "context", "self._engine", "self._context", "self._runtime"}


def _api_dir() -> Path:
    env = os.environ.get("LIGHTSEG_TRT_API_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "reference" / "tensorrt-api"]:
        if (cand / "README.md").is_file():
            return cand
    pytest.skip("TensorRT API name lists not found (set LIGHTSEG_TRT_API_DIR or place them at ../shared/reference/tensorrt-api)")


def _names(api: Path, release: str) -> Set[str]:
    """The names the release's bindings store as whole strings (``.tokens.txt`` also holds docstring words, such as
    the removed ``device_memory_size`` that 11.x docstrings still mention, so it cannot prove presence)."""
    return set((api / f"{release}.txt").read_text().split())


def _exists(name: str, names: Set[str]) -> bool:
    # A short name can be stored only as the tail of a longer string (the linker merges shared suffixes: INPUT lives
    # inside CONDITIONAL_INPUT, INT8 inside longer names); the lists' README documents this.
    return name in names or any(n.endswith(name) for n in names)


def _receiver(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - an odd node is simply not a receiver we track
        return ""


def _used_attributes(source: str) -> Dict[str, Set[int]]:
    """attribute name -> lines, for attribute chains rooted at a TensorRT receiver, outside hasattr guards."""
    tree = ast.parse(source)
    guarded: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)):
            test = ast.unparse(node.test)
            if "hasattr(" in test:
                body = node.body if isinstance(node.body, list) else [node.body]
                for stmt in body:
                    guarded.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    used: Dict[str, Set[int]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute) and _receiver(base) not in TRT_RECEIVERS:
            chain.append(base.attr)
            base = base.value
        if _receiver(base) in TRT_RECEIVERS and node.lineno not in guarded:
            for name in chain:
                if not name.startswith("__"):
                    used.setdefault(name, set()).add(node.lineno)
    return used


def test_tensorrt_api_surface_exists_in_10_3_10_16_and_11_4():
    api = _api_dir()
    source = Path(trt_backend.__file__).read_text()
    used = _used_attributes(source)
    # The walk must see the calls the adapter is built on, or it is checking nothing.
    for core in ("Runtime", "deserialize_cuda_engine", "num_io_tensors", "get_tensor_name", "get_tensor_mode", "TensorIOMode",
                 "INPUT", "get_tensor_shape", "get_tensor_dtype", "get_tensor_profile_shape", "nptype", "create_execution_context",
                 "set_input_shape", "set_tensor_address", "execute_async_v3", "ILogger", "Severity", "WARNING"):
        assert core in used, f"{core} not found in tensorrt_backend.py"
    missing = {}
    for release in RELEASES:
        names = _names(api, release)
        gone = sorted(n for n in used if not _exists(n, names))
        if gone:
            missing[release] = {n: sorted(used[n]) for n in gone}
    assert not missing, f"TensorRT attributes used without a hasattr guard that some release lacks (name: lines): {missing}"


def test_api_check_catches_removed_names():
    """The surface check itself: names removed in 11.x are flagged, guarded uses are not."""
    api = _api_dir()
    names_11 = _names(api, "11.4.0.106")
    src = (
        "def f(trt, engine):\n"
        "    a = engine.device_memory_size\n"
        "    b = trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH\n"
        "    if hasattr(engine, 'device_memory_size_v2'):\n"
        "        c = engine.device_memory_size_v2\n"
    )
    used = _used_attributes(src)
    assert not _exists("EXPLICIT_BATCH", names_11) and not _exists("device_memory_size", names_11)
    assert _exists("EXPLICIT_BATCH", _names(api, "10.3.0")) and _exists("device_memory_size", _names(api, "10.16.1.11"))
    assert {"device_memory_size", "EXPLICIT_BATCH"} <= set(used) and "device_memory_size_v2" not in used


# -- error paths with a stand-in tensorrt module -------------------------------------------------------------------
def _fake_trt(version: str, log_message: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Sev(int):
        pass

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=Sev(0), ERROR=Sev(1), WARNING=Sev(2), INFO=Sev(3))

        def __init__(self):
            pass

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            self.logger.log(ILogger.Severity.INFO, "loading")  # below WARNING: not kept
            self.logger.log(ILogger.Severity.ERROR, log_message)
            return None  # noqa: RET501, PLR1711 - what TensorRT returns for a refused engine

    trt.ILogger, trt.Runtime = ILogger, Runtime
    return trt


def test_engine_from_another_version_and_gpu_is_explained():
    trt = _fake_trt("11.4.0.106", "Serialization assertion failed: magic tag / version mismatch")
    here = {"version": "11.4.0.106", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    built = {"version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    with pytest.raises(EngineError) as info:
        trt_backend.deserialize_engine(trt, b"\x00" * 128, "model.fp16.plan", here, built)
    msg = str(info.value)
    assert "model.fp16.plan: TensorRT could not deserialize this engine" in msg
    assert "built with TensorRT 10.3.0 on Orin (compute capability 8.7)" in msg
    assert "this machine has TensorRT 11.4.0.106 on NVIDIA H100 (compute capability 9.0)" in msg
    assert "TensorRT versions differ" in msg and "GPU architectures differ" in msg
    assert "TensorRT said: Serialization assertion failed" in msg and "loading" not in msg
    assert "Rebuild the engine on this device" in msg


def test_engine_refused_without_a_manifest_still_says_why():
    trt = _fake_trt("10.16.1.11", "engine plan file is corrupted")
    with pytest.raises(EngineError, match=r"This machine has TensorRT 10.16.1.11.*TensorRT said: engine plan file is corrupted"):
        trt_backend.deserialize_engine(trt, b"\x01", "m.plan", {"version": "10.16.1.11"}, None)


def test_plan_without_tensorrt_installed(tmp_path, monkeypatch):
    if is_available("tensorrt"):
        pytest.skip("tensorrt is installed here")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 256)
    from lightseg_edge.runtimes import load_predictor

    with pytest.raises(MissingDependencyError, match=r"'tensorrt' package is needed for the TensorRT runtime.*lightseg-edge\[trt\]"):
        load_predictor(plan, preprocess=PreprocessConfig())


def test_cpu_device_is_refused_for_tensorrt(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x00" * 256)
    from lightseg_edge.runtimes import load_predictor

    with pytest.raises(BackendUnavailableError, match="runs on a CUDA GPU"):
        load_predictor(plan, preprocess=PreprocessConfig(), device="cpu")


def test_buffer_provider_choice(monkeypatch):
    avail = {"torch": True, "cuda": True, "pycuda": True}
    monkeypatch.setattr(trt_backend, "is_available", lambda name: avail.get(name, False))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert trt_backend.choose_buffer_provider() == "cuda-python"  # torch installed but not in use: not imported
    avail["cuda"] = False
    assert trt_backend.choose_buffer_provider() == "pycuda"
    avail["pycuda"] = False
    assert trt_backend.choose_buffer_provider() == "torch"  # the only binding left
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    avail.update(cuda=True, pycuda=True)
    assert trt_backend.choose_buffer_provider() == "torch"  # already imported by the app: share its CUDA context
    assert trt_backend.choose_buffer_provider("pycuda") == "pycuda"
    avail.update(torch=False, cuda=False, pycuda=False)
    monkeypatch.delitem(sys.modules, "torch")
    with pytest.raises(BackendUnavailableError, match="pip install cuda-python"):
        trt_backend.choose_buffer_provider()


# -- the whole data path on a simulated engine and CUDA provider -------------------------------------------------------
class FakeCuda:
    """Host-memory stand-in for a CUDA provider: 'device' buffers are numpy arrays found by their fake pointer."""

    name = "fake"
    memory: ClassVar[Dict[int, np.ndarray]] = {}

    def __init__(self, index):
        self.stream_handle = 1234
        self.captured = 0
        self.launched = 0

    def activate(self):
        import contextlib

        return contextlib.nullcontext()

    def alloc(self, nbytes):
        dev = np.zeros(nbytes, np.uint8)
        ptr = 10_000 + len(FakeCuda.memory)
        FakeCuda.memory[ptr] = dev
        return trt_backend._Buffer(np.zeros(nbytes, np.uint8), ptr, nbytes, keep=(dev,))

    def h2d(self, buf, nbytes):
        buf.keep[0][:nbytes] = buf.host[:nbytes]

    def d2h(self, buf, nbytes):
        buf.host[:nbytes] = buf.keep[0][:nbytes]

    def synchronize(self):
        pass

    def capture(self, fn):
        self.captured += 1
        return fn  # "replaying" the graph re-runs the captured enqueue

    def launch(self, graph):
        self.launched += 1
        graph()

    def device_info(self):
        return {"gpu": "Fake GPU", "compute_capability": "0.0"}

    def free(self, buf):
        buf.keep = ()

    def close(self):
        pass


def _fake_engine_trt(in_shape, in_dtype=np.float32, profile_max=4):
    """A tensorrt stand-in whose engine computes logit = mean over channels - 0.5 (like MeanPredictor)."""
    trt = _fake_trt("10.16.1.11", "")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: dt

    class Context:
        def __init__(self):
            self.addr, self.shape = {}, tuple(d if d > 0 else 1 for d in in_shape)

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return shape[0] <= profile_max

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else (self.shape[0], 1, *self.shape[2:])

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            assert stream == 1234
            n = int(np.prod(self.shape))
            x = FakeCuda.memory[self.addr["input"]][: n * np.dtype(in_dtype).itemsize].view(in_dtype).reshape(self.shape)
            y = x.astype(np.float32).mean(axis=1, keepdims=True) - 0.5
            FakeCuda.memory[self.addr["logits"]][: y.nbytes] = y.reshape(-1).view(np.uint8)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name):
            return in_dtype if name == "input" else np.float32

        def get_tensor_shape(self, name):
            return in_shape if name == "input" else (in_shape[0], 1, *in_shape[2:])

        def get_tensor_profile_shape(self, name, profile):
            full = (profile_max, *in_shape[1:])
            return (1, *in_shape[1:]), full, full

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine()

    trt.Runtime = Runtime
    return trt


@pytest.fixture()
def fake_engine(monkeypatch, tmp_path):
    def make(in_shape, in_dtype=np.float32, **kw):
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_engine_trt(in_shape, in_dtype))
        monkeypatch.setitem(trt_backend._PROVIDER_CLASSES, "torch", FakeCuda)
        plan = tmp_path / "m.plan"
        plan.write_bytes(b"engine")
        return trt_backend.TensorRTPredictor(plan, PreprocessConfig(size=(32, 32), mode="scale"), buffers="torch", **kw)

    return make


@pytest.mark.parametrize("in_dtype", [np.float32, np.float16])
def test_simulated_dynamic_engine_data_path(fake_engine, in_dtype):
    p = fake_engine((-1, 3, 32, 32), in_dtype)
    assert p.input_spec.shape == (None, 3, 32, 32) and p.max_batch_size == 4 and p.device == "cuda:0"
    imgs = [np.full((20, 30, 3), v, np.uint8) for v in (255, 0, 200, 10, 255, 0)]  # 6 images: 4 + 2
    masks = p.predict_batch(imgs)
    assert [bool(m.all()) for m in masks] == [True, False, True, False, True, False]
    np.testing.assert_allclose(p.predict_proba(imgs[0]), 1 / (1 + np.exp(-0.5)), rtol=1e-3)
    p.close()


def test_simulated_static_engine_with_cuda_graph(fake_engine):
    p = fake_engine((2, 3, 32, 32), cuda_graph=True)
    assert p.static_batch_size == 2
    for _ in range(3):
        assert p.predict(np.full((8, 8, 3), 255, np.uint8)).all()
    assert p._cuda.captured == 1 and p._cuda.launched == 2  # eager + capture, then two replays
    p.close()


def test_simulated_engine_input_spec_mismatch(fake_engine):
    from lightseg_edge.types import InputSpec

    with pytest.raises(EngineError, match=r"names the input 'images' but the engine's input is 'input'"):
        fake_engine((-1, 3, 32, 32), input_spec=InputSpec(name="images", shape=(None, 3, 32, 32)))


# -- on a GPU with TensorRT ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plan(export_dir, tmp_path_factory):
    from runtime_helpers import build_trt_engine

    return build_trt_engine(export_dir / "model.onnx", tmp_path_factory.mktemp("plan") / "model.plan")


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("buffers", ["torch", "cuda-python", "pycuda"])
def test_engine_matches_onnxruntime(plan, export_dir, sample_images, buffers):
    from lightseg_edge.runtimes import load_predictor

    module = {"torch": "torch", "cuda-python": "cuda", "pycuda": "pycuda"}[buffers]
    if not is_available(module):
        pytest.skip(f"{buffers} is not installed")
    pre = PreprocessConfig()
    with load_predictor(plan, preprocess=pre, buffers=buffers) as p, load_predictor(export_dir, runtime="onnxruntime") as ref:
        assert p.max_batch_size == 4
        got, want = p.predict_proba_batch(sample_images), ref.predict_proba_batch(sample_images)  # 8 images: 4 + 4
        assert max(float(np.abs(a - b).max()) for a, b in zip(got, want)) < 1e-3


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_cuda_graph_replay_matches_eager(plan, sample_images):
    from lightseg_edge.runtimes import load_predictor

    with load_predictor(plan, preprocess=PreprocessConfig()) as eager, load_predictor(plan, preprocess=PreprocessConfig(), cuda_graph=True) as graphed:
        for _ in range(3):  # first call eager + capture, then replays
            np.testing.assert_allclose(graphed.predict_proba(sample_images[0]), eager.predict_proba(sample_images[0]), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_truncated_real_engine(plan, tmp_path):
    from lightseg_edge.runtimes import load_predictor

    cut = tmp_path / "cut.plan"
    cut.write_bytes(plan.read_bytes()[:1000])
    with pytest.raises(EngineError, match="could not deserialize this engine"):
        load_predictor(cut, preprocess=PreprocessConfig())
