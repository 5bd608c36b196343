"""Per-model training defaults, taken from each paper's released training script (each recipe names its source).

Each model's recipe lives in its own file in ``lightseg_edge.models``, registered with its ``ModelConfig``
(``get_model_config(name).recipe``); this module reads it from the registry. Importing it loads no torch: the
registry (which builds the models) is imported when ``recipe_for`` is called.
"""

from __future__ import annotations

from ..errors import UnknownModelError
from ..types import Recipe

__all__ = ["DEFAULT_RECIPE", "Recipe", "recipe_for"]

# For a name the registry does not know: the trainer resolves its defaults before it builds the model, which then
# reports the unknown name with the registry's own message.
DEFAULT_RECIPE = Recipe("bce_dice", source="default: BCE + Dice, AdamW")


def recipe_for(model: str) -> Recipe:
    from ..models import get_model_config

    try:
        return get_model_config(model).recipe
    except UnknownModelError:
        return DEFAULT_RECIPE
