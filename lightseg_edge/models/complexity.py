"""Parameters and MACs of a model at a given input size.

MACs come from PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2). It counts the matrix work:
convolutions (including depthwise and transposed), linear layers / matmuls and attention kernels, without biases.
It counts zero for normalisations, activations, pooling, interpolation and element-wise ops, which is close to
what thop (the papers' tool) counts, except that thop also adds 2-4 MACs per element for LayerNorm/BatchNorm/
InstanceNorm modules. So this figure is a lower bound of the papers' "GFLOPs" (which are thop MACs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch


@dataclass(frozen=True)
class Complexity:
    model: str
    input_size: Tuple[int, int]
    params: int  # every parameter of create_model(name) (training form)
    deploy_params: int  # parameters that the deployed forward actually uses
    macs: int  # deployed (eval) forward, batch 1
    paper_params: Optional[int] = None
    paper_gmacs: Optional[float] = None

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_macs(model: torch.nn.Module, input_size: Tuple[int, int] = (256, 256)) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def used_parameters(model: torch.nn.Module, input_size: Tuple[int, int] = (256, 256)) -> int:
    """Parameters that receive a gradient from the eval-mode forward: the deployed single-output form."""
    model.zero_grad(set_to_none=True)
    model(torch.rand(1, 3, *input_size)).float().mean().backward()
    n = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return n


def complexity(name: str, input_size: Optional[Tuple[int, int]] = None) -> Complexity:
    from ._registry import create_model, get_model_config

    cfg = get_model_config(name)
    size = tuple(input_size or cfg.input_size)
    model = create_model(name).eval()
    params = sum(p.numel() for p in model.parameters())  # before deploy(): some deploy forms fold BatchNorm in place
    deploy_params = used_parameters(model, size)
    macs = count_macs(model.deploy(), size)
    return Complexity(name, size, params, deploy_params, macs, cfg.claims.params, cfg.claims.gmacs)
