"""Trainer checkpoints: tensors and plain metadata only, so ``torch.load(weights_only=True)`` reads them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List, Union

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


COMMIT_LIMIT = 2 << 20  # resume state committed to a repository stays under this many bytes


def compact(path: Union[str, Path], limit: int = COMMIT_LIMIT) -> str:
    """Shrink a ``last.pt`` in place so it can be committed: Adam's moments are stored in bf16 (the optimiser casts
    them back to fp32 when it loads them); if the file is still over ``limit`` the moments are dropped, and AdamW
    re-estimates them within a few hundred steps. Weights, scheduler, RNG and progress stay exact. Returns what was
    done. A resumed run is then close to, not bit-identical with, an uninterrupted one."""
    path = Path(path)
    ck = load_checkpoint(path)
    if "optimizer" not in ck:
        return "nothing to compact (weights only: a best.pt)"
    state = ck["optimizer"]["state"]
    for slot in state.values():
        for key, value in slot.items():
            if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                slot[key] = value.to(torch.bfloat16)
    save_checkpoint(path, {k: v for k, v in ck.items() if k != "format"})
    if path.stat().st_size <= limit:
        return "optimiser moments in bf16"
    ck["optimizer"]["state"] = {}
    save_checkpoint(path, {k: v for k, v in ck.items() if k != "format"})
    return "optimiser moments dropped"


def _run(argv: List[str]) -> int:
    for arg in argv:
        what = compact(arg)
        print(f"{arg}: {what}, {Path(arg).stat().st_size / (1 << 20):.2f} MiB")
    return 0


if __name__ == "__main__":
    from ..cli._common import run_cli

    raise SystemExit(run_cli(_run, None))
