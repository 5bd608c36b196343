"""Family-specific behaviour of the baselines (EGE-UNet, MALUNet, UNeXt-S, U-Net) that the registry-wide tests in
test_models.py do not see: deep-supervision order, the rewrites of released formulations, tied memories, BN folding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightseg_edge.models import create_model
from lightseg_edge.models.egeunet import _GHPA
from lightseg_edge.models.malunet import _ExternalAttention
from lightseg_edge.models.unext import _shift


def _randomize_bn_stats(model: nn.Module, seed: int = 0) -> None:
    # Fresh BatchNorms are identities in eval mode; random statistics make folding them a real check.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_egeunet_stage_logits_are_the_gab_masks_deepest_first():
    torch.manual_seed(0)
    model = create_model("egeunet").eval()
    masks = []
    for head in model.gt_convs:
        head.register_forward_hook(lambda mod, inp, out: masks.append(out))
    x = torch.rand(1, 3, 128, 192) * 255
    with torch.no_grad():
        final, stages = model.forward_train(x)
        assert torch.equal(final, model(x))
    masks = masks[:5]  # the hooks fired again in model(x)
    # group_loss weights 0.1..0.5 from the first to the last stage: deepest (H/32) must come first.
    assert [m.shape[-2:] for m in masks] == [(128 // s, 192 // s) for s in (32, 16, 8, 4, 2)]
    for mask, stage in zip(masks, stages):
        assert torch.equal(stage, F.interpolate(mask, size=(128, 192), mode="bilinear", align_corners=True))


def _released_ghpa(m: _GHPA, x: torch.Tensor) -> torch.Tensor:
    """The released GHPA arithmetic: hand-written channels-first LN, permutes and squeeze(0)."""

    def ln(norm, t):
        u = t.mean(1, keepdim=True)
        s = (t - u).pow(2).mean(1, keepdim=True)
        return norm.weight[:, None, None] * ((t - u) / torch.sqrt(s + 1e-6)) + norm.bias[:, None, None]

    def rs(p, size):
        return F.interpolate(p, size=size, mode="bilinear", align_corners=True)

    x = ln(m.norm1, x)
    x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
    x1 = x1 * m.conv_xy(rs(m.params_xy, x1.shape[2:4]))
    x2 = x2.permute(0, 3, 1, 2)
    x2 = (x2 * m.conv_zx(rs(m.params_zx, x2.shape[2:4]).squeeze(0)).unsqueeze(0)).permute(0, 2, 3, 1)
    x3 = x3.permute(0, 2, 1, 3)
    x3 = (x3 * m.conv_zy(rs(m.params_zy, x3.shape[2:4]).squeeze(0)).unsqueeze(0)).permute(0, 2, 1, 3)
    x = torch.cat([x1, x2, x3, m.dw(x4)], dim=1)
    return m.ldw(ln(m.norm2, x))


def test_egeunet_ghpa_matches_the_released_formulation():
    torch.manual_seed(0)
    m = _GHPA(32, 48).eval()
    with torch.no_grad():
        for p in m.parameters():  # ones-initialised maps and unit LN affines would hide axis mix-ups
            p.copy_(torch.randn_like(p))
        x = torch.randn(2, 32, 12, 20) * 10
        assert (m(x) - _released_ghpa(m, x)).abs().max().item() < 1e-4


def test_malunet_memories_start_tied_but_are_stored_independently(tmp_path):
    from safetensors.torch import load_file, save_file

    model = create_model("malunet")
    blocks = [m for m in model.modules() if isinstance(m, _ExternalAttention)]
    assert len(blocks) == 6
    for b in blocks:
        assert torch.equal(b.mk.weight, b.mv.weight.permute(1, 0, 2))
        assert b.mk.weight.data_ptr() != b.mv.weight.data_ptr()
    # independent storage is what lets the weights be written as safetensors, which refuses shared tensors
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    assert set(load_file(str(tmp_path / "m.safetensors"))) == set(model.state_dict())


def _released_shift(x: torch.Tensor, dim: int, shift_size: int = 5) -> torch.Tensor:
    pad = shift_size // 2
    h, w = x.shape[-2:]
    xs = torch.chunk(F.pad(x, (pad, pad, pad, pad)), shift_size, 1)
    xc = torch.cat([torch.roll(c, s, dim) for c, s in zip(xs, range(-pad, pad + 1))], 1)
    return torch.narrow(torch.narrow(xc, 2, pad, h), 3, pad, w)


def test_unext_shift_matches_the_released_roll():
    torch.manual_seed(0)
    for c in (32, 64, 128):  # uneven torch.chunk groups: 7x4+4, 13x4+12, 26x4+24
        x = torch.randn(2, c, 8, 12)
        for axis in (2, 3):
            assert torch.equal(_shift(x, axis), _released_shift(x, axis))


def test_unext_and_unet_deploy_fold_batchnorm_without_changing_outputs():
    torch.manual_seed(0)
    for name, size in (("unext_s", 128), ("unet", 64)):
        model = create_model(name).eval()
        with torch.no_grad():
            _randomize_bn_stats(model)
            x = torch.randn(2, 3, size, size)
            ref = model(x)
            out = model.deploy()(x)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), name
        assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item()), name
