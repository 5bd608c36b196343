"""The step bodies of an export from a registry model: the deploy form and its weights, and the check that
``deploy()`` did not change what the model computes. The pipeline's front end runs them as the ``model`` and
``deploy-check`` steps."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ExportError
from ..manifest import WEIGHTS_NAME, sha256_file
from ..types import DeployForm
from .config import RANDOM_WEIGHTS


def build_model(name: str, weights: Optional[str], seed: int):
    """(training form, deploy form, weights record, parameter count). The training form is kept to check deploy()
    against it."""
    import torch

    from ..errors import CheckpointError
    from ..models import create_model
    from ..models._weights import pretrained_path

    if weights is None:
        try:
            path: Optional[Path] = pretrained_path(name)
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}. Pass --weights CKPT (a lightseg-train checkpoint or .safetensors file), or --weights random to export "
                f"randomly initialised weights (for testing the pipeline only)"
            ) from exc
        source = "pretrained"
    elif weights == RANDOM_WEIGHTS:
        path, source = None, RANDOM_WEIGHTS
    else:
        path, source = Path(weights), str(weights)
    torch.manual_seed(seed)  # random weights are reproducible; loaded weights overwrite every parameter anyway
    model = create_model(name, checkpoint=path) if path is not None else create_model(name)
    train_form = model.eval()
    deployed = deploy_form(train_form, DeployForm.DEFAULT)
    record = {"source": source, "sha256": sha256_file(path) if path is not None else None}
    if source == RANDOM_WEIGHTS:
        record["seed"] = seed
    params = sum(p.numel() for p in deployed.parameters())
    return train_form, deployed, record, params


def deploy_form(train_form, form):
    """A deploy form, built from a copy of the training form (``deploy`` may work in place; the training form is
    kept to check the deploy form against)."""
    import copy

    model = copy.deepcopy(train_form).deploy(form)
    if model is None or model.training:
        raise ExportError("model", f"{train_form.name}.deploy({form.value!r}) must return the model in eval mode")
    return model


def copy_weights(train_form, name: str, record: dict, stage_dir: Path) -> dict:
    """A weights file given by path is copied into the folder as tensors only; the record keeps where it came from.

    Readers load weights only from inside an export folder (verified by sha256), so an export that pointed at the
    training run's file could not be run in PyTorch once copied elsewhere.
    """
    from ..models._weights import save_safetensors

    if record["source"] in ("pretrained", RANDOM_WEIGHTS):
        return record
    path = save_safetensors(train_form, stage_dir / WEIGHTS_NAME, name)
    return {"source": WEIGHTS_NAME, "sha256": sha256_file(path), "origin": record["source"], "origin_sha256": record["sha256"]}


def weights_licence(name: str, weights: dict) -> Optional[str]:
    """The shipped weights' licence from their model card; None for weights this project did not train."""
    from ..models._weights import has_pretrained, model_card

    return model_card(name).get("licence") if weights.get("source") == "pretrained" and has_pretrained(name) else None


def deploy_check(train_form, deployed, x, chunk: int) -> dict:
    """The deploy form must compute what the training form computes (same tolerance as ONNX parity)."""
    import numpy as np

    from ..errors import ParityError
    from .parity import PARITY_ATOL, PARITY_RTOL, torch_logits

    a, b = torch_logits(train_form, x, chunk), torch_logits(deployed, x, chunk)
    diff = float(np.abs(a.astype(np.float64) - b).max())
    tol = PARITY_ATOL + PARITY_RTOL * float(np.abs(a).max())
    if diff > tol:
        raise ParityError(f"deploy() changes the model's output: max|dlogit| {diff:.2e} > {tol:.1e} on {len(x)} real images")
    return {"max_abs": diff, "tolerance": tol, "images": len(x)}
