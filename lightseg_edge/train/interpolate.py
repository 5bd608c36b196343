"""Weight-space interpolation between a fine-tuned run and the weights it was fine-tuned from (WiSE-FT: Wortsman et
al., "Robust fine-tuning of zero-shot models", CVPR 2022): ``(1 - alpha) * start + alpha * tuned``, every float tensor
alike (BatchNorm statistics included), with ``alpha`` chosen on the val split. Fine-tuning on one collection tends to
trade robustness under distribution shift for in-domain accuracy; a mixture of the two endpoints often keeps most of
the gain and some of what was lost. ``alpha = 1`` is the fine-tuned run itself, so the choice can only match or beat
it on val.

The score is val mDice, or (``--select val-shifts``) the mean of val mDice over the unshifted images and every
acquisition shift of ``lightseg_edge.data.shifts``: a fine-tune meant to make a model robust (``--augment
dermoscope``) is then not undone for a few thousandths of in-domain Dice; still val only, never test.

    python -m lightseg_edge.train.ship --model unext_s --run training/unext_s --data DATA --interpolate
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from .._hashing import sha256_file
from ..errors import CheckpointError

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


class Selection(str, Enum):
    VAL = "val"  # val mDice
    VAL_SHIFTS = "val-shifts"  # mean val mDice over the unshifted images and every acquisition shift

    def describe(self) -> str:
        return "val mDice" if self is Selection.VAL else "mean val mDice over the unshifted images and every acquisition shift"


@dataclass(frozen=True)
class AlphaScore:
    alpha: float
    val_mdice: Mapping[str, float]  # shift name ("none": unshifted) -> val mDice

    @property
    def score(self) -> float:
        return statistics.mean(self.val_mdice.values())


@dataclass(frozen=True)
class Interpolation:
    start: str  # the file name the run started from
    start_sha256: str
    scores: Tuple[AlphaScore, ...]  # every alpha tried
    chosen: float
    selection: Selection

    def to_dict(self) -> dict:
        shifted = self.selection is Selection.VAL_SHIFTS
        return {"method": f"WiSE-FT: (1 - alpha) * start + alpha * fine-tuned, every float tensor, alpha chosen on {self.selection.describe()}",
                "start": self.start, "start_sha256": self.start_sha256, "chosen_alpha": self.chosen, "selection": self.selection.value,
                "val_mdice_by_alpha": [{"alpha": s.alpha, "val_mdice": s.val_mdice["none"],
                                        **({"score": s.score, "val_mdice_by_shift": dict(s.val_mdice)} if shifted else {})}
                                       for s in self.scores]}


def check_alphas(alphas: Sequence[float]) -> Tuple[float, ...]:
    alphas = [float(a) for a in alphas]
    if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"--interpolate: expected mixing weights in [0, 1], got {alphas}")
    return tuple(sorted(set(alphas)))


def parse_alphas(text: str) -> Tuple[float, ...]:
    """``--interpolate``'s comma-separated mixing weights."""
    try:
        values = [float(a) for a in text.split(",")]
    except ValueError:
        raise ValueError(f"--interpolate: expected comma-separated numbers in [0, 1], got {text!r}") from None
    return check_alphas(values)


def run_start(model_name: str, config: dict, given: Optional[Path] = None) -> Path:
    """The weights file a fine-tuning run started from (``given``, else the shipped file or the file named in the run's
    config), checked against the sha256 the run recorded."""
    from ..models._weights import pretrained_path

    name, recorded = config.get("init_weights"), config.get("init_sha256")
    if not name or not recorded:
        raise CheckpointError("--interpolate: the run was not fine-tuned (no --init-weights recorded); there is nothing to interpolate from")
    path = given or (pretrained_path(model_name) if name == pretrained_path(model_name).name else Path(name))
    if not path.is_file() or sha256_file(path) != recorded:
        raise CheckpointError(f"--interpolate: the run started from {name} (sha256 {recorded[:16]}...), and {path} is "
                              f"{'missing' if not path.is_file() else 'another file now'}; restore that file or pass it with --interpolate-from")
    return path


def lerp_state(start: Dict, tuned: Dict, alpha: float) -> Dict:
    """``(1 - alpha) * start + alpha * tuned`` for float tensors; integer buffers (BatchNorm's batch counts) from ``tuned``."""
    if set(start) != set(tuned):
        raise CheckpointError(f"--interpolate: the two state dicts differ in {sorted(set(start) ^ set(tuned))[:5]}")
    return {k: start[k].to(v.dtype).lerp(v, alpha) if v.is_floating_point() else v for k, v in tuned.items()}


def choose(model_name: str, start: Path, tuned: Dict, val_loaders: Mapping[str, object], alphas: Sequence[float] = DEFAULT_ALPHAS,
           selection: Selection = Selection.VAL) -> Tuple[Dict, Interpolation]:
    """The mixture with the best score over ``val_loaders`` ({shift name: val loader}, "none" the unshifted one; the
    larger alpha on a tie: the closer to the run that was selected)."""
    from ..models import create_model
    from ..models._weights import read_state_dict
    from .trainer import evaluate_model

    start_state = read_state_dict(start)
    scores = []
    for alpha in check_alphas(alphas):
        model = create_model(model_name)
        model.load_state_dict(lerp_state(start_state, tuned, alpha))
        model.eval()
        scores.append(AlphaScore(alpha, {name: evaluate_model(model, loader)["mdice"] for name, loader in val_loaders.items()}))
        shown = "" if len(val_loaders) == 1 else f"  mean with the {len(val_loaders) - 1} shifts {scores[-1].score:.4f}"
        print(f"interpolate: alpha {alpha:.2f}  val mDice {scores[-1].val_mdice['none']:.4f}{shown}", flush=True)
    chosen = max(scores, key=lambda s: (s.score, s.alpha)).alpha
    record = Interpolation(start.name, sha256_file(start), tuple(scores), chosen, Selection(selection))
    return lerp_state(start_state, tuned, chosen), record
