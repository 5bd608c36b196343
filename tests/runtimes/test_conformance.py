"""One conformance suite, run against every runtime adapter this machine has.

pytorch-cpu and onnxruntime-cpu always run; the CUDA, TensorRT-EP and native TensorRT adapters carry the gpu /
tensorrt markers and are skipped with a reason on a machine without them (see tests/conftest.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lightseg_edge.errors import InvalidInputError, PredictorClosedError
from lightseg_edge.runtimes import BasePredictor, Predictor, load_predictor
from lightseg_edge.types import Runtime

ADAPTERS = [
    pytest.param("pytorch-cpu", id="pytorch-cpu"),
    pytest.param("onnxruntime-cpu", id="onnxruntime-cpu"),
    pytest.param("pytorch-cuda", id="pytorch-cuda", marks=pytest.mark.gpu),
    pytest.param("onnxruntime-cuda", id="onnxruntime-cuda", marks=pytest.mark.gpu),
    pytest.param("onnxruntime-tensorrt", id="onnxruntime-tensorrt", marks=[pytest.mark.gpu, pytest.mark.tensorrt]),
    pytest.param("tensorrt", id="tensorrt", marks=[pytest.mark.gpu, pytest.mark.tensorrt]),
]
EXPECTED_RUNTIME = {
    "pytorch-cpu": Runtime.PYTORCH, "pytorch-cuda": Runtime.PYTORCH, "onnxruntime-cpu": Runtime.ONNXRUNTIME,
    "onnxruntime-cuda": Runtime.ONNXRUNTIME, "onnxruntime-tensorrt": Runtime.ONNXRUNTIME, "tensorrt": Runtime.TENSORRT,
}


def _ort_provider_or_skip(name: str) -> None:
    import onnxruntime as ort

    if name not in ort.get_available_providers():
        pytest.skip(f"{name} not in this onnxruntime build ({', '.join(ort.get_available_providers())}); needs onnxruntime-gpu")


def _open(kind, checkpoint, export_dir, tmp_path_factory, **options):
    """The predictor of adapter ``kind`` on the fixture model (``options`` as load_predictor takes them)."""
    if kind == "pytorch-cpu":
        return load_predictor(checkpoint, device="cpu", **options)
    if kind == "pytorch-cuda":
        return load_predictor(checkpoint, device="cuda", **options)
    if kind == "onnxruntime-cpu":
        return load_predictor(export_dir, runtime="onnxruntime", device="cpu", **options)
    if kind == "onnxruntime-cuda":
        _ort_provider_or_skip("CUDAExecutionProvider")
        return load_predictor(export_dir, runtime="onnxruntime", device="cuda", **options)
    if kind == "onnxruntime-tensorrt":
        _ort_provider_or_skip("TensorrtExecutionProvider")
        return load_predictor(export_dir, runtime="onnxruntime", providers=["tensorrt", "cuda", "cpu"],
                              cache_dir=tmp_path_factory.mktemp("ort-trt-cache"), **options)
    from runtime_helpers import build_trt_engine

    plan = build_trt_engine(export_dir / "model.onnx", tmp_path_factory.mktemp("trt") / "model.plan")
    return load_predictor(plan, preprocess=p_pre(export_dir), **options)


@pytest.fixture(scope="module", params=ADAPTERS)
def predictor(request, checkpoint, export_dir, tmp_path_factory):
    p = _open(request.param, checkpoint, export_dir, tmp_path_factory)
    p.kind = request.param
    yield p
    p.close()


def p_pre(export_dir):
    from lightseg_edge.manifest import read_deploy_manifest

    return read_deploy_manifest(export_dir).preprocess


def test_describes_itself(predictor, model):
    assert isinstance(predictor, Predictor) and isinstance(predictor, BasePredictor)
    assert predictor.runtime is EXPECTED_RUNTIME[predictor.kind]
    assert predictor.input_spec.name == "input"
    assert tuple(predictor.input_spec.shape[1:]) == (3, 256, 256)
    assert predictor.preprocess_config == model.cfg.preprocess
    assert predictor.runtime.value in repr(predictor)


def test_infer_shapes_and_dtype(predictor, sample_images):
    from lightseg_edge.data.transforms import preprocess_batch

    x = preprocess_batch(sample_images[:2], predictor.preprocess_config)
    out = predictor.infer(x)
    assert out.shape == (2, 1, 256, 256) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_round_trip_on_real_images(predictor, sample_images):
    for im in sample_images[:3]:
        mask = predictor.predict(im)
        proba = predictor.predict_proba(im)
        assert mask.shape == im.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        assert proba.shape == im.shape[:2] and proba.dtype == np.float32
        assert 0.0 <= proba.min() and proba.max() <= 1.0
        np.testing.assert_array_equal(mask, (proba >= predictor.threshold).astype(np.uint8))
        # The fixture model's masks cover part of each image: a constant output would be a broken adapter.
        assert 0.02 < mask.mean() < 0.98


def test_output_at_the_input_resolution(predictor, sample_images):
    import cv2

    im = cv2.resize(sample_images[0], (301, 217))  # not the network size, not square, odd
    assert predictor.predict(im).shape == (217, 301)
    assert predictor.predict_proba(im).shape == (217, 301)


def test_batch_matches_single_calls(predictor, sample_images):
    import cv2

    images = [sample_images[0], cv2.resize(sample_images[1], (320, 240)), sample_images[2]]
    probas = predictor.predict_proba_batch(images)
    masks = predictor.predict_batch(images)
    for im, p, m in zip(images, probas, masks):
        single = predictor.predict_proba(im)
        np.testing.assert_allclose(p, single, atol=1e-4)
        assert m.shape == im.shape[:2]
        assert (m == predictor.predict(im)).mean() > 0.999


def test_threshold(predictor, sample_images):
    im = sample_images[0]
    assert predictor.predict(im, threshold=0.0).all()
    proba = predictor.predict_proba(im)
    t = float(np.median(proba))
    np.testing.assert_array_equal(predictor.predict(im, threshold=t), (proba >= t).astype(np.uint8))
    with pytest.raises(InvalidInputError, match=r"threshold must be a probability in \[0, 1\]"):
        predictor.predict(im, threshold=1.5)


def test_flip_tta_averages_the_flipped_views(predictor, sample_images, checkpoint, export_dir, tmp_path_factory):
    from lightseg_edge.data.transforms import preprocess_batch
    from lightseg_edge.types import TTA

    x = preprocess_batch(sample_images[:2], predictor.preprocess_config)
    expected = np.zeros((2, 1, 256, 256), np.float32)
    for axes in ((), (3,), (2,), (2, 3)):
        out = predictor.infer(np.ascontiguousarray(np.flip(x, axes)))
        expected += (np.flip(out, axes) if axes else out) / 4
    with _open(predictor.kind, checkpoint, export_dir, tmp_path_factory, tta="flips") as tta:
        assert tta.tta is TTA.FLIPS and predictor.tta is TTA.NONE and "tta=flips" in repr(tta)
        np.testing.assert_allclose(tta.infer(x), expected, atol=1e-5)
        # The fixture model is not flip-symmetric: the average is not the plain output.
        assert np.abs(expected - predictor.infer(x)).max() > 1e-3
        im = sample_images[0]
        np.testing.assert_array_equal(tta.predict(im), (tta.predict_proba(im) >= tta.threshold).astype(np.uint8))


def _huge():
    from lightseg_edge.data.transforms import MAX_IMAGE_PIXELS

    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (side, side, 3))  # no memory behind it


BAD_IMAGES = [
    pytest.param(lambda: np.zeros((64, 64), np.uint8), r"single-channel \(grayscale\)", id="grayscale-2d"),
    pytest.param(lambda: np.zeros((64, 64, 1), np.uint8), r"single-channel \(grayscale\)", id="grayscale-1ch"),
    pytest.param(lambda: np.zeros((64, 64, 4), np.uint8), r"expected HxWx3 uint8 RGB.*drop the alpha channel", id="rgba"),
    pytest.param(lambda: np.zeros((64, 64, 3), np.uint16), r"expected dtype uint8, got uint16.*16-bit", id="16-bit"),
    pytest.param(lambda: np.zeros((64, 64, 3), np.float32), r"expected dtype uint8, got float32", id="float"),
    pytest.param(lambda: np.zeros((0, 0, 3), np.uint8), r"empty image", id="empty"),
    pytest.param(_huge, r"larger than the .*-pixel limit", id="huge"),
    pytest.param(lambda: [[0, 0, 0]], r"expected a numpy array", id="not-an-array"),
]


@pytest.mark.parametrize("make,message", BAD_IMAGES)
def test_bad_images_are_refused_clearly(predictor, make, message):
    img = make()
    for call in (predictor.predict, predictor.predict_proba, lambda x: predictor.predict_batch([x])):
        with pytest.raises(InvalidInputError, match=message):
            call(img)


BAD_BATCHES = [
    pytest.param(lambda: np.zeros((1, 3, 256, 256), np.float64), r"expected dtype float32 \['N', 3, 256, 256\], got float64", id="float64"),
    pytest.param(lambda: np.zeros((1, 3, 256, 256), np.uint8), r"got uint8.*forget preprocess", id="uint8"),
    pytest.param(lambda: np.zeros((1, 1, 256, 256), np.float32), r"axis 1 is 1, expected 3", id="one-channel"),
    pytest.param(lambda: np.zeros((1, 4, 256, 256), np.float32), r"axis 1 is 4, expected 3", id="four-channels"),
    pytest.param(lambda: np.zeros((1, 3, 128, 256), np.float32), r"axis 2 is 128, expected 256", id="wrong-height"),
    pytest.param(lambda: np.zeros((3, 256, 256), np.float32), r"expected a 4-D NCHW batch", id="3d"),
    pytest.param(lambda: np.zeros((0, 3, 256, 256), np.float32), r"empty batch", id="empty-batch"),
    pytest.param(lambda: np.zeros((256, 256, 3), np.uint8), r"expected dtype float32", id="hwc-image"),
    pytest.param(lambda: [[0.0]], r"expected a numpy array", id="list"),
]


@pytest.mark.parametrize("make,message", BAD_BATCHES)
def test_bad_batches_are_refused_clearly(predictor, make, message):
    with pytest.raises(InvalidInputError, match=message):
        predictor.infer(make())


def test_empty_image_list(predictor):
    with pytest.raises(InvalidInputError, match="at least one image"):
        predictor.predict_batch([])


def test_concurrent_calls_give_the_sequential_results(predictor, sample_images):
    images = sample_images[:4]
    expected = [predictor.predict_proba(im) for im in images]
    results = {}
    errors = []

    def worker(tid: int) -> None:
        try:
            for rep in range(2):
                for i, im in enumerate(images):
                    results[(tid, rep, i)] = predictor.predict_proba(im)
        except Exception as exc:  # noqa: BLE001 - surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4 * 2 * len(images)
    for (tid, rep, i), proba in results.items():
        np.testing.assert_allclose(proba, expected[i], atol=1e-6, err_msg=f"thread {tid} call {rep} image {i}")


def test_close_and_context_manager(predictor, sample_images, checkpoint, export_dir):
    # A fresh predictor of the same kind, so closing it does not affect the module-scoped one.
    fresh = (load_predictor(checkpoint, device=predictor.device) if predictor.runtime is Runtime.PYTORCH
             else load_predictor(predictor.source, preprocess=predictor.preprocess_config, **_same_device(predictor)))
    with fresh as p:
        assert p.predict(sample_images[0]).shape == sample_images[0].shape[:2]
    assert fresh.closed
    with pytest.raises(PredictorClosedError, match=r"after close\(\)"):
        fresh.predict(sample_images[0])
    fresh.close()  # idempotent
    with pytest.raises(PredictorClosedError), fresh:
        pass


def _same_device(predictor):
    if predictor.runtime is Runtime.ONNXRUNTIME:
        return {"providers": predictor.providers}
    return {"device": predictor.device}
