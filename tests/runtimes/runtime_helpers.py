"""Helpers shared by the runtime tests (imported by conftest.py and the test modules).

For a model without shipped weights, ``centred_model`` gives a seeded random-weight model whose output bias is
shifted so that the median logit over the real sample images is 0: its masks cover about half of each image, with a
data-dependent outline, instead of being empty (random weights alone give all-negative logits, which would make every
mask comparison pass trivially). A model with shipped weights uses those instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from lightseg_edge.models._weights import has_pretrained
from lightseg_edge.types import PreprocessConfig

MODEL = "ucmnet"
SEED = 0


def read_samples(sample_dir: Path, n: Optional[int] = None) -> List[np.ndarray]:
    from lightseg_edge.data.io import read_image

    files = sorted((sample_dir / "images").iterdir())
    return [read_image(f) for f in files[:n]]


def centred_model(name: str, images: List[np.ndarray]):
    """Shipped weights when present; else seeded random weights with the last 1-channel conv's bias centred."""
    import torch
    from torch import nn

    from lightseg_edge import create_model
    from lightseg_edge.data.transforms import preprocess_batch

    if has_pretrained(name):
        return create_model(name, pretrained=True).deploy()
    torch.manual_seed(SEED)
    model = create_model(name).deploy()
    x = torch.from_numpy(preprocess_batch(images, model.cfg.preprocess))
    with torch.no_grad():
        median = float(model(x).median())
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1 and m.bias is not None][-1]
    with torch.no_grad():
        last.bias -= median
        frac = float((model(x) > 0).float().mean())
    assert 0.2 < frac < 0.8, f"{name}: centring the output bias left {frac:.0%} positive pixels"
    return model


def export_onnx(model, path: Path, batch: Optional[int] = None) -> Path:
    """fp32 ONNX, dynamic batch unless ``batch`` is given (what lightseg-export produces)."""
    import torch

    from lightseg_edge.export.onnx_export import torchscript_export_warnings_handled

    h, w = model.cfg.preprocess.size
    n = batch or 1
    dyn = None if batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    with torchscript_export_warnings_handled():
        torch.onnx.export(model, torch.zeros(n, 3, h, w), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes=dyn, opset_version=17, dynamo=False)
    return path


def make_fp16(src: Path, dst: Path) -> Path:
    """fp16 graph with float32 I/O, as the toolchain reference recommends (keep_io_types=True)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # the converter ships with onnxruntime; an odd build may lack it
        pytest.skip(f"onnxruntime.transformers.float16 unavailable: {exc}")
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return dst


def make_int8(src: Path, dst: Path, calib: np.ndarray) -> Path:
    """Q/DQ INT8 with the TensorRT-friendly options (symmetric, per-channel weights, no int32 bias)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self._it, None)

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns per node about non-initializer biases
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"QuantizeBias": False, "AddQDQPairToWeight": True, "ActivationSymmetric": True, "WeightSymmetric": True})
    return dst


def write_manifest(folder: Path, model_name: str, pre: PreprocessConfig, artifacts: Dict[str, Dict],
                   weights_source: str = "random", shape=(None, 3, 256, 256), tensorrt: Optional[Dict] = None) -> Path:
    """A manifest with every key of the export contract (so lightseg_edge.manifest would accept it too)."""
    from lightseg_edge.manifest import sha256_file

    arts = {}
    for key, entry in artifacts.items():
        entry = dict(entry)
        entry.setdefault("sha256", sha256_file(folder / entry["path"]))
        arts[key] = entry
    man = {
        "format": "lightseg-export/1", "model": model_name, "created": "2026-11-22T00:00:00Z",
        "weights": {"source": weights_source, "sha256": sha256_file(folder / weights_source) if (folder / weights_source).is_file() else None},
        "input": {"name": "input", "shape": list(shape), "dtype": "float32", "output_name": "logits"},
        "preprocess": pre.to_dict(), "output": "logits", "opset": 17, "artifacts": arts,
        "parity": {}, "calibration": None, "accuracy": {}, "tensorrt": tensorrt, "tools": {}, "steps": [],
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(man, indent=2))
    return path


def build_trt_engine(onnx_path: Path, plan_path: Path, max_batch: int = 4) -> Path:
    """UNVERIFIED (needs TensorRT + GPU): a strongly typed engine with a dynamic-batch profile, for the GPU tests."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 256, 256), (1, 3, 256, 256), (max_batch, 3, 256, 256))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT engine build failed")
    plan_path.write_bytes(bytes(plan))
    return plan_path
