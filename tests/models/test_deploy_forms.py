"""Every deploy form of every registry model computes what the training form computes: on the committed ISIC sample
images, max |logit difference| <= 1e-4 and not one mask pixel flipped, in PyTorch and once exported (the OpenVINO
form run by OpenVINO; the LiteRT form is converted and run by the tflite target's tests). Which form is faster where is measured by benchmarks/cpu_fast_path.py, not here."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from lightseg_edge.data.io import read_image
from lightseg_edge.data.transforms import preprocess
from lightseg_edge.models import create_model, get_model_config, list_models
from lightseg_edge.models._weights import has_pretrained
from lightseg_edge.types import DeployForm, Runtime

ATOL = 1e-4
OPENVINO_ATOL = 1e-3  # another runtime's summation order: the CPU fast path's accuracy bar
CASES = [(name, form) for name in list_models() for form in sorted(type(create_model(name)).deploy_forms, key=lambda f: f.value)]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, pretrained=has_pretrained(name)).eval()


@pytest.fixture(scope="module")
def images(sample_dir: Path):
    paths = sorted((sample_dir / "images").iterdir())
    assert len(paths) == 8
    return [read_image(p) for p in paths]


def _batch(name: str, images) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(im, get_model_config(name).preprocess) for im in images]))


def test_the_cpu_forms_exist_where_they_were_measured_to_pay():
    assert {name for name, _ in CASES} >= {"ucmnet", "lmsaunet", "lmsaunet_n32", "egeunet", "unext_s"}
    assert all(form is not DeployForm.DEFAULT for _, form in CASES)


@pytest.mark.parametrize("name,form", CASES)
def test_form_equals_training_form_on_real_images(name, form, images):
    train = _model(name)
    deployed = copy.deepcopy(train).deploy(form)
    assert not deployed.training
    x = _batch(name, images)
    with torch.no_grad():
        a, b = train(x), deployed(x)
    assert (a.double() - b.double()).abs().max().item() <= ATOL
    assert torch.equal(a > 0, b > 0), "a mask pixel flipped"


@pytest.mark.parametrize("name,form", [(n, f) for n, f in CASES if not hasattr(create_model(n), "deployed") and n != "unext_s"])
def test_in_place_form_keeps_the_state_dict(name, form):
    """Forms made in place still load training checkpoints (lmsaunet's deploy() builds a folded copy instead, and
    unext_s's folds its BatchNorms into the convs)."""
    train = _model(name)
    deployed = copy.deepcopy(train).deploy(form)
    assert deployed.state_dict().keys() == train.state_dict().keys()
    deployed.load_state_dict(train.state_dict(), strict=True)


@pytest.mark.parametrize("name,form", [(n, f) for n, f in CASES if f is DeployForm.OPENVINO])
def test_exported_openvino_form_runs_the_same_in_openvino(name, form, images, tmp_path):
    """The form's ONNX, converted and run by OpenVINO f32 exactly as the openvino target does, against PyTorch. A mask
    pixel may differ only where the reference logit is itself within the logit tolerance of 0 (a tie that float
    round-off in another runtime may decide either way)."""
    pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from lightseg_edge.export.onnx_export import export_onnx, input_spec

    train = _model(name)
    deployed = copy.deepcopy(train).deploy(form)
    x = _batch(name, images[:4])
    path = export_onnx(deployed, tmp_path / "form.onnx", input_spec(1, get_model_config(name).input_size, False), opset=17)
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.concatenate([compiled(x[i:i + 1].numpy())[0] for i in range(len(x))])
    with torch.no_grad():
        want = train(x).numpy()
    assert np.abs(got - want).max() <= OPENVINO_ATOL
    flipped = (got > 0) != (want > 0)
    assert np.all(np.abs(want[flipped]) <= OPENVINO_ATOL) and flipped.sum() <= 4


@pytest.mark.parametrize("name", list_models())
def test_unknown_form_is_refused_and_form_for_maps_runtimes(name):
    model = create_model(name)
    cls = type(model)
    for runtime in Runtime:
        form = cls.form_for(runtime)
        assert form is DeployForm.DEFAULT or (form.value == runtime.value and form in cls.deploy_forms)
    missing = [f for f in DeployForm if f is not DeployForm.DEFAULT and f not in cls.deploy_forms]
    for form in missing:
        with pytest.raises(ValueError, match="deploy form"):
            model.deploy(form)


def test_a_deployed_lmsaunet_does_not_silently_change_form():
    model = create_model("lmsaunet").deploy()
    with pytest.raises(ValueError, match="already deployed"):
        model.deploy(DeployForm.OPENVINO)


def test_ucmnet_leaves_out_each_blocks_doubling_bit_for_bit(images):
    """UCM block returns h + h and a LayerNorm always follows: the deploy form drops the doubling and quarters that
    norm's eps, which is exact (scaling by 2 commutes with rounding), and a second deploy() does not quarter it again."""
    deployed = _model("ucmnet").deploy()
    pairs = [(stage[1], stage[2]) for stage in deployed.encoders] + [tuple(pair) for pair in deployed.dec_blocks]
    assert len(pairs) == 10 and not any(block.doubled for block, _ in pairs)
    eps = [norm.eps for _, norm in pairs]
    doubled = copy.deepcopy(deployed)
    for block, norm in [(s[1], s[2]) for s in doubled.encoders] + [tuple(p) for p in doubled.dec_blocks]:
        block.doubled, norm.eps = True, norm.eps * 4
    x = _batch("ucmnet", images)
    with torch.no_grad():
        assert torch.equal(deployed(x), doubled(x))
    deployed.deploy(DeployForm.OPENVINO)
    assert [norm.eps for _, norm in pairs] == eps
