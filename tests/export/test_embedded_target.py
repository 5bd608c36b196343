"""--embed-preprocess: the images-in, masks-out ONNX equals the project's own pre/post-processing on real images."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lightseg_edge.data.io import read_image  # noqa: E402
from lightseg_edge.data.transforms import normalize, proba_to_mask, resize_image, sigmoid  # noqa: E402
from lightseg_edge.export.onnxrun import cpu_session  # noqa: E402
from lightseg_edge.export.targets.embedded import embed  # noqa: E402
from lightseg_edge.types import NORMALIZE_MODES, PreprocessConfig  # noqa: E402

SIZE = 64


def _images(sample_dir, size):
    return [resize_image(read_image(p), (size, size)) for p in sorted((sample_dir / "images").iterdir())]


def _mixing_conv(path):
    """A 1x1 conv that mixes the channels with unequal weights: the normalised input is visible in its output."""
    w = numpy_helper.from_array(np.asarray([[[[0.7]], [[-1.3]], [[2.1]]]], np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"], name="conv")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, SIZE, SIZE])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_the_graph_normalises_as_the_project_does(mode, sample_dir, tmp_path):
    pre = PreprocessConfig(size=(SIZE, SIZE), mode=mode, mean=(0.6, 0.5, 0.4), std=(0.2, 0.25, 0.3))
    src = _mixing_conv(tmp_path / "m.onnx")
    out = embed(src, tmp_path / "m.embedded.onnx", pre)
    plain, embedded = cpu_session(src), cpu_session(out)
    images = _images(sample_dir, SIZE) + [np.full((SIZE, SIZE, 3), 77, np.uint8)]  # a flat image: min-max gives zeros
    for image in images:
        want = plain.run(None, {"input": normalize(image, pre)[None]})[0]
        logits, proba, mask = embedded.run(None, {"image": image[None]})
        np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-6)
        assert proba.dtype == np.float32 and mask.dtype == np.uint8
        np.testing.assert_allclose(proba, sigmoid(want), rtol=1e-6, atol=1e-7)
        assert np.array_equal(mask, (proba >= 0.5).astype(np.uint8))


def test_export_writes_an_embedded_file_per_variant_with_the_same_masks(sample_dir, tmp_path):
    from export_helpers import small_config

    from lightseg_edge.export import export

    res = export(small_config(sample_dir, tmp_path / "out", model="ucmnet", img_size=128, fp16=True, formats=("onnx", "embedded")))
    man = json.loads(res.manifest.read_text())
    assert {"embedded-fp32", "embedded-fp16"} <= set(man["artifacts"])
    assert set(man["accuracy"]["not_scored"]) == {"embedded-fp32", "embedded-fp16"}
    pre = PreprocessConfig.from_dict(man["preprocess"])
    for key, plain_name in (("embedded-fp32", "model.onnx"), ("embedded-fp16", "model.fp16.onnx")):
        path = res.output / man["artifacts"][key]["path"]
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert "lightseg.preprocess" in meta and json.loads(meta["lightseg.embedded"])["normalisation"] == pre.mode
        plain, embedded = cpu_session(res.output / plain_name), cpu_session(path)
        for image in _images(sample_dir, 128):
            logits = plain.run(None, {"input": normalize(image, pre)[None]})[0]
            mask = embedded.run(["mask"], {"image": image[None]})[0]
            assert np.array_equal(mask[0, 0], proba_to_mask(sigmoid(logits[0, 0])))
