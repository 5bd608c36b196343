"""Test-time augmentation: a network's logits averaged over flipped views of its input (``types.TTA``).

Array-library agnostic: ``np.flip`` for the runtimes (which import no torch), ``torch.flip`` for the PyTorch
evaluation; both take ``(array, axes)``. Logits are averaged, not probabilities, so the shared post-processing
(threshold the resized logits at logit(threshold)) stays as it is.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np

from ..errors import InvalidInputError
from ..types import TTA

#: The views of each TTA, as the spatial axes of an NCHW batch to flip (``()`` is the input itself).
VIEWS: Dict[TTA, Tuple[Tuple[int, ...], ...]] = {
    TTA.NONE: ((),),
    TTA.FLIPS: ((), (3,), (2,), (2, 3)),
}


def check_tta(value: object, flag: str = "tta") -> TTA:
    """``value`` as a TTA ('none', 'flips' or the enum; None is 'none'), else a one-line error naming ``flag``."""
    if value is None:
        return TTA.NONE
    try:
        return TTA(value)
    except ValueError:
        raise InvalidInputError(f"{flag}={value!r}: expected one of {', '.join(t.value for t in TTA)}") from None


def averaged_logits(run: Callable[[Any], Any], batch: Any, tta: TTA, flip: Callable[[Any, Tuple[int, ...]], Any] = np.flip) -> Any:
    """The mean of ``run`` over ``tta``'s views of an NCHW ``batch``, each result flipped back to the input's frame.

    ``run`` gets each view as ``flip`` returns it (``np.flip`` gives a strided view: a runtime that needs contiguous
    memory copies it). With ``TTA.NONE`` this is ``run(batch)``, unchanged."""
    views = VIEWS[tta]
    if len(views) == 1:
        return run(batch)
    total = None
    for axes in views:
        out = run(flip(batch, axes) if axes else batch)
        # Dividing makes a new array before the next run (a runtime may hand back the same output buffer each call);
        # by a power of two it is exact, so the sum equals the sum of the views' logits divided once.
        part = (flip(out, axes) if axes else out) / len(views)
        total = part if total is None else total + part
    return total
