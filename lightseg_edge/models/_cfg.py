"""Per-model configuration: input size, preprocessing, the paper's claims, provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

from ..types import PaperClaims, PreprocessConfig


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str
    paper: str
    citation: str
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    stride: int = 32  # H and W must be multiples of this
    min_size: int = 0  # and at least this (0: the stride)
    num_classes: int = 1
    claims: PaperClaims = field(default_factory=PaperClaims)
    origin_url: str = ""
    license: str = ""
    notes: Tuple[str, ...] = ()

    @property
    def input_size(self) -> Tuple[int, int]:
        return self.preprocess.size
