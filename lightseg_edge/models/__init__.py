"""The model zoo. Importing this package registers every model family (one self-contained file each)."""

from . import ucmnet  # noqa: F401  (registers)
from . import lmsaunet  # noqa: F401  (registers)
from . import egeunet, malunet, unet, unext  # noqa: F401  (registers)
from ._base import SegModel
from ._cfg import ModelConfig
from ._registry import create_model, get_model_config, list_models, register_model

__all__ = ["create_model", "list_models", "get_model_config", "register_model", "ModelConfig", "SegModel"]
