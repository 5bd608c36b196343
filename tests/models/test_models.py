"""The zoo contract, parametrized over the registry: a new model is covered as soon as it registers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lightseg_edge
from lightseg_edge.errors import InvalidInputError, UnknownModelError
from lightseg_edge.export.onnx_export import torchscript_export_warnings_handled
from lightseg_edge.models import create_model, get_model_config, list_models
from lightseg_edge.models.complexity import count_macs, used_parameters

# create_model(name) parameter counts (docs/models.md explains each against its paper) (ucmnet: released architecture without its dead vectors).
EXPECTED_PARAMS = {
    "ucmnet": 46_188,
    "lmsaunet": 476_738,
    "lmsaunet_n32": 387_878,
    "egeunet": 53_374,
    "malunet": 177_943,
    "unext_s": 253_561,
    "unet": 31_037_633,
}
MODELS = list_models()
SMALL = [m for m in MODELS if m != "unet"]  # U-Net (31 M parameters) is kept out of the per-size sweeps


def test_registry_lists_every_specified_model():
    assert set(EXPECTED_PARAMS) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_spec(name):
    assert name in EXPECTED_PARAMS, f"add the spec's parameter count for {name!r}"
    assert sum(p.numel() for p in create_model(name).parameters()) == EXPECTED_PARAMS[name]


def test_ucmnet_deployed_form_uses_46055_parameters():
    assert used_parameters(create_model("ucmnet").eval()) == 46_055


@pytest.mark.parametrize("name", MODELS)
def test_config_is_complete(name):
    cfg = get_model_config(name)
    assert cfg.name == name and cfg.paper and cfg.citation
    assert cfg.claims.params and cfg.claims.source
    h, w = cfg.input_size
    assert h % cfg.stride == 0 and w % cfg.stride == 0


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_returns_logits_at_input_size(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        y1, y2 = model(x), model(x)
    assert y1.shape == (2, 1, 256, 256) and y1.dtype == torch.float32
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2), "eval output must be deterministic"
    # logits, not probabilities: a sigmoid inside would confine the output to [0, 1]
    assert not ((y1 >= 0) & (y1 <= 1)).all() or y1.std() > 0.5


@pytest.mark.parametrize("name", SMALL)
def test_other_valid_size(name):
    s = get_model_config(name).stride
    h, w = 6 * s, 7 * s
    with torch.no_grad():
        y = create_model(name).eval()(torch.rand(1, 3, h, w))
    assert y.shape == (1, 1, h, w)


@pytest.mark.parametrize("name", SMALL)
def test_invalid_size_names_the_stride(name):
    s = get_model_config(name).stride
    with pytest.raises(InvalidInputError, match=f"multiple of {s}"):
        create_model(name).eval()(torch.rand(1, 3, 8 * s + 4, 8 * s))


@pytest.mark.parametrize("name", SMALL)
def test_training_form_stage_outputs(name):
    model = create_model(name).train()
    final, stages = model.forward_train(torch.rand(2, 3, 256, 256))
    assert final.shape == (2, 1, 256, 256)
    for s in stages:
        assert s.shape == (2, 1, 256, 256)
    if name in ("ucmnet", "egeunet"):  # both specs have five deep-supervision heads
        assert len(stages) == 5


@pytest.mark.parametrize("name", SMALL)
def test_deploy_form_matches_training_form(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        ref = model(x)
        out = model.deploy()(x)
    # fp32 round-off grows with the logits: random EGE-UNet weights give logits up to ~40, and its training form alone
    # is 2.4e-4 from the float64 result there (its deploy form, with the LayerNorms as channel reductions, 2.2e-4)
    assert (ref - out).abs().max().item() < 1e-4 + 1e-5 * ref.abs().max().item()


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_matches_pytorch(name, tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name).deploy()
    x = torch.rand(1, 3, 256, 256)
    path = tmp_path / f"{name}.onnx"
    with torchscript_export_warnings_handled():
        torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["input"], output_names=["logits"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape
    # 1e-4 relative to the logit scale: random-init EGE-UNet reaches logits of ~40, where float32 itself drifts 4e-4
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_unknown_model_suggests_the_closest():
    with pytest.raises(UnknownModelError, match="Did you mean 'ucmnet'") as e:
        create_model("ucmnte")
    assert "egeunet" in str(e.value) or "ucmnet" in str(e.value)


def test_top_level_api_is_lazy_and_works():
    assert "ucmnet" in lightseg_edge.list_models()
    assert lightseg_edge.get_model_config("ucmnet").claims.params == 49_932


def test_macs_counter_counts_a_known_conv():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    # 3x3 conv: 32*32*8 outputs * 27 MACs; 1x1 conv: 32*32 outputs * 8 MACs; ReLU and biases count 0
    assert count_macs(net, (32, 32)) == 32 * 32 * 8 * 27 + 32 * 32 * 8


@pytest.mark.parametrize("name", SMALL)
def test_complexity_reports_training_form_parameters(name):
    from lightseg_edge.models.complexity import complexity

    c = complexity(name)
    assert c.params == EXPECTED_PARAMS[name]
    assert 0 < c.deploy_params <= c.params and c.macs > 0
