"""Per-model training defaults, taken from each paper's released training script (each recipe names its source)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Recipe:
    loss: str
    group_weights: Optional[Tuple[float, ...]] = None  # deep supervision weights, deepest stage first
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 8
    epochs: int = 300
    t_max: int = 50  # CosineAnnealingLR period in epochs (capped at the run's epochs)
    min_lr: float = 1e-5
    source: str = ""


_DS = (0.1, 0.2, 0.3, 0.4, 0.5)
# The released code's loss and peak LR, but cosine annealing (the paper's schedule) instead of the code's OneCycle,
# and this project's default weight decay (the code uses 1e-5): docs/models.md.
_LMSA = "LMSAUnet: 0.25 BCE + 0.75 IoU; AdamW at the released code's peak lr 1e-3; cosine schedule; weight decay 1e-2 (code: 1e-5)"
RECIPES = {
    "ucmnet": Recipe("bce_squared_dice", _DS, source="chunyuyuan/UCM-Net@de98f42 train_newdata.py, losses.py GT_BceDiceLoss_new1"),
    "egeunet": Recipe("bce_dice", _DS, source="JCruan519/EGE-UNet configs/config_setting.py (GT_BceDiceLoss)"),
    "malunet": Recipe("bce_dice", source="JCruan519/MALUNet configs/config_setting.py (BceDiceLoss)"),
    "unext_s": Recipe("unext_bce_dice", optimizer="adam", weight_decay=1e-4, batch_size=16, epochs=100, t_max=100, source="jeya-maria-jose/UNeXt-pytorch train.py"),
    "lmsaunet": Recipe("bce_iou", epochs=200, t_max=200, source=_LMSA),
    "lmsaunet_n32": Recipe("bce_iou", epochs=200, t_max=200, source=_LMSA),
    "unet": Recipe("bce_dice", source="BCE + Dice, AdamW (the UCM-Net comparison setting)"),
}


def recipe_for(model: str) -> Recipe:
    return RECIPES.get(model, Recipe("bce_dice", source="default: BCE + Dice, AdamW"))
