"""An exponential moving average of the weights (``lightseg-train --ema DECAY``), validated beside them every epoch.

Built on ``torch.optim.swa_utils.AveragedModel`` with buffers averaged too (BatchNorm's running statistics follow the
averaged weights), and the decay warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average
forgets where a run started (random or fine-tuned weights) instead of dragging it along for thousands of steps.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..errors import CheckpointError, LightsegError


def check_decay(decay: float) -> float:
    if not 0.0 < decay < 1.0:  # nan fails too
        raise LightsegError(f"--ema {decay!r}: expected a decay between 0 and 1 exclusive (e.g. 0.998)")
    return decay


def _warmed_up(decay: float):
    @torch.no_grad()
    def update(averaged: List[torch.Tensor], current: List[torch.Tensor], n: torch.Tensor) -> None:
        weight = 1.0 - min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the current count
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = check_decay(decay)
        self._avg = AveragedModel(model, multi_avg_fn=_warmed_up(decay), use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged weights as a model of the trained one's class."""
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged)

    def update(self, model: nn.Module) -> None:
        """After each optimiser step; the first call copies the weights."""
        self._avg.update_parameters(model)

    def state(self) -> Dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load(self, state: Dict[str, Any], weights: Dict[str, torch.Tensor]) -> None:
        """Restore from ``state()``, or from its compacted form (``delta``: the difference from ``weights``, the
        trained weights saved beside it, in bf16; see ``checkpoint.compact``)."""
        try:
            tensors = state["model"]
            if state.get("delta"):
                tensors = {k: weights[k] + v.to(weights[k].dtype) if v.is_floating_point() else v for k, v in tensors.items()}
            self.module.load_state_dict(tensors)
            self._avg.n_averaged.fill_(int(state["updates"]))
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"the checkpoint's weight average does not fit the model ({type(exc).__name__}: {str(exc)[:160]})") from None
