"""U-Net (Ronneberger et al., MICCAI 2015), the classic baseline of the UCM-Net paper's Table 4.

The widely used PyTorch variant (as in milesial/Pytorch-UNet with ``bilinear=False``): double 3x3 conv + BatchNorm
+ ReLU at 64..1024 channels, 2x2 max-pool down, 2x2 stride-2 transposed conv up, concatenated skips, 1x1 head.
The 3x3 convs have no bias (BatchNorm follows each), the transposed convs and the head do: 31,037,633 parameters,
the UCM-Net paper's Table 4 figure (with biased 3x3 convs it would be 31,043,521). Padded convs, so the output has
the input's size; four poolings, so H and W must be multiples of 16.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..types import DeployForm, PaperClaims, PreprocessConfig, Recipe
from ._base import SegModel
from ._cfg import ModelConfig
from ._registry import register_model

__all__ = ["UNet"]


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def fuse_bn(self) -> None:
        """Fold each BatchNorm into the conv before it (eval mode only)."""
        layers = list(self)
        fused = []
        i = 0
        while i < len(layers):
            if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                fused.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                i += 2
            else:
                fused.append(layers[i])
                i += 1
        for name in list(self._modules):
            del self._modules[name]
        for j, m in enumerate(fused):
            self.add_module(str(j), m)


class _Up(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2)
        self.conv = _DoubleConv(c_in, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegModel):
    def __init__(self, cfg: ModelConfig, widths: Tuple[int, ...] = (64, 128, 256, 512, 1024)) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleList(_DoubleConv(a, b) for a, b in zip((3,) + widths[:-1], widths))
        self.pool = nn.MaxPool2d(2)
        rev = widths[::-1]
        self.decoders = nn.ModuleList(_Up(a, b) for a, b in zip(rev[:-1], rev[1:]))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        h = x
        for i, enc in enumerate(self.encoders):
            h = enc(h if i == 0 else self.pool(h))
            skips.append(h)
        h = skips.pop()
        for dec in self.decoders:
            h = dec(h, skips.pop())
        return self.head(h)

    def deploy(self, form: DeployForm = DeployForm.DEFAULT) -> "UNet":
        """Eval mode with each BatchNorm folded into its conv (in place; the model stops being trainable).

        The ONNX exporter folds them anyway; this saves the PyTorch runtime 18 normalisation passes."""
        self.check_form(form)
        self.eval()
        for m in self.modules():
            if isinstance(m, _DoubleConv):
                m.fuse_bn()
        return self


_CFG = ModelConfig(
    name="unet",
    family="unet",
    paper="U-Net: Convolutional Networks for Biomedical Image Segmentation",
    citation="Ronneberger, Fischer, Brox. U-Net. MICCAI 2015, LNCS 9351, pp. 234-241; arXiv:1505.04597",
    preprocess=PreprocessConfig(size=(256, 256), mode="minmax"),
    stride=16,
    recipe=Recipe("bce_dice", source="BCE + Dice, AdamW (the UCM-Net comparison setting)"),
    claims=PaperClaims(
        params=31_037_633,
        gmacs=54.7378,
        memory_mb=None,
        source="UCM-Net paper, Table 4 (thop MACs at 1x3x256x256)",
        notes=(
            "no published memory figure for U-Net; the UCM-Net paper's formula would give 119.40 MB",
            "54.7378 G is a thop count, which overstates each stride-2 transposed conv 4x; true MACs are about 48.30 G",
        ),
        gmacs_why=(
            "54.7378 G is a thop count, which overstates each stride-2 transposed conv 4x (it counts output elements x Cin x k^2); "
            "true MACs are about 48.30 G [computed here]"
        ),
    ),
    origin_url="https://github.com/milesial/Pytorch-UNet",
    license="GPL-3.0 (milesial/Pytorch-UNet, the reference variant; re-implemented, no upstream code)",
    notes=(
        (
            "no official pipeline for this comparison; it uses UCM-Net's (per-image min-max to 0..1), the pipeline in "
            "which the UCM-Net authors appear to have retrained their baselines (an inference from the baseline "
            "branches in chunyuyuan/UCM-Net's train_newdata.py and val.py, not verified)"
        ),
    ),
)


@register_model(_CFG)
def unet(**kwargs) -> UNet:
    return UNet(_CFG, **kwargs)
