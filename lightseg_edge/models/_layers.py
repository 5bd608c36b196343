"""Blocks shared by two or more model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (what a token-wise LayerNorm does, without leaving NCHW)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _cubic_x2_taps(a: float = -0.75) -> tuple[list[float], list[float]]:
    """The 4 taps of a x2 cubic upsampling (align_corners=False) for even and odd output positions.

    Output 2i samples the input at i - 0.25 (taps i-2..i+1, t = 0.75); output 2i+1 at i + 0.25 (taps i-1..i+2,
    t = 0.25). The Keys kernel with PyTorch's a = -0.75 gives dyadic weights, so they are exact in fp32/fp16.
    """

    def near(t: float) -> float:  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t: float) -> float:  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    even = [far(1.75), near(0.75), near(0.25), far(1.25)]
    return even, even[::-1]


class BicubicUpsample2x(nn.Module):
    """``F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)`` as fixed-weight standard ops.

    Edge-replicate padding (PyTorch clamps the sampled indices), one depthwise 5x5 convolution that computes the four
    output phases of every channel (each phase is a 4x4 tap set inside the 5x5 window), then depth-to-space. Equal to
    PyTorch's bicubic up to fp32 summation order (~1e-6). Exports as Pad(edge) + Conv + DepthToSpace, which ONNX
    Runtime runs far faster than its cubic Resize and which TensorRT and other runtimes without a cubic mode accept.
    """

    def __init__(self, channels: int, a: float = -0.75) -> None:
        super().__init__()
        self.channels = channels
        even, odd = _cubic_x2_taps(a)
        taps = torch.tensor([even + [0.0], [0.0] + odd], dtype=torch.float64)  # phase x 5 over the padded window
        phases = torch.einsum("yi,xj->yxij", taps, taps).reshape(4, 1, 5, 5)  # phase = 2*dy + dx (pixel-shuffle order)
        # A fixed operator, not a learnable parameter: kept out of state_dict so checkpoints stay layout-independent.
        self.register_buffer("weight", phases.repeat(channels, 1, 1, 1).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 2, 2, 2), mode="replicate")
        return F.pixel_shuffle(F.conv2d(x, self.weight, groups=self.channels), 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"
