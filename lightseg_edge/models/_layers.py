"""Blocks shared by two or more model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..types import DeployForm

# The forms that take channel statistics as plain reductions over the channel axis; ONNX Runtime's default form takes
# them as MatMuls (ChannelLayerNorm2d, LMSAUnet's spatial gate). OpenVINO and LiteRT run the reductions faster; Core ML
# gets them because coremltools cannot convert the traced reshapes around the MatMuls (its speed is not measured here).
REDUCTION_FORMS = frozenset({DeployForm.OPENVINO, DeployForm.LITERT, DeployForm.COREML})


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (what a token-wise LayerNorm does, without leaving NCHW)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelLayerNorm2d(nn.Module):
    """``LayerNorm2d`` for inference, without the two permutes: the statistics are taken over the channel axis of the
    NCHW tensor, by one of two graphs that compute the same values (biased variance, ``eps`` inside the square root,
    per-channel affine; equal to ``LayerNorm2d`` up to fp32 round-off):

    - ``reduce=False`` (the ONNX Runtime and TensorRT form): on the (N, C, H*W) view, each channel mean is a (1 x C)
      MatMul; ONNX Runtime's channel-axis ReduceMean is slow on every shape these models have, and its
      Transpose -> LayerNormalization -> Transpose is slow on large maps (``benchmarks/cpu_fast_path.py``).
    - ``reduce=True`` (the OpenVINO, LiteRT and Core ML forms): ReduceMean over axis 1, which OpenVINO and LiteRT run
      faster than the MatMul (LiteRT's NHWC layout makes it a reduction over the innermost axis).

    Neither form has a LayerNormalization node, which TensorRT 8.5's ONNX parser does not import.
    ``weight`` and ``bias`` are the source module's own Parameters (shared, not copied), under the same names, so a
    model whose norms were swapped keeps its state dict and loads the same checkpoints.
    """

    def __init__(self, src: LayerNorm2d, reduce: bool = False) -> None:
        super().__init__()
        if len(src.normalized_shape) != 1:
            raise ValueError(f"ChannelLayerNorm2d: expected a LayerNorm2d over channels, got normalized_shape {src.normalized_shape}")
        self.channels = src.normalized_shape[0]
        self.eps = src.eps
        self.reduce = reduce
        self.weight = src.weight
        self.bias = src.bias
        like = {} if src.weight is None else {"device": src.weight.device, "dtype": src.weight.dtype}
        self.register_buffer("mean_weight", torch.full((1, self.channels), 1.0 / self.channels, **like), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduce:
            d = x - x.mean(1, keepdim=True)
            # The reciprocal is taken on the (N, 1, H, W) statistics, so only Muls run over the full tensor.
            return self._affine(d * torch.rsqrt((d * d).mean(1, keepdim=True) + self.eps), (-1, 1, 1))
        # -1 for the batch: a static-batch export reshaped to a dynamic batch later (OpenVINO's reshape) still runs.
        _, c, h, w = x.shape
        t = x.reshape(-1, c, h * w)
        d = t - self.mean_weight @ t
        return self._affine(d * torch.rsqrt(self.mean_weight @ (d * d) + self.eps), (-1, 1)).reshape(-1, c, h, w)

    def _affine(self, y: torch.Tensor, shape: tuple) -> torch.Tensor:
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}, reduce={self.reduce}"


def channel_layer_norms(module: nn.Module, reduce: bool = False) -> int:
    """Replace every ``LayerNorm2d`` inside ``module`` by its ``ChannelLayerNorm2d`` (in place, Parameters shared) and
    give every ``ChannelLayerNorm2d`` the graph ``reduce`` names; returns how many were replaced. State dict keys and
    values are unchanged."""
    found = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
             if isinstance(child, LayerNorm2d)]
    for parent, name, child in found:
        setattr(parent, name, ChannelLayerNorm2d(child))
    for norm in module.modules():  # the new ones and any left by an earlier deploy() in another form
        if isinstance(norm, ChannelLayerNorm2d):
            norm.reduce = reduce
    return len(found)


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


class _PhaseUpsample2x(nn.Module):
    """A separable x2 upsampling (align_corners=False, edges clamped as PyTorch clamps the sampled indices) as fixed
    -weight standard ops: edge-replicate Pad, one depthwise KxK convolution computing the four output phases of every
    channel, then depth-to-space. Exports as Pad(edge) + Conv + DepthToSpace."""

    def __init__(self, channels: int, even: list[float], odd: list[float]) -> None:
        super().__init__()
        self.channels = channels
        self.pad = len(even) // 2
        taps = torch.tensor([even, odd], dtype=torch.float64)  # phase x K over the padded window
        k = taps.shape[1]
        phases = torch.einsum("yi,xj->yxij", taps, taps).reshape(4, 1, k, k)  # phase = 2*dy + dx (pixel-shuffle order)
        # A fixed operator, not a learnable parameter: kept out of state_dict so checkpoints stay layout-independent.
        self.register_buffer("weight", phases.repeat(channels, 1, 1, 1).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        x = F.pad(x, (p, p, p, p), mode="replicate")
        return F.pixel_shuffle(F.conv2d(x, self.weight, groups=self.channels), 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class BicubicUpsample2x(_PhaseUpsample2x):
    """``F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)``: a depthwise 5x5 convolution whose
    four phases are 4x4 tap sets inside the window. Equal to PyTorch's bicubic up to fp32 summation order (~1e-6);
    ONNX Runtime runs it far faster than its cubic Resize, and TensorRT and other runtimes without a cubic mode accept it.
    """

    def __init__(self, channels: int, a: float = -0.75) -> None:
        even, odd = _cubic_x2_taps(a)
        super().__init__(channels, even + [0.0], [0.0] + odd)


class BilinearUpsample2x(_PhaseUpsample2x):
    """``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)``: output 2i samples the input at
    i - 0.25 (weights 1/4, 3/4 on i-1, i), output 2i+1 at i + 0.25 (3/4, 1/4 on i, i+1), as a depthwise 3x3
    convolution. Exact dyadic weights; equal to PyTorch's bilinear up to fp32 summation order. OpenVINO runs it faster
    than its linear Interpolate (ONNX Runtime does not: its Resize stays the better choice there)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, [0.25, 0.75, 0.0], [0.0, 0.75, 0.25])


class Bilinear2x(nn.Module):
    """``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)`` as a module, so a deploy form can
    swap it for :class:`BilinearUpsample2x` (no parameters: state dicts are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
