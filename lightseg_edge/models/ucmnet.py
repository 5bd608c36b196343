"""UCM-Net (Yuan et al., arXiv:2310.09457), re-implemented from the paper and its released code (chunyuyuan/UCM-Net).

Follows the released architecture (chunyuyuan/UCM-Net@de98f42) with its 1,248 never-used parameters left out:
46,188 parameters with the five stage heads, 46,055 in the deployed single-output form. The paper's Table 4 says
49,932; the released code has 47,436. ``lightseg-bench`` reports all three.

The released code works on (B, N, C) tokens; this one stays in NCHW, which is the same arithmetic:
Linear(d->d) on tokens is a 1x1 convolution, the token LayerNorm is a channels LayerNorm, and the spatial
``F.layer_norm(x, [H, W])`` is ``InstanceNorm2d(affine=False)`` (which also lets a dynamic batch export).
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
from ._layers import REDUCTION_FORMS, Bilinear2x, BilinearUpsample2x, LayerNorm2d, channel_layer_norms
from ._registry import register_model

__all__ = ["UCMNet"]


class _DWConv(nn.Module):
    """Spatial norm (per sample and channel over H, W, no affine) then depthwise 3x3."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(dim, eps=1e-5, affine=False)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class UCMBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, dim, 1)
        self.dwconv1 = _DWConv(dim)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(dim, dim, 1)
        self.dwconv2 = _DWConv(dim)
        # The released block returns h + h, and a LayerNorm always follows it; deploy() leaves the doubling out and
        # quarters that norm's eps instead, which gives the same bits (scaling by 2 is exact) one tensor pass sooner.
        self.doubled = True
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):  # the released code's nn.Linear
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        skip = h.detach()  # the released code's stop-gradient skip of the normalised input
        h = self.fc2(self.act(self.dwconv1(self.fc1(h))))
        h = self.dwconv2(h) + skip
        return h + h if self.doubled else h  # x + DropPath(x) with drop_path = 0


class _PatchEmbed(nn.Module):
    """1x1 stride-2 convolution (2x subsampling + projection), then channels LayerNorm."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1, 2)
        self.norm = LayerNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class _EncoderStage(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(_PatchEmbed(c_in, c_out), UCMBlock(c_out), LayerNorm2d(c_out))


class _DecoderUp(nn.Module):
    """1x1 conv -> GroupNorm(4) at the low resolution, bilinear x2, ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1)
        self.norm = nn.GroupNorm(4, c_out)
        self.up = Bilinear2x()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.up(self.norm(self.conv(x))))


class UCMNet(SegModel):
    def __init__(self, cfg: ModelConfig, dims: Tuple[int, ...] = (8, 16, 24, 32, 48, 64)) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(3, dims[0], 3, 1, 1)
        self.stem_norm = nn.GroupNorm(4, dims[0])
        self.encoders = nn.ModuleList(_EncoderStage(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        rev = dims[::-1]  # 64, 48, 32, 24, 16, 8
        self.ups = nn.ModuleList(_DecoderUp(rev[i], rev[i + 1]) for i in range(len(rev) - 1))
        self.dec_blocks = nn.ModuleList(nn.Sequential(UCMBlock(c), LayerNorm2d(c)) for c in rev[1:])
        self.stage_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in rev[1:])
        self.head = nn.Conv2d(dims[0], 3, 1)
        self.head_up = Bilinear2x()
        self.final = nn.Conv2d(3, 1, 1)

    def _run(self, x: torch.Tensor, with_stages: bool) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        self.check_input(x)
        size = x.shape[-2:]
        skips = [F.relu(F.max_pool2d(self.stem_norm(self.stem(x)), 2))]
        for enc in self.encoders:
            skips.append(enc(skips[-1]))
        h = skips.pop()  # bottleneck, 64 x H/64 x W/64
        stages = []
        for up, block, head in zip(self.ups, self.dec_blocks, self.stage_heads):
            h = up(h) + skips.pop()
            if with_stages:
                stages.append(head(F.interpolate(h, size=size, mode="bilinear", align_corners=True)))
            h = block(h)
        h = F.relu(self.head_up(self.head(h)))
        return self.final(h), stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, with_stages=False)[0]

    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Final logits and the five stage logits, deepest (8x8 level) first, as the group loss expects."""
        return self._run(x, with_stages=True)

    deploy_forms = REDUCTION_FORMS

    def deploy(self, form: DeployForm = DeployForm.DEFAULT) -> "UCMNet":
        """Eval mode with every ``LayerNorm2d`` as ``ChannelLayerNorm2d`` (in place; Parameters shared, state dict
        unchanged): channel statistics instead of Transpose -> LayerNormalization -> Transpose, as MatMuls in the
        default form and as reductions in the OpenVINO, LiteRT and Core ML forms.

        ``DeployForm.OPENVINO`` also makes the six bilinear x2 upsamplings ``BilinearUpsample2x`` (Pad + depthwise
        Conv + DepthToSpace), which OpenVINO runs faster than its Interpolate and ONNX Runtime slower than its Resize.
        Every form leaves out each block's final doubling (``UCMBlock.doubled``), exactly compensated in the next norm.
        """
        if self.check_form(form) is DeployForm.OPENVINO:
            for owner, name, channels in [*((u, "up", u.conv.out_channels) for u in self.ups), (self, "head_up", self.head.out_channels)]:
                setattr(owner, name, BilinearUpsample2x(channels))
        channel_layer_norms(self, reduce=form in REDUCTION_FORMS)
        for block, norm in [(stage[1], stage[2]) for stage in self.encoders] + [tuple(pair) for pair in self.dec_blocks]:
            if block.doubled:  # once: deploy() may run again for another form
                block.doubled = False
                norm.eps /= 4  # LN(2h) with eps == LN(h) with eps / 4, bit for bit
        return self.eval()


_CFG = ModelConfig(
    name="ucmnet",
    family="ucmnet",
    paper="UCM-Net: A Lightweight and Efficient Solution for Skin Lesion Segmentation using MLP and CNN",
    citation="Yuan, Zhao, Agaian. UCM-Net. Biomedical Signal Processing and Control 2024, 106573; arXiv:2310.09457",
    preprocess=PreprocessConfig(size=(256, 256), mode="minmax"),
    # The stem pool and five stride-2 patch embeds halve the size six times; the decoder adds skips after exact x2
    # upsampling, so H and W must be multiples of 64 (a multiple of 32 such as 224 fails).
    stride=64,
    # At 64x64 the deepest map is 1x1, and its InstanceNorm needs more than one pixel.
    min_size=128,
    recipe=Recipe(
        "bce_squared_dice",
        group_weights=(0.1, 0.2, 0.3, 0.4, 0.5),
        source="chunyuyuan/UCM-Net@de98f42 train_newdata.py, losses.py GT_BceDiceLoss_new1",
    ),
    claims=PaperClaims(
        params=49_932,
        gmacs=0.0465,
        memory_mb=1.19,
        released_code_params=47_436,
        isic2018_dice=0.8848,  # with 81.26 IoU, 300 epochs on its own 7:3 split
        source="UCM-Net paper, Table 4 (thop MACs at 1x3x256x256, memory = parameter bytes + input + output)",
        notes=(
            "the released code (chunyuyuan/UCM-Net@de98f42) has 47,436 parameters, 1,248 of them never used",
            "the paper's 'GFLOPs' are thop MACs; its 'memory' is a formula, not a measurement",
        ),
        params_why=(
            "the paper's 49,932 belongs to a model variant that is not public: the released code (chunyuyuan/UCM-Net@de98f42) has "
            "47,436, and the authors' own notebook prints 47,436; 1,248 of those are never used by the forward pass and are omitted "
            "here, giving 46,188 (46,055 in the deployed single-output form) [counted here]"
        ),
        gmacs_why=(
            "the paper's 0.0465 is thop MACs of the training forward with the 5 deep-supervision heads (the released code gives "
            "0.045193; thop without heads 0.036805) [thop 0.1.1, measured here]"
        ),
        memory_mb_why=(
            "with the released code's 47,436 parameters the formula gives 1.1810, which the authors' notebook prints "
            "[chunyuyuan/UCM-Net example.ipynb]"
        ),
    ),
    origin_url="https://github.com/chunyuyuan/UCM-Net",
    license="see upstream repository",
)


@register_model(_CFG)
def ucmnet(**kwargs) -> UCMNet:
    return UCMNet(_CFG, **kwargs)
