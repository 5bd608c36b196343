"""Per-model configuration: input size, preprocessing, training recipe, the paper's claims, provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

from ..types import PaperClaims, PreprocessConfig, Recipe


@dataclass(frozen=True)
class ModelConfig:
    """Everything the toolkit knows about one registered model, kept in that model's file.

    ``recipe`` (the training defaults, read by ``train.recipes.recipe_for``) and ``claims`` (the paper's efficiency
    figures, their source and what is known about each, checked by ``bench.claims``) are required: a new model states
    both where it is defined.
    """

    name: str
    family: str
    paper: str
    citation: str
    recipe: Recipe
    claims: PaperClaims
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    stride: int = 32  # H and W must be multiples of this
    min_size: int = 0  # and at least this (0: the stride)
    num_classes: int = 1
    origin_url: str = ""
    license: str = ""
    notes: Tuple[str, ...] = ()

    @property
    def input_size(self) -> Tuple[int, int]:
        return self.preprocess.size
