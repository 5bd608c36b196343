"""MALUNet (Ruan et al., IEEE BIBM 2022), re-implemented from the paper and its released code.

Follows the released model (JCruan519/MALUNet@e184b47, ``c_list=[8,16,24,32,48,64]``, ``split_att='fc'``,
``bridge=True``): 177,943 parameters, the UCM-Net paper's Table 4 figure. ``forward`` returns logits (the released
``forward`` ends in a sigmoid).

Tied external-attention memories: the released ``EAblock`` makes its second Conv1d weight a transposed *view* of
the first, so ``parameters()`` counts both (177,943; 146,711 unique storage). That tie does not survive
``model.cuda()`` (each parameter is copied on its own), so the released training really updates two independent
tensors that start equal. Here they are two independent parameters initialised tied, which is that behaviour on
every device, keeps the paper's count, and lets the weights be saved as safetensors (which refuses shared storage).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..types import PaperClaims, PreprocessConfig, Recipe
from ._base import SegModel
from ._cfg import ModelConfig
from ._registry import register_model

__all__ = ["MALUNet"]


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class _DWSeparable(nn.Sequential):
    """Depthwise kxk -> GroupNorm(4) -> 1x1."""

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in), nn.GroupNorm(4, c_in), nn.Conv2d(c_in, c_out, 1))


class _GatedAttentionUnit(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.gate = _DWSeparable(c_in, c_in, 3)
        self.value = _DWSeparable(c_in, c_in, 5)
        self.out = _DWSeparable(c_in, c_out, 3)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.gate(x)) * F.gelu(self.value(x))
        return F.gelu(self.out(h)) + self.shortcut(x)


class _DilatedGatedAttention(nn.Module):
    """Four channel groups through depthwise 3x3 at dilations 7, 5, 2, 1 -> GN -> 1x1 -> GELU, then a gated unit."""

    def __init__(self, c_in: int, c_out: int, dilations: Tuple[int, ...] = (7, 5, 2, 1)) -> None:
        super().__init__()
        g = c_in // 4
        self.branches = nn.ModuleList(nn.Conv2d(g, g, 3, padding=d, dilation=d, groups=g) for d in dilations)
        self.norm = nn.GroupNorm(4, c_in)
        self.conv = nn.Conv2d(c_in, c_in, 1)
        self.gau = _GatedAttentionUnit(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([b(part) for b, part in zip(self.branches, torch.chunk(x, 4, dim=1))], dim=1)
        return self.gau(F.gelu(self.conv(self.norm(x))))


class _ExternalAttention(nn.Module):
    """External attention with a 4c-slot memory: keys ``mk`` (c -> 4c), softmax over positions, normalised over
    the slots, values ``mv`` (4c -> c); then 1x1 -> GN, residual, GELU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1)
        self.mk = nn.Conv1d(c, 4 * c, 1, bias=False)
        self.mv = nn.Conv1d(4 * c, c, 1, bias=False)
        self.conv2 = nn.Conv2d(c, c, 1, bias=False)
        self.norm = nn.GroupNorm(4, c)

    def tie_memories(self) -> None:
        """Set the key memory to the transposed value memory, as the released model starts out."""
        with torch.no_grad():
            self.mk.weight.copy_(self.mv.weight.permute(1, 0, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        attn = F.softmax(self.mk(h.flatten(2)), dim=-1)  # (N, 4c, HW)
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))
        h = self.mv(attn).reshape(h.shape)
        return F.gelu(self.norm(self.conv2(h)) + x)


class _SCAttentionBridge(nn.Module):
    """Spatial then channel attention shared across the five skips (one 7x7 dilated conv; one Conv1d over the
    concatenated channel descriptors, then a Linear per stage)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=9, dilation=3)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        total = sum(channels)
        self.channel = nn.ModuleList(nn.Linear(total, c) for c in channels)

    def forward(self, skips: Sequence[torch.Tensor]):
        sa = [t * torch.sigmoid(self.spatial(torch.cat([t.mean(1, keepdim=True), t.amax(1, keepdim=True)], dim=1))) for t in skips]
        u = [s + t for s, t in zip(sa, skips)]
        desc = self.mix(torch.cat([v.mean((2, 3)) for v in u], dim=1).unsqueeze(1))  # (N, 1, sum C)
        out = []
        for lin, v, s in zip(self.channel, u, sa):
            ca = torch.sigmoid(lin(desc)).transpose(1, 2).unsqueeze(-1)  # (N, C, 1, 1)
            out.append(ca * v + s)
        return out


class MALUNet(SegModel):
    def __init__(self, cfg: ModelConfig, c_list: Tuple[int, ...] = (8, 16, 24, 32, 48, 64)) -> None:
        super().__init__()
        self.cfg = cfg
        c = c_list
        self.encoders = nn.ModuleList(
            [nn.Conv2d(3, c[0], 3, padding=1), nn.Conv2d(c[0], c[1], 3, padding=1), nn.Conv2d(c[1], c[2], 3, padding=1)]
            + [nn.Sequential(_ExternalAttention(c[i]), _DilatedGatedAttention(c[i], c[i + 1])) for i in (2, 3, 4)]
        )
        self.enc_norms = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in range(5))
        self.bridge = _SCAttentionBridge(c[:5])
        # Decoder side, deepest level first: 64->48 (at H/32), 48->32, 32->24, 24->16, 16->8.
        self.decoders = nn.ModuleList(
            [nn.Sequential(_DilatedGatedAttention(c[i + 1], c[i]), _ExternalAttention(c[i])) for i in (4, 3, 2)]
            + [nn.Conv2d(c[2], c[1], 3, padding=1), nn.Conv2d(c[1], c[0], 3, padding=1)]
        )
        self.dec_norms = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in (4, 3, 2, 1, 0))
        self.final = nn.Conv2d(c[0], 1, 1)
        self.apply(self._init_weights)
        for m in self.modules():
            if isinstance(m, _ExternalAttention):
                m.tie_memories()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The released initialisation (the value memory's init is the one that survives the tie).
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv1d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        h = x
        for enc, norm in zip(self.encoders[:5], self.enc_norms):
            h = F.gelu(F.max_pool2d(norm(enc(h)), 2))
            skips.append(h)
        skips = self.bridge(skips)
        h = F.gelu(self.encoders[5](h))  # from the un-bridged deepest skip, as released
        for i, (dec, norm) in enumerate(zip(self.decoders, self.dec_norms)):
            h = norm(dec(h))
            if i > 0:
                h = _up2(h)
            h = F.gelu(h) + skips[4 - i]
        return _up2(self.final(h))


_CFG = ModelConfig(
    name="malunet",
    family="malunet",
    paper="MALUNet: A Multi-Attention and Light-weight UNet for Skin Lesion Segmentation",
    citation="Ruan, Xiang, Xie, Liu, Fu. MALUNet. IEEE BIBM 2022, pp. 1150-1156; arXiv:2211.01784",
    preprocess=PreprocessConfig(size=(256, 256), mode="raw"),
    stride=32,
    recipe=Recipe("bce_dice", source="JCruan519/MALUNet configs/config_setting.py (BceDiceLoss)"),
    claims=PaperClaims(
        params=177_943,
        gmacs=0.0830,
        memory_mb=1.6788,
        released_code_params=177_943,
        source="UCM-Net paper, Table 4 (thop MACs at 1x3x256x256, memory = parameter bytes + input + output)",
        notes=(
            "the released code (JCruan519/MALUNet@e184b47) reproduces all three figures",
            "6 tied Conv1d memory pairs: 146,711 parameters of unique storage in the released model",
        ),
        params_why="6 tied Conv1d pairs: 146,711 parameters of unique storage, but numel() over parameters() counts 177,943 [counted here]",
    ),
    origin_url="https://github.com/JCruan519/MALUNet",
    license="none stated upstream (re-implemented from the paper and its released code, no upstream code included)",
    notes=("released pipeline: (img - dataset mean) / std, then per-image min-max to 0..255; here 'raw' 0..255",),
)


@register_model(_CFG)
def malunet(**kwargs) -> MALUNet:
    return MALUNet(_CFG, **kwargs)
