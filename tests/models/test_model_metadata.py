"""Each model's training recipe and paper claims live in its own file, registered with its config: parametrized over
the registry, so a new model is checked as soon as it registers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from lightseg_edge.models import ModelConfig, get_model_config, list_models
from lightseg_edge.models._registry import _ENTRYPOINTS
from lightseg_edge.train.losses import LOSSES
from lightseg_edge.train.recipes import DEFAULT_RECIPE, recipe_for
from lightseg_edge.types import PaperClaims, Recipe

MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_model_registers_a_recipe_and_claims_with_their_sources(name):
    cfg = get_model_config(name)
    assert isinstance(cfg.recipe, Recipe) and cfg.recipe.source
    assert cfg.recipe.loss in LOSSES and cfg.recipe.optimizer in ("adam", "adamw")
    assert cfg.recipe.epochs > 0 and 0 < cfg.recipe.t_max and cfg.recipe.batch_size > 0
    assert cfg.recipe.group_weights is None or isinstance(cfg.recipe.group_weights, tuple)
    assert isinstance(cfg.claims, PaperClaims) and cfg.claims.source
    assert isinstance(cfg.claims.notes, tuple)
    assert all(isinstance(getattr(cfg.claims, f"{claim}_why"), str) for claim in ("params", "gmacs", "memory_mb"))
    for value in (cfg.recipe, cfg.claims):  # frozen: no run can change another's defaults or figures
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, "source", "")


@pytest.mark.parametrize("name", MODELS)
def test_recipe_and_claims_are_defined_in_the_model_file(name):
    module = sys.modules[_ENTRYPOINTS[name].__module__]
    assert module.__name__.startswith("lightseg_edge.models.")
    assert any(value is get_model_config(name) for value in vars(module).values())


@pytest.mark.parametrize("name", MODELS)
def test_trainer_reads_the_registered_recipe(name):
    assert recipe_for(name) is get_model_config(name).recipe


def test_unknown_model_gets_the_default_recipe():
    assert recipe_for("no_such_model") is DEFAULT_RECIPE
    assert DEFAULT_RECIPE.loss == "bce_dice" and DEFAULT_RECIPE.source


def test_a_config_without_recipe_or_claims_is_refused():
    with pytest.raises(TypeError):
        ModelConfig(name="x", family="x", paper="x", citation="x", claims=PaperClaims(source="x"))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ModelConfig(name="x", family="x", paper="x", citation="x", recipe=Recipe("bce_dice"))  # type: ignore[call-arg]


def test_recipes_module_does_not_import_torch():
    code = "import sys, lightseg_edge.train.recipes; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
