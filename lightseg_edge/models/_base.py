"""The contract every zoo model follows."""

from __future__ import annotations

from typing import ClassVar, FrozenSet, List, Tuple

import torch
from torch import nn

from ..errors import InvalidInputError
from ..types import DeployForm, Runtime
from ._cfg import ModelConfig


class SegModel(nn.Module):
    """``forward(x)`` returns (N, 1, H, W) logits. ``forward_train(x)`` returns (logits, stage outputs) for models
    with deep supervision (an empty list otherwise). No sigmoid anywhere inside."""

    cfg: ModelConfig

    @property
    def name(self) -> str:
        return self.cfg.name

    def check_input(self, x: torch.Tensor) -> None:
        # Skipped while tracing for export: shape checks on symbolic sizes would be baked in as constants.
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if x.dim() != 4 or x.shape[1] != 3:
            raise InvalidInputError(f"{self.name}: expected input (N, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.cfg.stride
        if min(h, w) < self.cfg.min_size:
            raise InvalidInputError(f"{self.name}: input {h}x{w} is below its smallest input {self.cfg.min_size}x{self.cfg.min_size}")
        if h % s or w % s:
            raise InvalidInputError(
                f"{self.name}: input {h}x{w} is not a multiple of {s}; use sizes such as "
                f"{max(s, h // s * s)}x{max(s, w // s * s)} or {(h // s + 1) * s}x{(w // s + 1) * s}"
            )

    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return self(x), []

    #: the deploy forms this model builds besides ``DeployForm.DEFAULT`` (see :meth:`deploy`)
    deploy_forms: ClassVar[FrozenSet[DeployForm]] = frozenset()

    def deploy(self, form: DeployForm = DeployForm.DEFAULT) -> "SegModel":
        """The export form: eval mode, numerically equal to the training form. Models override to rewrite ops, and
        to build a graph tuned for one runtime when ``form`` names one of their ``deploy_forms``."""
        self.check_form(form)
        return self.eval()

    def check_form(self, form: DeployForm) -> DeployForm:
        form = DeployForm(form)
        if form is not DeployForm.DEFAULT and form not in self.deploy_forms:
            raise ValueError(f"{self.name}: no {form.value!r} deploy form (it has: default"
                             f"{''.join(', ' + f.value for f in sorted(self.deploy_forms, key=lambda f: f.value))})")
        return form

    @classmethod
    def form_for(cls, runtime: Runtime) -> DeployForm:
        """The deploy form an artifact for ``runtime`` is built from."""
        try:
            form = DeployForm(Runtime(runtime).value)
        except ValueError:
            return DeployForm.DEFAULT
        return form if form in cls.deploy_forms else DeployForm.DEFAULT
