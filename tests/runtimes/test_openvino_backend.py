"""The OpenVINO adapter on OpenVINO's CPU plugin: masks equal to ONNX Runtime's, the inference precision set
explicitly (this machine's CPU would otherwise run bf16), one-line errors, and no torch in the runtime path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import export_onnx

ov = pytest.importorskip("openvino")



@pytest.fixture(scope="module")
def onnx_static(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("ov-rt") / "model.onnx", batch=1)


@pytest.fixture(scope="module")
def ir(model, onnx_static) -> Path:
    """openvino-fp32.xml/.bin from the export target, static batch 1."""
    from lightseg_edge.export.targets import TargetJob
    from lightseg_edge.export.targets.openvino import TARGET
    from lightseg_edge.types import InputSpec

    pre = model.cfg.preprocess
    job = TargetJob(onnx_fp32=onnx_static, stage=onnx_static.parent, precisions=("fp32",), preprocess=pre,
                    input_spec=InputSpec(shape=(1, 3, *pre.size)))
    (art,) = TARGET.build(job)  # only the requested precision
    assert sorted(p.name for p in onnx_static.parent.glob("openvino-*")) == ["openvino-fp32.bin", "openvino-fp32.xml"]
    return onnx_static.parent / art.path


def _predictor(path, model, **kw):
    from lightseg_edge.runtimes.openvino_backend import OpenVINOPredictor

    kw.setdefault("threads", 1)
    return OpenVINOPredictor(path, model.cfg.preprocess, **kw)


def _bf16_cpu() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_masks_equal_onnxruntime_with_the_f32_hint(ir, onnx_static, model, sample_images):
    from lightseg_edge.runtimes.onnxruntime_backend import OnnxRuntimePredictor
    from lightseg_edge.metrics import Confusion, dice
    from lightseg_edge.types import Runtime

    with OnnxRuntimePredictor(onnx_static, model.cfg.preprocess, threads=1) as ort_p:
        ref = ort_p.predict_batch(sample_images)
    with _predictor(ir, model) as p:
        assert p.runtime is Runtime.OPENVINO and p.device == "cpu" and p.ov_device == "CPU"
        assert p.inference_precision == "f32" and p.static_batch_size == 1
        assert p.input_spec.name == "input" and p.input_spec.output_name == "logits"
        masks = p.predict_batch(sample_images)  # 8 images through a batch-1 IR
    agreement = np.mean([dice(Confusion.of(a, b)) for a, b in zip(masks, ref)])
    assert agreement >= 0.999, agreement


def test_bf16_only_when_asked_and_only_where_the_cpu_has_it(ir, model, sample_images):
    from lightseg_edge.errors import BackendUnavailableError

    if not _bf16_cpu():
        with pytest.raises(BackendUnavailableError, match="no native bf16"):
            _predictor(ir, model, inference_precision="bf16")
        return
    # the reason the hint is always set: OpenVINO's own default on this CPU is bf16
    assert ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT") == ov.Type.bf16
    with _predictor(ir, model, inference_precision="bf16") as p:
        assert p.inference_precision == "bf16"
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]


def test_dynamic_batch_ir(onnx_static, model, tmp_path):
    xml = tmp_path / "dyn.xml"
    dynamic = ov.convert_model(str(onnx_static))
    dynamic.reshape({0: [-1, 3, *model.cfg.preprocess.size]})
    ov.save_model(dynamic, str(xml), compress_to_fp16=False)
    with _predictor(xml, model, cache_dir=tmp_path / "cache") as p:
        assert p.static_batch_size is None and p.input_spec.shape[0] is None
        x = np.zeros((3, 3, *model.cfg.preprocess.size), np.float32)
        assert p.infer(x).shape == (3, 1, *model.cfg.preprocess.size)
    assert any((tmp_path / "cache").iterdir()), "CACHE_DIR was not used"


def _one_line_error(exc_type, match, fn):
    with pytest.raises(exc_type, match=match) as info:
        fn()
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


def test_bad_inputs_give_one_line_errors(ir, model, tmp_path):
    from lightseg_edge.errors import BackendUnavailableError, InvalidInputError
    from lightseg_edge.types import InputSpec

    _one_line_error(InvalidInputError, "not found", lambda: _predictor(tmp_path / "nope.xml", model))
    lone = Path(shutil.copy(ir, tmp_path / "lone.xml"))
    assert "lone.bin" in _one_line_error(InvalidInputError, "missing", lambda: _predictor(lone, model))
    broken = tmp_path / "broken.xml"
    broken.write_text("<net><layers>")
    shutil.copy(ir.with_suffix(".bin"), broken.with_suffix(".bin"))
    _one_line_error(InvalidInputError, "not a readable OpenVINO IR", lambda: _predictor(broken, model))
    truncated = Path(shutil.copy(ir, tmp_path / "truncated.xml"))
    truncated.with_suffix(".bin").write_bytes(ir.with_suffix(".bin").read_bytes()[:1000])
    _one_line_error(InvalidInputError, "cannot read this IR", lambda: _predictor(truncated, model))
    wrong = InputSpec(shape=(1, 3, 64, 64))
    _one_line_error(InvalidInputError, "axis 2", lambda: _predictor(ir, model, input_spec=wrong))
    _one_line_error(InvalidInputError, "inference_precision", lambda: _predictor(ir, model, inference_precision="f16"))
    assert "CPU" in _one_line_error(BackendUnavailableError, "available", lambda: _predictor(ir, model, ov_device="XPU"))
    _one_line_error(InvalidInputError, "ov_device=", lambda: _predictor(ir, model, device="cuda"))
    _one_line_error(InvalidInputError, "threads", lambda: _predictor(ir, model, threads=0))


def test_runs_without_torch(ir, model, sample_dir, tmp_path):
    """The runtime layer imports no torch: an OpenVINO predictor is built and run in an interpreter that cannot
    import it."""
    from test_no_torch import _run

    _run("""
        from lightseg_edge.data.io import read_image
        from lightseg_edge.runtimes.openvino_backend import OpenVINOPredictor
        from lightseg_edge.types import PreprocessConfig
        with OpenVINOPredictor(sys.argv[1], PreprocessConfig(size=(int(sys.argv[3]),) * 2), threads=1) as p:
            mask = p.predict(read_image(sys.argv[2]))
        assert set(mask.ravel().tolist()) <= {0, 1}
    """, tmp_path, (ir, min((sample_dir / "images").iterdir()), model.cfg.preprocess.size[0]))
