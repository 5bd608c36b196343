"""LMSAUnet (Li, Hu, Wang et al., Sci Rep 2025), re-implemented from the paper and its released code.

Follows the released code (hubosheng123/skin-disease@b293161, class ``SkinUNet``), which is the TinyU-Net macro
architecture with ECDF blocks: max-pool encoder, bicubic x2 decoder, no bottleneck and no residuals. Where paper and
code disagree the code wins (attention after the expand conv, ECA kernel rounded up to 5, depthwise weights shared by
the two channel halves), because the released weights assume it.

Two settings of the ECDF compression N are registered:

- ``lmsaunet``: N = 8, the paper text's default and the released checkpoints' setting, 476,738 parameters;
- ``lmsaunet_n32``: N = 32, the released source default, 387,878 parameters: the paper's "0.39 M".

The released head gives two logits (background, lesion); ``forward`` returns their difference, a single logit that is
exactly equivalent for thresholding, probabilities and the released cross-entropy loss.

``deploy()`` returns an inference copy rewritten for export, equal to this form up to fp32 round-off:

- BatchNorm folded into the convolutions, and the two-logit head folded into a one-logit conv;
- the squeeze conv's output channels reordered (even then odd), so the released stride-2 channel slices disappear and
  both halves run through one depthwise conv with the shared weights repeated; the expand conv's input channels are
  reordered to match;
- in each decoder the squeeze 1x1 conv is moved in front of the bicubic upsampling (a channel-wise linear map commutes
  with it), so only Cout/N channels are upsampled instead of 128..512, and the upsampling itself is
  ``BicubicUpsample2x`` (Pad + depthwise Conv + DepthToSpace) instead of a cubic ``Resize``, which ONNX Runtime's CPU
  kernel runs about 17x slower than PyTorch and many runtimes lack;
- the spatial gate's channel mean as a (1 x C) MatMul and its channel max as a tree of elementwise Max, both much
  cheaper in ONNX Runtime than ReduceMean/ReduceMax over the channel axis. OpenVINO and LiteRT are the other way
  round (the MatMul/Max form runs about twice as slow there), so ``deploy(DeployForm.OPENVINO)`` and
  ``deploy(DeployForm.LITERT)`` keep plain ReduceMean/ReduceMax (and so does the Core ML form).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..types import DeployForm, PaperClaims, PreprocessConfig, Recipe
from ._base import SegModel
from ._cfg import ModelConfig
from ._layers import REDUCTION_FORMS, BicubicUpsample2x
from ._registry import register_model

__all__ = ["ECDF", "DualAttention", "LMSAUnet"]

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.03


class _ConvBN(nn.Module):
    """Conv (no bias, 'same' padding) -> BatchNorm (eps 1e-3, momentum 0.03) -> optional exact GELU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, 1, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the conv with the eval-mode BatchNorm folded in."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


class DualAttention(nn.Module):
    """ECA channel gate + CBAM-style spatial gate, fused as ``y * (alpha * w_c + beta * w_s)``."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, spatial_kernel: int = 7) -> None:
        super().__init__()
        k = int(math.log2(channels) / gamma + b)  # the released rounding: up to odd, at least 3 (5 at every stage)
        k = max(k + 1 if k % 2 == 0 else k, 3)
        self.eca = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)
        # Unconstrained scalars, no normalisation, as released (trained values range about 0.24..1.59).
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(y, 1).squeeze(-1).transpose(1, 2)  # (B, 1, C): channels as a sequence
        w_c = torch.sigmoid(self.eca(pooled)).transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)
        stats = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)  # [mean, max], in that order
        w_s = torch.sigmoid(self.spatial(stats))  # (B, 1, H, W)
        return y * (self.alpha * w_c + self.beta * w_s)


class ECDF(nn.Module):
    """Squeeze 1x1 -> interleaved split -> weight-shared depthwise cascades -> concat -> expand 1x1 -> attention.

    With ``mid = Cout / N`` and ``half = mid / 2``, the (N - 2) / 2 depthwise 3x3 units (BN, no activation) are
    applied as a cascade to the even channels and again, with the same weights, to the odd channels; the N pieces are
    concatenated as ``[a, a1..aK, b, b1..bK]`` (Cout / 2 channels). The released residual (only when Cin == Cout)
    never occurs in this network and is left out.
    """

    #: Run each cascade unit on both halves in one depthwise convolution with the batch folded into the channels
    #: (``_depthwise_pair``) while a half has fewer than this many channels. The same function, gradients and
    #: BatchNorm statistics; 0 runs one convolution per half, as released.
    pair_below = 8

    def __init__(self, c_in: int, c_out: int, n: int) -> None:
        super().__init__()
        if n < 2 or n % 2 or c_out % (2 * n):
            raise ValueError(f"ECDF: N must be even and >= 2 with Cout divisible by 2N; got N={n}, Cout={c_out}")
        self.c_in, self.c_out, self.n = c_in, c_out, n
        mid, half = c_out // n, c_out // (2 * n)
        self.squeeze = _ConvBN(c_in, mid, 1)
        self.cascade = nn.ModuleList(_ConvBN(half, half, 3, groups=half, act=False) for _ in range((n - 2) // 2))
        self.expand = _ConvBN(c_out // 2, c_out, 1)
        self.attn = DualAttention(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.squeeze(x))

    def tail(self, y: torch.Tensor) -> torch.Tensor:
        """Everything after the squeeze: the cascades, the expand conv and the attention."""
        a, b = [y[:, 0::2]], [y[:, 1::2]]
        for dw in self.cascade:  # BN runs (and in training updates its statistics) once per half, as released
            if a[-1].shape[1] < self.pair_below:
                pair = _depthwise_pair(dw, a[-1], b[-1])
            else:
                pair = dw(a[-1]), dw(b[-1])
            a.append(pair[0])
            b.append(pair[1])
        return self.attn(self.expand(torch.cat(a + b, 1)))


def _depthwise_pair(unit: _ConvBN, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``unit(a), unit(b)`` with one convolution: the halves stacked on the batch axis and folded into the channels,
    so the shared kernel runs as a depthwise convolution over batch x channels (oneDNN's depthwise kernels are many
    times faster than its convolution of a batch of 1- to 4-channel maps, backward above all:
    ``benchmarks/train_speed.py``, variant ``unpaired``). BatchNorm then runs on each half, as released."""
    n, c, h, w = a.shape
    x = torch.cat([a, b]).reshape(1, 2 * n * c, h, w)  # reshape: a channels_last batch is not a view of this shape
    out = F.conv2d(x, unit.conv.weight.repeat(2 * n, 1, 1, 1), None, 1, unit.conv.padding, 1, 2 * n * c).reshape(2 * n, c, h, w)
    return unit.act(unit.bn(out[:n])), unit.act(unit.bn(out[n:]))


class _DecoderStage(nn.Module):
    """Bicubic x2 of the deeper map, concat [upsampled, skip] (in that order), ECDF.

    With ``squeeze_first`` (the default) the same function runs in a cheaper order: the ECDF's first layer is a
    1x1 convolution, which commutes with the per-channel bicubic upsampling, so the deeper map is squeezed to
    Cout / N channels before it is upsampled and the concatenation is never built
    (``W [up(low); skip] = up(W_low low) + W_skip skip``, equal up to fp32 round-off, gradients included; same
    Parameters, same state dict). A 256x256 training step on a CPU is much cheaper that way
    (``benchmarks/train_speed.py``, variant ``fp32@256 literal``). ``squeeze_first = False`` is the released
    code's order."""

    squeeze_first = True

    def __init__(self, c_up: int, c_skip: int, c_out: int, n: int) -> None:
        super().__init__()
        self.c_up = c_up
        self.block = ECDF(c_up + c_skip, c_out, n)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if not self.squeeze_first:
            up = F.interpolate(low, scale_factor=2.0, mode="bicubic", align_corners=False)
            return self.block(torch.cat([up, skip], 1))
        squeeze = self.block.squeeze
        w = squeeze.conv.weight  # (Cout / N, c_up + c_skip, 1, 1), no bias: BatchNorm follows
        low = F.interpolate(F.conv2d(low, w[:, : self.c_up]), scale_factor=2.0, mode="bicubic", align_corners=False)
        return self.block.tail(squeeze.act(squeeze.bn(low + F.conv2d(skip, w[:, self.c_up :]))))


class _LogitDiffHead(nn.Module):
    """The released 2-logit 1x1 head (with bias); returns lesion minus background."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out[:, 1:2] - out[:, 0:1]


# --- deploy form -------------------------------------------------------------------------------------------------


def _frozen_conv(weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1) -> nn.Conv2d:
    c_out, c_in_g, kh, kw = weight.shape
    conv = nn.Conv2d(c_in_g * groups, c_out, (kh, kw), 1, (kh // 2, kw // 2), groups=groups, bias=bias is not None)
    conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return conv


def _channel_max(y: torch.Tensor, channels: int) -> torch.Tensor:
    """``y.amax(1, keepdim=True)`` as a tree of elementwise maxima (bit-identical). ONNX Runtime's CPU ReduceMax over
    the channel axis of an NCHW map is about twice as slow as Split + Max."""
    c = channels  # a Python int, so tracing records a fixed tree
    while c > 1:
        if c % 2:
            lo, hi, rest = y.split([c // 2, c // 2, 1], 1)
            y = torch.maximum(lo, hi)
            y = torch.cat([torch.maximum(y[:, :1], rest), y[:, 1:]], 1)
        else:
            lo, hi = y.split([c // 2, c // 2], 1)  # explicit sizes: a constant Split even with dynamic axes
            y = torch.maximum(lo, hi)
        c //= 2
    return y


class _DeployDualAttention(nn.Module):
    """DualAttention with the channel mean as a (1 x C) matrix product and the channel max as a max tree: the same
    values (the mean up to summation order) at a fraction of ONNX Runtime's channel-axis ReduceMean/ReduceMax cost.
    With ``reduce`` (the OpenVINO, LiteRT and Core ML forms) the plain channel mean and max, which OpenVINO and LiteRT
    run faster."""

    def __init__(self, src: DualAttention, channels: int, reduce: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.reduce = reduce
        self.eca = copy.deepcopy(src.eca)
        self.spatial = copy.deepcopy(src.spatial)
        self.alpha = nn.Parameter(src.alpha.detach().clone(), requires_grad=False)
        self.beta = nn.Parameter(src.beta.detach().clone(), requires_grad=False)
        for p in (*self.eca.parameters(), *self.spatial.parameters()):
            p.requires_grad_(False)
        self.register_buffer("mean_weight", torch.full((1, channels), 1.0 / channels), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(y, 1).squeeze(-1).transpose(1, 2)
        w_c = torch.sigmoid(self.eca(pooled)).transpose(1, 2).unsqueeze(-1)
        if self.reduce:
            mean, peak = y.mean(1, keepdim=True), y.amax(1, keepdim=True)
        else:
            mean = torch.matmul(self.mean_weight, y.flatten(2)).view(y.shape[0], 1, y.shape[2], y.shape[3])
            peak = _channel_max(y, self.channels)
        w_s = torch.sigmoid(self.spatial(torch.cat([mean, peak], 1)))
        return y * (self.alpha * w_c + self.beta * w_s)


class _DeployECDF(nn.Module):
    """ECDF with BN folded, the channel split removed and (for decoders) the squeeze moved before the upsampling."""

    def __init__(self, src: ECDF, c_up: int = 0, reduce: bool = False) -> None:
        super().__init__()
        mid, half, k = src.c_out // src.n, src.c_out // (2 * src.n), (src.n - 2) // 2
        even_odd = torch.cat([torch.arange(0, mid, 2), torch.arange(1, mid, 2)])
        w, b = src.squeeze.fused()
        w, b = w[even_odd], b[even_odd]  # squeeze output becomes [a; b], contiguous halves
        self.c_up = c_up
        if c_up:
            # conv1x1(cat[up(low), skip]) == up(conv1x1_low(low)) + conv1x1_skip(skip): the bias rides on the skip.
            self.up_proj = _frozen_conv(w[:, :c_up], None)
            self.upsample = BicubicUpsample2x(mid)
            self.squeeze = _frozen_conv(w[:, c_up:], b)
        else:
            self.squeeze = _frozen_conv(w, b)
        # One depthwise conv over [a_j; b_j] with the shared weights repeated: the same arithmetic per channel.
        self.cascade = nn.ModuleList()
        for dw in src.cascade:
            dw_w, dw_b = dw.fused()
            self.cascade.append(_frozen_conv(dw_w.repeat(2, 1, 1, 1), dw_b.repeat(2), groups=mid))
        # The pieces now arrive as [a0, b0, a1, b1, ...]; reorder the expand conv's inputs to match the original
        # [a0, a1, .., aK, b0, b1, .., bK].
        old_index = [i for j in range(k + 1) for i in [*range(j * half, (j + 1) * half), *range((k + 1 + j) * half, (k + 2 + j) * half)]]
        ew, eb = src.expand.fused()
        self.expand = _frozen_conv(ew[:, old_index], eb)
        self.attn = _DeployDualAttention(src.attn, src.c_out, reduce)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.c_up:
            y = self.upsample(self.up_proj(x)) + self.squeeze(skip)
        else:
            y = self.squeeze(x)
        y = F.gelu(y)
        pieces = [y]
        for dw in self.cascade:
            y = dw(y)
            pieces.append(y)
        return self.attn(F.gelu(self.expand(torch.cat(pieces, 1))))


class _DeployDecoderStage(nn.Module):
    def __init__(self, src: _DecoderStage, reduce: bool = False) -> None:
        super().__init__()
        self.block = _DeployECDF(src.block, c_up=src.c_up, reduce=reduce)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(low, skip)


class _DeployEncoderStage(nn.Module):
    def __init__(self, src: ECDF, reduce: bool = False) -> None:
        super().__init__()
        self.block = _DeployECDF(src, reduce=reduce)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


# --- the network ---------------------------------------------------------------------------------------------------


class LMSAUnet(SegModel):
    """Four ECDF encoder stages (max-pool 2x2 after each), four bicubic-upsampling ECDF decoder stages, 1x1 head."""

    def __init__(self, cfg: ModelConfig, n: int = 8, widths: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.cfg = cfg
        self.n = n
        ins = [3, *widths[:-1]]
        self.encoders = nn.ModuleList(ECDF(c_in, c_out, n) for c_in, c_out in zip(ins, widths))
        # decoders[i] produces level i (widths[i]); the deepest takes the pooled encoder-4 map, the others the level below
        ups = [*widths[1:], widths[-1]]
        self.decoders = nn.ModuleList(_DecoderStage(u, c, c, n) for u, c in zip(ups, widths))
        self.head: nn.Module = _LogitDiffHead(widths[0])
        self.deployed = False
        self.form = DeployForm.DEFAULT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips: list[torch.Tensor] = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        for dec in reversed(self.decoders):  # no bottleneck: the pooled deepest map goes straight back up
            x = dec(x, skips.pop())
        return self.head(x)

    deploy_forms = REDUCTION_FORMS

    def deploy(self, form: DeployForm = DeployForm.DEFAULT) -> LMSAUnet:
        """An eval-mode copy for export (BN folded, no channel slices, exact conv-based bicubic); see the module doc.

        The training-form model is left untouched; the copy's parameters are frozen derived values.
        """
        form = self.check_form(form)
        if self.deployed:
            if form is not self.form:
                raise ValueError(f"{self.name}: already deployed in the {self.form.value!r} form; deploy the training form")
            return self.eval()
        reduce = form in REDUCTION_FORMS
        model = copy.deepcopy(self)
        with torch.no_grad():
            model.encoders = nn.ModuleList(_DeployEncoderStage(e, reduce) for e in self.encoders)
            model.decoders = nn.ModuleList(_DeployDecoderStage(d, reduce) for d in self.decoders)
            hw, hb = self.head.conv.weight, self.head.conv.bias
            model.head = _frozen_conv(hw[1:2] - hw[0:1], hb[1:2] - hb[0:1])
        model.deployed, model.form = True, form
        return model.eval()


# The released code's loss and peak LR, but cosine annealing (the paper's schedule) instead of the code's OneCycle,
# and this project's default weight decay (the code uses 1e-5): docs/models.md. The same for both N.
_RECIPE = Recipe(
    "bce_iou",
    epochs=200,
    t_max=200,
    source="LMSAUnet: 0.25 BCE + 0.75 IoU; AdamW at the released code's peak lr 1e-3; cosine schedule; weight decay 1e-2 (code: 1e-5)",
)


def _cfg(name: str, n: int, params: int, params_why: str) -> ModelConfig:
    return ModelConfig(
        name=name,
        family="lmsaunet",
        paper="Lightweight Unet with depthwise separable convolution for skin lesion segmentation",
        citation=(
            "Li, Hu, Wang et al. Lightweight Unet with depthwise separable convolution for skin lesion segmentation. "
            "Scientific Reports 15, 34327 (2025)"
        ),
        # Released pipeline: RGB, resize, ToTensor, ImageNet mean/std. Size: the paper's 256 (the code defaults to 224).
        preprocess=PreprocessConfig(size=(256, 256), mode="meanstd"),
        stride=16,
        recipe=_RECIPE,
        claims=PaperClaims(
            params=390_000,
            gmacs=None,
            memory_mb=None,
            released_code_params=params,
            isic2018_dice=0.8792,  # dataset-level (micro) Dice, its released metric code; one figure for both N
            source="LMSAUnet paper text ('0.39 M' parameters; its tables were not available)",
            notes=(
                "the paper's 0.39 M is exactly the N = 32 model (387,878); its stated default N = 8 has 476,738",
                f"released_code_params is hubosheng123/skin-disease@b293161 SkinUNet with N = {n}",
                (
                    "no GMACs or memory figure could be read (tables missing from the available text); the repo's own "
                    "counter is thop MACs at 224x224"
                ),
            ),
            params_why=params_why,
            gmacs_why="its tables were not available",
        ),
        origin_url="https://github.com/hubosheng123/skin-disease",
        license="see upstream repository",
        notes=(
            f"ECDF compression N = {n}",
            "single logit = released lesion logit minus background logit",
        ),
    )


_CFG_N8 = _cfg(
    "lmsaunet", 8, 476_738,
    params_why=(
        "the paper's 0.39 M is exactly the N = 32 model (387,878, registered as lmsaunet_n32); the paper's stated default N = 8, "
        "which the released checkpoints use, has 476,738 [counted here]"
    ),
)
_CFG_N32 = _cfg(
    "lmsaunet_n32", 32, 387_878,
    params_why="N = 32 is the released code's default and the only setting that gives the paper's 0.39 M [counted here]",
)


@register_model(_CFG_N8)
def lmsaunet(**kwargs) -> LMSAUnet:
    return LMSAUnet(_CFG_N8, n=8, **kwargs)


@register_model(_CFG_N32)
def lmsaunet_n32(**kwargs) -> LMSAUnet:
    return LMSAUnet(_CFG_N32, n=32, **kwargs)
