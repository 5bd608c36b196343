"""Export test helpers: small real-image exports and weights whose masks mean something.

Random weights make every mask empty (or full), so an FP16/INT8 Dice delta of 0 would prove nothing. When a model
has no shipped pretrained weights yet, ``fitted_weights`` trains it briefly (128x128, Adam, 20 to 60 steps on the
sample set's four training images, stopping once the training Dice reaches 0.85 with a non-trivial mask) and saves
it as .safetensors, once per test session. That is a weak model, but its masks follow the lesions, so the precision
checks measure something real. The export tests then run on the sample's two ``val`` images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from lightseg_edge.models._weights import has_pretrained

FIT_SIZE = 128
MIN_FIT_STEPS, MAX_FIT_STEPS = 20, 60  # fewer steps fit four images with a mask that does not generalise at all
HEAVY_PARAMS = 5_000_000  # the classic U-Net (31M): its exports take minutes on 2 cores -> `slow`


def export_size(name: str) -> int:
    """Shipped weights: the size they were trained at (at other sizes a model may legitimately fail: UNeXt-S's masks
    on the sample images fall to a Dice of 0.17 at 128x128). Fitted weights: the smallest multiple of the model's
    stride that is >= FIT_SIZE, the size they were fitted at."""
    from lightseg_edge import get_model_config

    cfg = get_model_config(name)
    if has_pretrained(name):
        return cfg.input_size[0]
    s = cfg.stride
    return max(s, -(-FIT_SIZE // s) * s)


def model_params(name: str) -> int:
    from lightseg_edge import get_model_config

    c = get_model_config(name).claims
    return int(c.params or c.released_code_params or 0)


def registry_params():
    """list_models() as pytest params, heavy models marked slow."""
    from lightseg_edge import list_models

    return [pytest.param(n, marks=pytest.mark.slow) if model_params(n) > HEAVY_PARAMS else n for n in list_models()]


def fit_weights(name: str, sample_dir: Path, out: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from lightseg_edge import create_model, get_model_config
    from lightseg_edge.data.io import read_mask
    from lightseg_edge.data.layouts import list_samples
    from lightseg_edge.data.transforms import resize_mask
    from lightseg_edge.export.images import load_inputs
    from lightseg_edge.types import PreprocessConfig

    size = export_size(name)
    pre = get_model_config(name).preprocess
    pre = PreprocessConfig(size=(size, size), mode=pre.mode, mean=pre.mean, std=pre.std)
    train = list_samples(sample_dir, split="train")
    x = torch.from_numpy(load_inputs(train, pre))
    y = torch.from_numpy(np.stack([resize_mask(read_mask(s.mask), (size, size)) for s in train])[:, None].astype(np.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see ExportConfig.torch_threads: OpenMP stalls on a loaded 2-core machine
    try:
        torch.manual_seed(0)
        model = create_model(name)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(1, MAX_FIT_STEPS + 1):
            opt.zero_grad()
            logits = model(x)
            torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
            opt.step()
            if step >= MIN_FIT_STEPS and step % 5 == 0:
                pred = (logits.detach() >= 0).float()
                dice = float(2 * (pred * y).sum() / (pred.sum() + y.sum()).clamp(min=1))
                if dice >= 0.85 and 0.05 < float(pred.mean()) < 0.95:
                    break
        # BatchNorm running statistics lag far behind after a few steps at a high learning rate; recompute them on
        # the training batch so the eval-mode model is the one that was fitted
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        with torch.no_grad():
            model(x)
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.eval()
    finally:
        torch.set_num_threads(threads)
    path = out / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def small_config(sample_dir: Path, out: Optional[Path], **kw):
    """An ExportConfig sized for tests: real sample images, 2 held-out, 4 calibration images, no progress bar."""
    from lightseg_edge.export import ExportConfig

    base = dict(
        data=str(sample_dir),
        output=None if out is None else str(out),
        parity_images=2,
        eval_images=2,
        fp16_check_images=2,
        calib_images=4,
        progress=False,
        cpu_default=False,  # timed only where a test asks for it (tests/export/test_cpu_default.py)
    )
    base.update(kw)
    return ExportConfig(**base)
