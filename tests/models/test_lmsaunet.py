"""LMSAUnet specifics the registry-wide tests do not see: the exact bicubic rewrite, the deploy rewrites (BN folding,
slice removal, squeeze-before-upsample, attention reductions), the training form's cheaper orders and the
released ECDF/attention details."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightseg_edge.export.onnx_export import torchscript_export_warnings_handled
from lightseg_edge.models import create_model
from lightseg_edge.models._layers import BicubicUpsample2x
from lightseg_edge.models.lmsaunet import ECDF, _channel_max, _DecoderStage, _DeployDecoderStage, _DeployEncoderStage


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    # Fresh BatchNorms are identities and alpha = beta = 1: random values make the folding and reordering real checks.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(torch.rand(1, generator=g) * 1.4 + 0.2)
    return model


@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 1), (2, 1, 2, 3), (1, 3, 5, 7), (2, 8, 16, 24), (1, 64, 32, 32), (1, 5, 13, 4), (1, 16, 9, 31)]
)
def test_bicubic_upsample_equals_pytorch_bicubic(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 3
    ref = F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
    out = BicubicUpsample2x(shape[1])(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert (out - ref).abs().max().item() < 1e-5


def test_bicubic_upsample_keeps_edges_and_constants():
    # Clamped sampling: a constant map stays constant (weights sum to 1), including at the borders.
    x = torch.full((1, 2, 4, 6), 2.5)
    assert torch.allclose(BicubicUpsample2x(2)(x), torch.full((1, 2, 8, 12), 2.5), atol=1e-6)


def test_bicubic_upsample_is_not_a_parameter():
    up = BicubicUpsample2x(4)
    assert list(up.parameters()) == [] and "weight" not in up.state_dict()


@pytest.mark.parametrize("name,params", [("lmsaunet", 476_738), ("lmsaunet_n32", 387_878)])
def test_parameter_counts(name, params):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.n == (8 if name == "lmsaunet" else 32)


@pytest.mark.parametrize("name", ["lmsaunet", "lmsaunet_n32"])
def test_deploy_form_equals_training_form(name):
    torch.manual_seed(0)
    model = _randomize(create_model(name)).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)
        deployed = model.deploy()
        out = deployed(x)
    assert out.shape == ref.shape == (2, 1, 32, 48)
    assert (out - ref).abs().max().item() < 1e-5
    # a copy: the training form keeps its BatchNorms and trainable parameters
    assert deployed is not model and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("n", [2, 4, 8, 32])
def test_deployed_stages_equal_training_stages(n):
    # Stage level, where activations are O(1), so 1e-5 is a tight bound; N = 2 has an empty cascade.
    torch.manual_seed(n)
    enc = _randomize(ECDF(32, 64, n), seed=n).eval()
    dec = _randomize(_DecoderStage(128, 64, 64, n), seed=n + 1).eval()
    x, low, skip = torch.randn(2, 32, 20, 12), torch.randn(2, 128, 10, 6), torch.randn(2, 64, 20, 12)
    dec.squeeze_first = False  # the released order is the reference
    with torch.no_grad():
        enc_ref, dec_ref = enc(x), dec(low, skip)
        assert enc_ref.abs().max() > 0.5 and dec_ref.abs().max() > 0.5
        assert (_DeployEncoderStage(enc)(x) - enc_ref).abs().max().item() < 1e-5
        assert (_DeployDecoderStage(dec)(low, skip) - dec_ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("n", [2, 8, 32])
@pytest.mark.parametrize("train", [True, False])
def test_squeeze_first_decoder_computes_the_released_order(n, train):
    """Squeezing before the upsampling is the same function as the released upsample -> concat -> squeeze, and the
    same gradients (training mode: BatchNorm on batch statistics; eval: running statistics), on the same Parameters."""
    torch.manual_seed(n)
    dec = _randomize(_DecoderStage(128, 64, 64, n), seed=n).train(train)
    low, skip = torch.randn(2, 128, 10, 6), torch.randn(2, 64, 20, 12)
    results = []
    for squeeze_first in (False, True):
        dec.squeeze_first = squeeze_first
        dec.zero_grad()
        ins = [low.clone().requires_grad_(), skip.clone().requires_grad_()]
        out = dec(*ins)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), [t.grad for t in ins], {k: v.grad.clone() for k, v in dec.named_parameters()}))
    (ref, ref_in, ref_p), (got, got_in, got_p) = results
    assert ref.abs().max() > 0.5 and (got - ref).abs().max().item() < 1e-5
    # Gradients of scalars such as alpha sum tens of thousands of terms: 1e-4 of their scale is round-off, a wrong
    # order or a missing term is O(1). BatchNorm biases right before another BatchNorm get exactly zero gradient in
    # training, so both sides are round-off there, below the absolute floor.
    for a, b in zip(got_in, ref_in):
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
    for name, g in ref_p.items():
        assert (got_p[name] - g).abs().max().item() <= 1e-4 * max(1.0, g.abs().max().item()), name


@pytest.mark.parametrize("n", [4, 8, 32])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_paired_depthwise_cascade_computes_the_released_calls(n, layout):
    """Both halves through one depthwise convolution (batch folded into channels) is the released per-half cascade:
    the same output, gradients and BatchNorm running statistics (each BatchNorm still sees one half at a time)."""
    torch.manual_seed(n)
    x, base = torch.randn(3, 32, 12, 10).contiguous(memory_format=layout), _randomize(ECDF(32, 64, n), seed=n).train()
    results = []
    for pair_below in (0, 1_000):
        block = copy.deepcopy(base).to(memory_format=layout)
        block.pair_below = pair_below
        inp = x.clone().requires_grad_()
        out = block(inp)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), inp.grad, {k: v.grad.clone() for k, v in block.named_parameters()},
                        {k: v.clone() for k, v in block.named_buffers()}))
    (ref, ref_in, ref_p, ref_b), (got, got_in, got_p, got_b) = results
    # channels_last kernels sum in other orders: N=32's chain of 15 BatchNorms takes the released per-half path's own
    # gradients 1.3e-4 (of a 1.6 scale) away from the contiguous layout's, so its round-off bound is wider
    rtol = 1e-4 if layout is torch.contiguous_format else 5e-4
    assert ref.abs().max() > 0.5 and (got - ref).abs().max().item() < 1e-5
    assert (got_in - ref_in).abs().max().item() <= rtol * max(1.0, ref_in.abs().max().item())
    for name, g in ref_p.items():
        assert (got_p[name] - g).abs().max().item() <= rtol * max(1.0, g.abs().max().item()), name
    for name, v in ref_b.items():
        torch.testing.assert_close(got_b[name], v, rtol=1e-5, atol=1e-6, msg=name)
    assert ref_b["cascade.0.bn.num_batches_tracked"].item() == 2  # once per half, in both


def test_deploy_export_has_no_resize_and_no_channel_slices():
    onnx = pytest.importorskip("onnx")
    model = create_model("lmsaunet").deploy()
    buf = io.BytesIO()
    with torchscript_export_warnings_handled():
        torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), buf, opset_version=17, dynamo=False)
    ops = [node.op_type for node in onnx.load_from_string(buf.getvalue()).graph.node]
    assert "Resize" not in ops and "ReduceMax" not in ops
    assert ops.count("DepthToSpace") == 4


def test_single_logit_is_lesion_minus_background():
    torch.manual_seed(0)
    model = _randomize(create_model("lmsaunet")).eval()
    two = []
    model.head.conv.register_forward_hook(lambda mod, inp, out: two.append(out))
    with torch.no_grad():
        logit = model(torch.randn(1, 3, 32, 48))
    # the released softmax over (background, lesion) is the sigmoid of the difference logit
    assert torch.allclose(torch.sigmoid(logit), two[0].softmax(1)[:, 1:2], atol=1e-6)


def test_released_ecdf_and_attention_details():
    model = create_model("lmsaunet")
    blocks = [*model.encoders, *(d.block for d in model.decoders)]
    for block in blocks:
        assert block.attn.eca.kernel_size == (5,)  # rounded up to odd, at every width
        assert len(block.cascade) == 3  # (N - 2) / 2 weight sets for N = 8
        assert block.squeeze.bn.eps == 1e-3 and block.squeeze.bn.momentum == 0.03
    # the shared depthwise BN runs once per half: its counter moves twice per training step
    model.train()(torch.rand(2, 3, 32, 32))
    enc = model.encoders[0]
    assert enc.squeeze.bn.num_batches_tracked.item() == 1
    assert enc.cascade[0].bn.num_batches_tracked.item() == 2


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 7, 64])
def test_channel_max_tree_is_exact(channels):
    y = torch.randn(2, channels, 5, 3)
    assert torch.equal(_channel_max(y, channels), y.amax(1, keepdim=True))
