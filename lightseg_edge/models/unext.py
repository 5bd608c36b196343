"""UNeXt-S (Valanarasu & Patel, MICCAI 2022), re-implemented from the paper and its released code.

Follows the released ``UNext_S`` (jeya-maria-jose/UNeXt-pytorch@6ad0855, ``archs.py``): 253,561 parameters, the
UCM-Net paper's Table 4 figure. The released code already returns logits.

The released tokenised-MLP stages work on (B, N, C) tokens; this one stays in NCHW, which is the same arithmetic:
Linear on tokens is a 1x1 convolution and the token LayerNorm is a channels LayerNorm. The shift (pad 2, roll five
channel groups by -2..2, crop) is a zero-filled shift, written here as one crop per group of the padded tensor.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..types import DeployForm, PaperClaims, PreprocessConfig, Recipe
from ._base import SegModel
from ._cfg import ModelConfig
from ._layers import REDUCTION_FORMS, LayerNorm2d, channel_layer_norms
from ._registry import register_model

__all__ = ["UNeXtS"]


def _shift(x: torch.Tensor, axis: int, shift_size: int = 5) -> torch.Tensor:
    """Shift channel group g by g - shift_size // 2 pixels along ``axis`` (2 = H, 3 = W), filling with zeros.

    Groups are ``torch.chunk``'s split of the channels (e.g. 13, 13, 13, 13, 12 for 64), as released."""
    pad = shift_size // 2
    xp = F.pad(x, (pad, pad) if axis == 3 else (0, 0, pad, pad))
    parts = []
    for g, part in enumerate(torch.chunk(xp, shift_size, dim=1)):
        # roll by (g - pad), then crop [pad, pad + size). The end counts from the far edge, a constant: an end taken
        # from x.shape is traced as shape arithmetic, which Core ML's converter cannot take.
        start, stop = 2 * pad - g, -g or None
        parts.append(part[:, :, start:stop] if axis == 2 else part[:, :, :, start:stop])
    return torch.cat(parts, dim=1)


class _ShiftedBlock(nn.Module):
    """x + shiftMLP(LN(x)): shift along H -> fc1 -> depthwise 3x3 -> GELU -> shift along W -> fc2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, dim, 1)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.fc2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(_shift(self.norm(x), axis=2))
        h = F.gelu(self.dwconv(h))
        return x + self.fc2(_shift(h, axis=3))


class _TokenStage(nn.Module):
    """Overlapping patch embedding (3x3 stride-2 conv + LN), one shifted block, LN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.embed_norm = LayerNorm2d(c_out)
        self.block = _ShiftedBlock(c_out)
        self.norm = LayerNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.embed_norm(self.proj(x))))


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out))


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class UNeXtS(SegModel):
    def __init__(self, cfg: ModelConfig, dims: Tuple[int, ...] = (8, 16, 32, 64, 128)) -> None:
        super().__init__()
        self.cfg = cfg
        d = dims
        self.encoders = nn.ModuleList(_conv_bn(a, b) for a, b in zip((3,) + d[:2], d[:3]))
        self.stage4 = _TokenStage(d[2], d[3])
        self.bottleneck = _TokenStage(d[3], d[4])
        # Decoder, deepest first: 128->64, 64->32, 32->16, 16->8 (conv + BN), then 8->8 without a norm.
        self.decoders = nn.ModuleList(_conv_bn(d[i + 1], d[i]) for i in (3, 2, 1, 0))
        self.decoder5 = nn.Conv2d(d[0], d[0], 3, padding=1)
        self.dec_blocks = nn.ModuleList(nn.Sequential(_ShiftedBlock(c), LayerNorm2d(c)) for c in (d[3], d[2]))
        self.final = nn.Conv2d(d[0], 1, 1)
        # The released token modules initialise themselves; the conv stages keep PyTorch's defaults.
        for m in (self.stage4, self.bottleneck, self.dec_blocks):
            m.apply(self._init_token_weights)

    @staticmethod
    def _init_token_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):  # the released nn.Linear
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        h = x
        for enc in self.encoders:
            h = F.relu(F.max_pool2d(enc(h), 2))
            skips.append(h)  # t1, t2, t3
        t4 = self.stage4(h)
        skips.append(t4)
        h = self.bottleneck(t4)
        for i, dec in enumerate(self.decoders):
            h = F.relu(_up2(dec(h))) + skips[3 - i]
            if i < 2:
                h = self.dec_blocks[i](h)
        return self.final(F.relu(_up2(self.decoder5(h))))

    deploy_forms = REDUCTION_FORMS

    def deploy(self, form: DeployForm = DeployForm.DEFAULT) -> "UNeXtS":
        """Eval mode with each BatchNorm folded into the conv before it (in place; the model stops being trainable),
        and every ``LayerNorm2d`` as ``ChannelLayerNorm2d`` (Parameters shared): channel statistics instead of
        Transpose -> LayerNormalization -> Transpose, as MatMuls in the default form and as reductions in the OpenVINO,
        LiteRT and Core ML forms.

        The ONNX exporter folds the BatchNorms anyway; this makes the PyTorch runtime skip eight normalisation passes."""
        reduce = self.check_form(form) in REDUCTION_FORMS
        self.eval()
        channel_layer_norms(self, reduce=reduce)
        for seqs in (self.encoders, self.decoders):
            for i, seq in enumerate(seqs):
                if isinstance(seq, nn.Sequential):
                    seqs[i] = fuse_conv_bn_eval(seq[0], seq[1])
        return self


_CFG = ModelConfig(
    name="unext_s",
    family="unext",
    paper="UNeXt: MLP-based Rapid Medical Image Segmentation Network",
    citation="Valanarasu, Patel. UNeXt. MICCAI 2022, LNCS 13435, pp. 23-33; arXiv:2203.04967",
    preprocess=PreprocessConfig(size=(256, 256), mode="meanstd"),
    stride=32,
    recipe=Recipe(
        "unext_bce_dice",
        optimizer="adam",
        weight_decay=1e-4,
        batch_size=16,
        epochs=100,
        t_max=100,
        source="jeya-maria-jose/UNeXt-pytorch train.py",
    ),
    claims=PaperClaims(
        params=253_561,
        gmacs=0.1038,
        memory_mb=1.9673,
        released_code_params=253_561,
        source="UCM-Net paper, Table 4 (thop MACs at 1x3x256x256, memory = parameter bytes + input + output)",
        notes=(
            "UNext_S of jeya-maria-jose/UNeXt-pytorch@6ad0855 reproduces all three figures",
            "UNext_S is missing from the released archs.__all__, so its train.py cannot select it unchanged",
        ),
    ),
    origin_url="https://github.com/jeya-maria-jose/UNeXt-pytorch",
    license="MIT (upstream repository)",
    notes=("released pipeline: albumentations Normalize() (ImageNet mean/std on 0..1)",),
)


@register_model(_CFG)
def unext_s(**kwargs) -> UNeXtS:
    return UNeXtS(_CFG, **kwargs)
