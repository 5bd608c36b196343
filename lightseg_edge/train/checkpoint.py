"""Trainer checkpoints: tensors and plain metadata only, so ``torch.load(weights_only=True)`` reads them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Union

import torch

from .._atomic import write_bytes_atomic
from ..errors import CheckpointError
from ..models._weights import load_torch_file

FORMAT = "lightseg-ckpt/1"


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    """Atomic and fsynced: an interrupted save, or a full disk, leaves the previous checkpoint intact."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return write_bytes_atomic(path, buf.getbuffer(), durable=True)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    obj = load_torch_file(path, "checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lightseg-edge trainer checkpoint (expected format {FORMAT!r})")
    return obj


COMMIT_LIMIT = 2 << 20  # compaction of resume state meant for a repository stops once it fits in this many bytes


def _moments_bf16(ck: Dict[str, Any]) -> bool:
    changed = False
    for slot in ck["optimizer"]["state"].values():
        for key, value in slot.items():
            if key != "step" and torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.bfloat16:
                slot[key], changed = value.to(torch.bfloat16), True
    return changed


def _ema_delta(ck: Dict[str, Any]) -> bool:
    ema = ck.get("ema")
    if not ema or ema.get("delta"):
        return False
    weights = ck["model"]
    ema["model"] = {k: (v - weights[k]).to(torch.bfloat16) if v.is_floating_point() else v for k, v in ema["model"].items()}
    ema["delta"] = "bf16"
    return True


def _drop_moments(ck: Dict[str, Any]) -> bool:
    had = bool(ck["optimizer"]["state"])
    ck["optimizer"]["state"] = {}
    return had


def _drop_ema(ck: Dict[str, Any]) -> bool:
    return ck.pop("ema", None) is not None


@dataclass(frozen=True)
class Step:
    what: str
    apply: Callable[[Dict[str, Any]], bool]  # changes the checkpoint in place; False when there was nothing to do


STEPS = (Step("optimiser moments in bf16", _moments_bf16), Step("weight average as a bf16 difference", _ema_delta),
         Step("optimiser moments dropped", _drop_moments), Step("weight average dropped", _drop_ema))


def compact(path: Union[str, Path], limit: int = COMMIT_LIMIT, steps: Sequence[Step] = STEPS) -> str:
    """Shrink a ``last.pt`` in place so it can be committed, one step of ``steps`` at a
    time until it fits in ``limit``: Adam's moments in bf16 (the optimiser casts them back to fp32 when it loads
    them); the weight average (``--ema``) as its difference from the weights in bf16 (a rounding of about 0.4 % of that
    small difference); the moments dropped (AdamW re-estimates them within a few hundred steps); last the weight
    average dropped (a resumed ``--ema`` run restarts it from the weights and says so). Weights, scheduler, RNG and
    progress stay exact. Returns what was done. A resumed run is then close to, not bit-identical with, an
    uninterrupted one."""
    path = Path(path)
    ck = load_checkpoint(path)
    if "optimizer" not in ck:
        return "nothing to compact (weights only: a best.pt)"
    done = []
    for step in steps:
        if step.apply(ck):
            save_checkpoint(path, {k: v for k, v in ck.items() if k != "format"})
            done.append(step.what)
        if path.stat().st_size <= limit:
            break
    return ", ".join(done) or "nothing to compact"


def _run(argv: List[str]) -> int:
    for arg in argv:
        what = compact(arg)
        print(f"{arg}: {what}, {Path(arg).stat().st_size / (1 << 20):.2f} MiB")
    return 0


if __name__ == "__main__":
    from ..cli._common import run_cli

    raise SystemExit(run_cli(_run, None))
