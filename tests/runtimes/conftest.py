"""Fixtures for the runtime tests: a model whose masks are not trivial, its checkpoint, ONNX files and export folder."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest
from runtime_helpers import MODEL, centred_model, export_onnx, make_fp16, make_int8, read_samples, write_manifest


@pytest.fixture(scope="session")
def sample_images(sample_dir) -> List[np.ndarray]:
    return read_samples(sample_dir)


@pytest.fixture(scope="session")
def model(sample_images):
    return centred_model(MODEL, sample_images)


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory) -> Path:
    """A checkpoint in the trainer's format (model name and preprocessing inside)."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"format": "lightseg-ckpt/1", "model": model.state_dict(), "config": {"model": MODEL},
                "preprocess": model.cfg.preprocess.to_dict(), "epoch": 0}, str(path))
    return path


@pytest.fixture(scope="session")
def export_dir(model, checkpoint, sample_images, tmp_path_factory) -> Path:
    """An export folder like lightseg-export writes: fp32, fp16 and INT8 ONNX + manifest.json."""
    import shutil

    from lightseg_edge.data.transforms import preprocess_batch

    folder = tmp_path_factory.mktemp("export")
    export_onnx(model, folder / "model.onnx")
    make_fp16(folder / "model.onnx", folder / "model.fp16.onnx")
    # Calibrate on the train-split half of the sample (the agreement tests use all eight).
    make_int8(folder / "model.onnx", folder / "model.int8.onnx", preprocess_batch(sample_images[4:], model.cfg.preprocess))
    shutil.copy(checkpoint, folder / "best.pt")  # the pytorch runtime loads only weights inside the folder
    write_manifest(folder, MODEL, model.cfg.preprocess,
                   {"fp32": {"path": "model.onnx"}, "fp16": {"path": "model.fp16.onnx"}, "int8": {"path": "model.int8.onnx"}},
                   weights_source="best.pt")
    return folder


@pytest.fixture(scope="session")
def onnx_file(export_dir) -> Path:
    """A bare .onnx with no manifest beside it."""
    import shutil

    bare = export_dir.parent / "bare"
    bare.mkdir(exist_ok=True)
    return Path(shutil.copy(export_dir / "model.onnx", bare / "model.onnx"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """PyTorch on 2 shared cores is ~5x faster single-threaded while a training job runs; restored afterwards."""
    from lightseg_edge._optional import is_available

    if not is_available("torch"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
