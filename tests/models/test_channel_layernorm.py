"""The deploy form of the channels-first LayerNorm: ``deploy()`` turns every ``LayerNorm2d`` (permute +
``F.layer_norm``, exported as Transpose -> LayerNormalization -> Transpose) into ``ChannelLayerNorm2d`` (statistics
over the channel axis, in NCHW: MatMuls in the default form, ReduceMeans in the OpenVINO (and LiteRT) forms). Checked for every registry model that has a ``LayerNorm2d``: same outputs on real
images, same state dict, and an exported graph without the Transpose + LayerNormalization pattern.

Speed is measured by benchmarks/cpu_fast_path.py, not here."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lightseg_edge.data.io import read_image
from lightseg_edge.data.transforms import preprocess
from lightseg_edge.models import create_model, get_model_config, list_models
from lightseg_edge.models._layers import ChannelLayerNorm2d, LayerNorm2d, channel_layer_norms
from lightseg_edge.models._weights import has_pretrained
from lightseg_edge.types import DeployForm

AFFECTED = ("ucmnet", "egeunet", "unext_s")
ATOL = 1e-4  # max |logit difference| allowed between the deploy and training forms (the export's deploy-check is looser)


def _norms(model: torch.nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


def _model(name: str) -> torch.nn.Module:
    """Shipped weights where there are some (unext_s has none: seeded random weights)."""
    torch.manual_seed(0)
    return create_model(name, pretrained=has_pretrained(name)).eval()


@pytest.fixture(scope="module")
def sample_batches(sample_dir: Path):
    paths = sorted((sample_dir / "images").iterdir())
    assert len(paths) == 8
    images = [read_image(p) for p in paths]
    return {name: torch.from_numpy(np.stack([preprocess(im, get_model_config(name).preprocess) for im in images])) for name in AFFECTED}


def test_affected_models_are_every_model_with_a_layernorm2d():
    with_ln = {name for name in list_models() if name != "unet" and _norms(create_model(name), LayerNorm2d)}
    assert with_ln == set(AFFECTED)


@pytest.mark.parametrize("reduce", [False, True])
@pytest.mark.parametrize("shape,eps", [((2, 8, 16, 16), 1e-5), ((1, 64, 4, 4), 1e-6), ((1, 17, 5, 7), 1e-6), ((3, 1, 2, 2), 1e-5)])
def test_channel_layer_norm_equals_layer_norm2d(shape, eps, reduce):
    g = torch.Generator().manual_seed(0)
    ln = LayerNorm2d(shape[1], eps=eps)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(shape[1], generator=g))
        ln.bias.copy_(torch.randn(shape[1], generator=g))
    x = torch.randn(*shape, generator=g) * 3 + 1
    out = ChannelLayerNorm2d(ln, reduce)(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ln(x), rtol=1e-5, atol=1e-5)


def test_channel_layer_norm_shares_the_parameters():
    ln = LayerNorm2d(8)
    cln = ChannelLayerNorm2d(ln)
    assert cln.weight is ln.weight and cln.bias is ln.bias
    assert list(cln.state_dict()) == list(ln.state_dict()) == ["weight", "bias"]
    cln(torch.randn(1, 8, 4, 4)).sum().backward()  # still trainable: the gradient reaches the shared Parameters
    assert ln.weight.grad is not None and ln.bias.grad is not None


@pytest.mark.parametrize("name", AFFECTED)
def test_deploy_swaps_every_layer_norm_and_keeps_the_state_dict(name):
    model = _model(name)
    n = _norms(model, LayerNorm2d)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deployed = model.deploy()
    assert _norms(deployed, LayerNorm2d) == 0 and _norms(deployed, ChannelLayerNorm2d) == n > 0
    after = deployed.state_dict()
    norm_keys = [k for k in before if ".norm" in k or k.startswith("norm") or "groups." in k or "tail." in k or "dec_blocks" in k]
    assert norm_keys
    for k in norm_keys:  # unext_s folds its BatchNorms in deploy(); the LayerNorm entries stay as they were
        assert k in after and torch.equal(after[k], before[k]), k
    if name != "unext_s":
        assert list(after) == list(before)
        # a training-form checkpoint loads into the deployed model as it is
        deployed.load_state_dict(create_model(name).state_dict(), strict=True)
    assert channel_layer_norms(deployed) == 0  # deploy() twice is harmless
    deployed.deploy(DeployForm.OPENVINO)  # ... and a second deploy() sets the norms' graph to its form
    assert {m.reduce for m in deployed.modules() if isinstance(m, ChannelLayerNorm2d)} == {True}


@pytest.mark.parametrize("name", AFFECTED)
def test_deploy_form_equals_training_form_on_real_images(name, sample_batches):
    train = _model(name)
    deployed = copy.deepcopy(train).deploy()
    x = sample_batches[name]
    with torch.no_grad():
        a, b = train(x), deployed(x)
    assert a.shape == b.shape == (8, 1, *get_model_config(name).input_size)
    assert (a.double() - b.double()).abs().max().item() <= ATOL
    assert torch.equal(a > 0, b > 0), "a mask pixel flipped"


def _export(model: torch.nn.Module, path: Path):
    onnx = pytest.importorskip("onnx")
    from lightseg_edge.export.onnx_export import export_onnx, input_spec

    return onnx.load(str(export_onnx(model, path, input_spec(1, (256, 256), False), opset=17)))


@pytest.mark.parametrize("reduce", [False, True], ids=["default", "reduce"])
@pytest.mark.parametrize("name", AFFECTED)
def test_exported_deploy_form_has_no_transposed_layer_normalization(name, reduce, tmp_path, sample_batches):
    torch.manual_seed(0)
    train = create_model(name).eval()
    # the reductions form with no other rewrite (UCM-Net's OpenVINO form also changes its upsampling)
    forms = type(train).deploy_forms
    form = DeployForm.DEFAULT if not reduce else DeployForm.LITERT if DeployForm.LITERT in forms else DeployForm.OPENVINO
    n = _norms(train, LayerNorm2d)
    old = _export(train, tmp_path / "old.onnx")  # the training form: LayerNorm2d as exported before the rewrite
    new = _export(copy.deepcopy(train).deploy(form), tmp_path / "new.onnx")
    ops_old, ops_new = Counter(n_.op_type for n_ in old.graph.node), Counter(n_.op_type for n_ in new.graph.node)
    assert ops_old["LayerNormalization"] == n
    assert ops_new["LayerNormalization"] == 0
    # exactly the Transposes around the LayerNormalizations went (the exporter merges the pair between two norms)
    assert ops_new["Transpose"] == ops_old["Transpose"] - _transposes_next_to(old, "LayerNormalization") < ops_old["Transpose"]
    # each norm is two channel means, as MatMuls (default form) or ReduceMeans over the channel axis (the OpenVINO and
    # LiteRT forms), and no Transpose feeds or reads one
    reduces = [n_ for n_ in new.graph.node if n_.op_type == "ReduceMean"]
    means = [n_ for n_ in new.graph.node if n_.op_type == "MatMul"]
    if form is DeployForm.DEFAULT:
        assert not reduces and ops_new["MatMul"] - ops_old["MatMul"] == 2 * n
    else:
        assert ops_new["MatMul"] == ops_old["MatMul"] and len(reduces) == 2 * n
        means = reduces
    for node in reduces:
        axes = next(list(a.ints) for a in node.attribute if a.name == "axes")
        assert axes == [1] and next(a.i for a in node.attribute if a.name == "keepdims") == 1
    producers = {o: n_.op_type for n_ in new.graph.node for o in n_.output}
    consumers = {i: n_.op_type for n_ in new.graph.node for i in n_.input}
    for node in means:
        assert not {producers.get(i) for i in node.input} & {"Transpose"} and consumers.get(node.output[0]) != "Transpose"
    if name != "unext_s":  # UNeXt-S keeps the Transposes of its shift's Pad; the other two have none left
        assert ops_new["Transpose"] == 0

    # ONNX Runtime computes the training form's function (the export's parity tolerance: ORT and PyTorch differ in
    # their conv and erf kernels, here on random weights whose logits reach the tens)
    ort = pytest.importorskip("onnxruntime")
    from lightseg_edge.export.parity import PARITY_ATOL, PARITY_RTOL

    sess = ort.InferenceSession(new.SerializeToString(), providers=["CPUExecutionProvider"])
    x = sample_batches[name][:2]
    got = np.concatenate([sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(len(x))])
    with torch.no_grad():
        ref = train(x).numpy()
    assert np.abs(got.astype(np.float64) - ref).max() <= PARITY_ATOL + PARITY_RTOL * np.abs(ref).max()
    assert np.array_equal(got > 0, ref > 0) or np.mean((got > 0) != (ref > 0)) < 1e-4


def _transposes_next_to(model, op_type: str) -> int:
    """Transposes that feed, or read the output of, an ``op_type`` node."""
    producers = {o: n for n in model.graph.node for o in n.output}
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return sum(
        n.op_type == "Transpose"
        and (producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == op_type
             or any(r.op_type == op_type for r in readers.get(n.output[0], [])))
        for n in model.graph.node
    )
