"""Which layers keep a higher precision (``--int8-keep``, ``--fp16-keep``), chosen by what they cost in mask Dice.

Element-wise tolerances are the wrong test for a segmentation network (an FP16 UCM-Net can differ by 1e-2 in its
logits and still draw the same masks), so every decision here is made on masks of real held-out images: a *trial*
builds the reduced-precision variant with some layers kept in the higher precision and scores it against the FP32
masks (``accuracy.HeldoutScorer.measure``), giving the mask agreement and the mDice change.

- ``none``: nothing is kept (beyond what the converter itself keeps).
- ``names``: exactly these layers (comma-separated names as the ranking prints them) are kept.
- ``N``: the layers are ranked and the N costliest are kept.
- ``auto``: the variant with nothing kept is tried first; if it misses the gate (mDice within ``max_dice_drop`` of
  FP32 and mask agreement at least ``min_agreement``), the layers are ranked and kept one by one, costliest first,
  until the gate is met. That is the greedy revert of NNCF's accuracy-aware quantization, with Dice as the metric.
  It stops at a quarter of the candidates (a model kept mostly in the higher precision is not what was asked for);
  if the gate is still missed, the best variant tried is kept, with a warning and ``met: false`` in the manifest.

The ranking is leave-one-out: each layer alone is kept in the higher precision while every other layer is reduced,
and the layers whose return to the higher precision restores the most agreement come first. The decision, the
ranking and the trials' figures go into the manifest, so a kept layer can be traced to the number that chose it.

The trials run on held-out images disjoint from the ones the export reports its accuracy on (``images.selection_set``),
so the reported figure is not the one that was optimised.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Callable, List, Optional, Sequence, Tuple

from ..errors import ExportConfigError

log = logging.getLogger("lightseg_edge.export")

DEFAULT_MAX_DICE_DROP = 0.002
DEFAULT_MIN_AGREEMENT = 0.99
MAX_KEPT_FRACTION = 0.25  # auto keeps at most this share of the candidates: beyond it the variant is hardly reduced
RANKING_SHOWN = 8  # layers the step's log line names; the manifest lists all


class KeepMode(str, Enum):
    NONE = "none"
    AUTO = "auto"
    COUNT = "count"
    NAMES = "names"


@dataclass(frozen=True)
class KeepSpec:
    """A parsed ``--int8-keep`` / ``--fp16-keep`` value."""

    mode: KeepMode = KeepMode.NONE
    count: int = 0
    names: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, flag: str) -> "KeepSpec":
        value = str(text).strip()
        if value in (KeepMode.NONE.value, KeepMode.AUTO.value):
            return cls(KeepMode(value))
        if value.isdigit():
            return cls(KeepMode.COUNT, count=int(value)) if int(value) > 0 else cls()
        names = tuple(n.strip() for n in value.split(",") if n.strip())
        if not names:
            raise ExportConfigError(f"{flag} {text!r}: expected auto, none, a number of layers or comma-separated layer names")
        return cls(KeepMode.NAMES, names=names)

    def __str__(self) -> str:
        return {KeepMode.COUNT: str(self.count), KeepMode.NAMES: ",".join(self.names)}.get(self.mode, self.mode.value)

    @property
    def needs_trials(self) -> bool:
        return self.mode in (KeepMode.AUTO, KeepMode.COUNT)


@dataclass(frozen=True)
class KeepGate:
    """What ``auto`` must reach on the selection images."""

    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    min_agreement: float = DEFAULT_MIN_AGREEMENT

    def met(self, trial: "Trial") -> bool:
        return trial.delta_mdice >= -self.max_dice_drop and trial.agreement >= self.min_agreement


@dataclass(frozen=True)
class Trial:
    """One variant tried: the layers kept and its figures on the selection images."""

    kept: Tuple[str, ...]
    agreement: float  # mask Dice against the FP32 masks
    delta_mdice: float  # its mDice minus FP32's (against the ground truth)

    @classmethod
    def of(cls, kept: Sequence[str], acc) -> "Trial":
        return cls(tuple(kept), round(float(acc.agreement_dice), 6), round(float(acc.delta_mdice), 6))


@dataclass(frozen=True)
class KeepDecision:
    spec: str
    gate: KeepGate
    candidates: int  # layers that could be kept
    kept: Tuple[str, ...]
    met: Optional[bool]  # whether the chosen variant meets the gate (None: not measured)
    ranking: Tuple[Trial, ...] = ()  # leave-one-out, costliest layer first
    trials: Tuple[Trial, ...] = ()  # the variants tried, in order (the first: nothing kept)
    images: int = 0  # selection images
    selection: str = ""  # where they come from

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kept"] = list(self.kept)
        d["ranking"] = [{"layer": t.kept[0], "agreement": t.agreement, "delta_mdice": t.delta_mdice} for t in self.ranking]
        d["trials"] = [{"kept": len(t.kept), "agreement": t.agreement, "delta_mdice": t.delta_mdice} for t in self.trials]
        return d

    def summary(self) -> str:
        head = f"--keep {self.spec}: {len(self.kept)} of {self.candidates} layers kept in higher precision"
        if not self.trials:
            return head
        last = next((t for t in self.trials if t.kept == self.kept), self.trials[-1])
        verdict = "" if self.met is None else ("; gate met" if self.met else "; gate NOT met, the best variant tried is kept")
        ranked = ""
        if self.ranking:
            ranked = "; costliest: " + ", ".join(f"{_short(t.kept[0])} ({t.agreement:.4f})" for t in self.ranking[:RANKING_SHOWN])
        return (f"{head}; on {self.images} selection images: agreement {self.trials[0].agreement:.4f} -> {last.agreement:.4f}, "
                f"delta mDice {self.trials[0].delta_mdice:+.4f} -> {last.delta_mdice:+.4f} ({len(self.trials)} trials){verdict}{ranked}")


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


Measure = Callable[[Tuple[str, ...]], object]  # kept layers -> a VariantAccuracy of that variant on the selection images


def decide(spec: KeepSpec, candidates: Sequence[str], measure: Measure, gate: KeepGate, flag: str, images: int = 0,
           selection: str = "") -> KeepDecision:
    """The layers to keep for ``spec``; ``measure`` builds and scores a variant (called only for ``auto`` and ``N``)."""
    candidates = list(dict.fromkeys(candidates))
    common = dict(spec=str(spec), gate=gate, candidates=len(candidates), images=images, selection=selection)
    if spec.mode is KeepMode.NONE:
        return KeepDecision(kept=(), met=None, **common)
    if spec.mode is KeepMode.NAMES:
        return KeepDecision(kept=_known(spec.names, candidates, flag), met=None, **common)
    trials: List[Trial] = []

    def trial(kept: Sequence[str]) -> Trial:
        acc = measure(tuple(kept))
        trials.append(Trial.of(kept, acc))
        return trials[-1]

    first = trial(())
    if spec.mode is KeepMode.AUTO and gate.met(first):
        return KeepDecision(kept=(), met=True, trials=tuple(trials), **common)
    ranking = rank(candidates, measure)
    order = [t.kept[0] for t in ranking]
    if spec.mode is KeepMode.COUNT:
        chosen = trial(order[: spec.count])
        return KeepDecision(kept=chosen.kept, met=gate.met(chosen), ranking=ranking, trials=tuple(trials), **common)
    for k in range(1, max(1, math.ceil(MAX_KEPT_FRACTION * len(order))) + 1):
        if gate.met(trial(order[:k])):
            return KeepDecision(kept=trials[-1].kept, met=True, ranking=ranking, trials=tuple(trials), **common)
    best = max(trials, key=lambda t: (t.agreement, t.delta_mdice))
    log.warning("%s auto: no variant met the gate (mDice drop <= %.4f, agreement >= %.4f); keeping the best tried (%d layers, "
                "agreement %.4f)", flag, gate.max_dice_drop, gate.min_agreement, len(best.kept), best.agreement)
    return KeepDecision(kept=best.kept, met=False, ranking=ranking, trials=tuple(trials), **common)


def rank(candidates: Sequence[str], measure: Measure) -> Tuple[Trial, ...]:
    """Leave-one-out: each layer alone kept, costliest first (most agreement restored, then most mDice)."""
    scored = [Trial.of((name,), measure((name,))) for name in candidates]
    return tuple(sorted(scored, key=lambda t: (-t.agreement, -t.delta_mdice)))


def _known(names: Sequence[str], candidates: Sequence[str], flag: str) -> Tuple[str, ...]:
    unknown = [n for n in names if n not in candidates]
    if unknown:
        shown = ", ".join(candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        raise ExportConfigError(f"{flag}: no layer named {unknown[0]!r} can be kept; expected names like {shown} "
                                f"({len(candidates)} candidates; '{flag} auto' ranks them)")
    return tuple(names)
