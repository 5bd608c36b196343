"""EGE-UNet (Ruan et al., MICCAI 2023), re-implemented from the paper and its released code.

Follows the released model (JCruan519/EGE-UNet@f52ba30, ``c_list=[8,16,24,32,48,64]``, ``bridge=True``,
``gt_ds=True``): 53,374 parameters, the UCM-Net paper's Table 4 figure. Differences that change no numbers:

- the sigmoid is left out; ``forward`` returns logits and the five side outputs are mask logits;
- the channels-first LayerNorm is ``F.layer_norm`` over channels (``LayerNorm2d``) in the training form, instead of
  the released mean/pow/sqrt arithmetic: the same maths. ``deploy()`` writes it back as statistics over the channel
  axis (``ChannelLayerNorm2d``: the released arithmetic with ``d * d`` for ``Pow(d, 2)``), which exports without the
  Transposes around a ``LayerNormalization`` and imports on TensorRT 8.5. An FP16 export keeps in FP32 every node,
  the squares included, whose values on the check images come within 4x of the FP16 limit (``export.fp16``);
- the (C,H) and (C,W) parameter maps are applied as broadcast gates instead of through permutes, and without
  ``squeeze(0)`` (which the TorchScript exporter turns into ``If`` nodes);
- GAB5's bilinear resize from 8x8 to 8x8 (an exact identity) is skipped.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..types import DeployForm, PaperClaims, PreprocessConfig, Recipe
from ._base import SegModel
from ._cfg import ModelConfig
from ._layers import REDUCTION_FORMS, LayerNorm2d, channel_layer_norms
from ._registry import register_model

__all__ = ["EGEUNet"]

_LN_EPS = 1e-6  # the released channels-first LayerNorm's default


def _dw3x3(c: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class _GHPA(nn.Module):
    """Grouped multi-axis Hadamard product attention: four channel groups gated by learnable maps on the (H,W),
    (C,H) and (C,W) planes plus a plain depthwise branch, then depthwise 3x3 -> GELU -> 1x1 to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, grid: int = 8) -> None:
        super().__init__()
        c = c_in // 4
        self.norm1 = LayerNorm2d(c_in, eps=_LN_EPS)
        # Maps are resized to the feature size at run time, so any input size works.
        self.params_xy = nn.Parameter(torch.ones(1, c, grid, grid))
        self.conv_xy = nn.Sequential(_dw3x3(c), nn.GELU(), nn.Conv2d(c, c, 1))
        self.params_zx = nn.Parameter(torch.ones(1, 1, c, grid))
        self.conv_zx = nn.Sequential(nn.Conv1d(c, c, 3, padding=1, groups=c), nn.GELU(), nn.Conv1d(c, c, 1))
        self.params_zy = nn.Parameter(torch.ones(1, 1, c, grid))
        self.conv_zy = nn.Sequential(nn.Conv1d(c, c, 3, padding=1, groups=c), nn.GELU(), nn.Conv1d(c, c, 1))
        self.dw = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), _dw3x3(c))
        self.norm2 = LayerNorm2d(c_in, eps=_LN_EPS)
        self.ldw = nn.Sequential(_dw3x3(c_in), nn.GELU(), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
        h, w = x.shape[-2:]
        c = self.params_zx.shape[2]
        gate_hw = self.conv_xy(_resize(self.params_xy, (h, w)))  # (1, c, h, w)
        # The released code resizes the (1,1,c,8) maps to (c, h): the channel axis maps onto itself exactly.
        gate_h = self.conv_zx(_resize(self.params_zx, (c, h))[0]).unsqueeze(-1)  # (1, c, h, 1)
        gate_w = self.conv_zy(_resize(self.params_zy, (c, w))[0]).unsqueeze(-2)  # (1, c, 1, w)
        x = torch.cat([x1 * gate_hw, x2 * gate_h, x3 * gate_w, self.dw(x4)], dim=1)
        return self.ldw(self.norm2(x))


class _GAB(nn.Module):
    """Group aggregation bridge: the high-level feature (projected, resized) and the skip are split into four
    groups; each group plus the stage's mask logits goes through LN -> depthwise 3x3 with dilation 1, 2, 5, 7."""

    def __init__(self, c_high: int, c_low: int, resize: bool = True, dilations: Tuple[int, ...] = (1, 2, 5, 7)) -> None:
        super().__init__()
        self.resize = resize
        self.pre_project = nn.Conv2d(c_high, c_low, 1)
        g = c_low // 2 + 1  # a quarter of each input, plus the mask channel
        self.groups = nn.ModuleList(nn.Sequential(LayerNorm2d(g, eps=_LN_EPS), _dw3x3(g, d)) for d in dilations)
        self.tail = nn.Sequential(LayerNorm2d(2 * c_low + 4, eps=_LN_EPS), nn.Conv2d(2 * c_low + 4, c_low, 1))

    def forward(self, high: torch.Tensor, low: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        high = self.pre_project(high)
        if self.resize:
            high = _resize(high, low.shape[-2:])
        parts = [
            grp(torch.cat((hi, lo, mask), dim=1))
            for grp, hi, lo in zip(self.groups, torch.chunk(high, 4, dim=1), torch.chunk(low, 4, dim=1))
        ]
        return self.tail(torch.cat(parts, dim=1))


class EGEUNet(SegModel):
    def __init__(self, cfg: ModelConfig, c_list: Tuple[int, ...] = (8, 16, 24, 32, 48, 64)) -> None:
        super().__init__()
        self.cfg = cfg
        c = c_list
        self.encoders = nn.ModuleList(
            [nn.Conv2d(3, c[0], 3, padding=1), nn.Conv2d(c[0], c[1], 3, padding=1), nn.Conv2d(c[1], c[2], 3, padding=1)]
            + [_GHPA(c[i], c[i + 1]) for i in (2, 3, 4)]
        )
        self.enc_norms = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in range(5))
        # Decoder side, deepest level first: 64->48 (8x8), 48->32, 32->24, 24->16, 16->8.
        self.decoders = nn.ModuleList(
            [_GHPA(c[5], c[4]), _GHPA(c[4], c[3]), _GHPA(c[3], c[2])]
            + [nn.Conv2d(c[2], c[1], 3, padding=1), nn.Conv2d(c[1], c[0], 3, padding=1)]
        )
        self.dec_norms = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in (4, 3, 2, 1, 0))
        self.gt_convs = nn.ModuleList(nn.Conv2d(c[i], 1, 1) for i in (4, 3, 2, 1, 0))
        # GAB k refines skip k with the previous (already refined) deeper skip; the deepest pairs t6 with t5.
        self.gabs = nn.ModuleList(_GAB(c[i + 1], c[i], resize=i != 4) for i in (4, 3, 2, 1, 0))
        self.final = nn.Conv2d(c[0], 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The released initialisation: fan-out normal for convs; Conv1d keeps its default bias.
        if isinstance(m, nn.Conv1d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _run(self, x: torch.Tensor, with_stages: bool) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        self.check_input(x)
        size = x.shape[-2:]
        skips = []
        h = x
        for enc, norm in zip(self.encoders[:5], self.enc_norms):
            h = F.gelu(F.max_pool2d(norm(enc(h)), 2))
            skips.append(h)
        h = F.gelu(self.encoders[5](h))  # t6, 64 x H/32 x W/32
        high = h
        stages = []
        for i, (dec, norm, gt_conv, gab) in enumerate(zip(self.decoders, self.dec_norms, self.gt_convs, self.gabs)):
            h = norm(dec(h))
            if i > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=True)
            h = F.gelu(h)
            mask = gt_conv(h)  # the GAB consumes these logits, so the heads stay in the inference graph
            high = gab(high, skips[4 - i], mask)
            h = h + high
            if with_stages:
                stages.append(_resize(mask, size))
        logits = F.interpolate(self.final(h), scale_factor=2.0, mode="bilinear", align_corners=True)
        return logits, stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, with_stages=False)[0]

    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Final logits and the five mask logits at input size, deepest (H/32) first: the order the released
        ``GT_BceDiceLoss`` weights 0.1 .. 0.5."""
        return self._run(x, with_stages=True)

    # No LiteRT form: LiteRT runs this model's MatMul statistics faster than the reductions (benchmarks/cpu_fast_path.py).
    deploy_forms = frozenset({DeployForm.OPENVINO, DeployForm.COREML})

    def deploy(self, form: DeployForm = DeployForm.DEFAULT) -> "EGEUNet":
        """Eval mode with every ``LayerNorm2d`` as ``ChannelLayerNorm2d`` (in place; Parameters shared, state dict
        unchanged): channel statistics instead of Transpose -> LayerNormalization -> Transpose, as MatMuls in the
        default form and as reductions in the OpenVINO and Core ML forms."""
        channel_layer_norms(self, reduce=self.check_form(form) in REDUCTION_FORMS)
        return self.eval()


_CFG = ModelConfig(
    name="egeunet",
    family="egeunet",
    paper="EGE-UNet: an Efficient Group Enhanced UNet for skin lesion segmentation",
    citation="Ruan, Xie, Gao, Liu, Fu. EGE-UNet. MICCAI 2023; arXiv:2307.08473",
    preprocess=PreprocessConfig(size=(256, 256), mode="raw"),
    stride=32,
    recipe=Recipe(
        "bce_dice",
        group_weights=(0.1, 0.2, 0.3, 0.4, 0.5),
        source="JCruan519/EGE-UNet configs/config_setting.py (GT_BceDiceLoss)",
    ),
    claims=PaperClaims(
        params=53_374,
        gmacs=0.0721,
        memory_mb=1.2036,
        released_code_params=53_374,
        source="UCM-Net paper, Table 4 (thop MACs at 1x3x256x256, memory = parameter bytes + input + output)",
        notes=("the released code (JCruan519/EGE-UNet@f52ba30) reproduces all three figures",),
    ),
    origin_url="https://github.com/JCruan519/EGE-UNet",
    license="none stated upstream (re-implemented from the paper and its released code, no upstream code included)",
    notes=("released pipeline: (img - dataset mean) / std, then per-image min-max to 0..255; here 'raw' 0..255",),
)


@register_model(_CFG)
def egeunet(**kwargs) -> EGEUNet:
    return EGEUNet(_CFG, **kwargs)
