"""TensorRT engine building.

The real builds need TensorRT and a GPU (marker ``tensorrt``; skipped with a reason here). What can be checked
without them is the builder's own control flow, against a stand-in ``tensorrt`` module that mimics the three API
generations: which network flags and builder flags are chosen by feature detection, the workspace limit, the
optimization profile, the timing cache round trip and the atomic engine write. The stand-in proves the logic, not
that TensorRT accepts the calls; test_tensorrt_api_surface.py checks the names against the real releases.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from export_helpers import small_config

from lightseg_edge.errors import EngineError


class _Recorder:
    def __init__(self) -> None:
        self.calls = []


def _fake_trt(generation: str, parse_ok: bool = True):
    rec = _Recorder()
    flags_cls = {"STRONGLY_TYPED": 5}
    if generation in ("8.6", "10"):
        flags_cls["EXPLICIT_BATCH"] = 0
    if generation == "8.6":
        del flags_cls["STRONGLY_TYPED"]
    builder_flags = {"TF32": 7} if generation == "11" else {"TF32": 7, "FP16": 0, "INT8": 1}
    engine_cls = type("ICudaEngine", (), {"num_bindings": 2} if generation == "8.6" else {})

    class HostMemory(bytes):
        pass

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"cache:" + bytes(self.data)

    class Config:
        def __init__(self):
            self.timing = None

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("workspace", pool, size))

        def set_flag(self, flag):
            rec.calls.append(("set_flag", flag))

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.calls.append(("timing_cache", bytes(cache.data)))
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

        def add_optimization_profile(self, profile):
            rec.calls.append(("profile", profile.shapes))

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.calls.append(("network_flags", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return HostMemory(b"PLAN")

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec.calls.append(("parse", path))
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Conv): unsupported zero point"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return SimpleNamespace(num_io_tensors=2)

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    trt = SimpleNamespace(
        __version__={"8.6": "8.6.2", "10": "10.3.0", "11": "11.4.0"}[generation],
        Logger=Logger,
        Builder=Builder,
        OnnxParser=Parser,
        Runtime=Runtime,
        ICudaEngine=engine_cls,
        NetworkDefinitionCreationFlag=SimpleNamespace(**flags_cls),
        BuilderFlag=SimpleNamespace(**builder_flags),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        ProfilingVerbosity=SimpleNamespace(DETAILED="detailed"),
    )
    return trt, rec


@pytest.fixture
def patched(monkeypatch):
    import lightseg_edge.export.tensorrt_build as tb

    def use(generation, parse_ok=True):
        trt, rec = _fake_trt(generation, parse_ok)
        monkeypatch.setattr(tb, "require", lambda *a, **k: trt)
        monkeypatch.setattr(tb, "gpu_info", lambda: ("Fake Orin", "8.7"))
        return tb, rec

    return use


@pytest.mark.parametrize(
    "generation, precision, network_flags, builder_flags, mode",
    [
        ("10", "fp16", 1 << 5, [], "strongly-typed"),  # STRONGLY_TYPED only; EXPLICIT_BATCH is a no-op there
        ("11", "int8", 1 << 5, [], "strongly-typed"),  # no EXPLICIT_BATCH, no precision flags at all
        ("8.6", "fp16", 1 << 0, [("set_flag", 0)], "builder-flags"),  # JetPack 6.0: explicit batch + FP16 flag
        ("8.6", "int8", 1 << 0, [("set_flag", 1)], "builder-flags"),  # Q/DQ on 8.x needs the INT8 flag
    ],
)
def test_build_chooses_paths_by_feature_detection(patched, tmp_path, generation, precision, network_flags, builder_flags, mode):
    tb, rec = patched(generation)
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"onnx")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    info = tb.build_engine(
        onnx_path, tmp_path / "model.plan", precision, "input", ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)), 256, cache
    )
    assert ("network_flags", network_flags) in rec.calls
    assert [c for c in rec.calls if c[0] == "set_flag"] == builder_flags
    assert ("workspace", "workspace", 256 << 20) in rec.calls
    assert ("timing_cache", b"old") in rec.calls and cache.read_bytes() == b"cache:old"
    assert ("profile", ("input", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))) in rec.calls
    assert (tmp_path / "model.plan").read_bytes() == b"PLAN"
    assert info.mode == mode and info.gpu == "Fake Orin" and info.compute_capability == "8.7"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parser_errors_are_reported_and_nothing_is_written(patched, tmp_path):
    tb, _ = patched("10", parse_ok=False)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(EngineError, match=r"rejected the graph: In node 3 \(Conv\): unsupported zero point"):
        tb.build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", "int8", "input")
    assert not (tmp_path / "model.plan").exists()


def test_no_tensorrt_here_is_reported_as_a_reason():
    from lightseg_edge._optional import is_available
    from lightseg_edge.export.tensorrt_build import target_status

    ok, reason = target_status()
    if is_available("tensorrt"):
        pytest.skip("TensorRT is installed here")
    assert not ok and "TensorRT is not installed" in reason


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_and_loads(precision, sample_dir, tmp_path):
    """On a GPU machine with TensorRT: the strongly-typed engine builds from the precision-carrying ONNX."""
    from lightseg_edge.export import export
    from lightseg_edge.manifest import read_manifest, verify_artifacts

    kw = {"fp16": precision == "fp16", "int8": precision == "int8", "calib_data": str(sample_dir) if precision == "int8" else None}
    res = export(small_config(sample_dir, tmp_path / "out", model="ucmnet", weights="random", dynamic_batch=(1, 2, 4), **kw))
    assert res.engine is not None and res.engine.stat().st_size > 0
    m = read_manifest(tmp_path / "out")
    assert verify_artifacts(tmp_path / "out", m) == []
    assert m["artifacts"]["engine"]["precision"] == precision and m["tensorrt"]["version"]
