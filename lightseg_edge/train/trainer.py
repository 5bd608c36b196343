"""The fit loop: AdamW/Adam + cosine schedule, per-epoch validation, best-on-val selection, resumable."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader

from .._atomic import check_output_dir, make_dir, remove_stale_temporaries, write_bytes_atomic, write_text_atomic
from ..data.augment import Augmentation
from ..data.dataset import EpochShuffle, SegmentationDataset, subset
from ..data.layouts import Sample, describe_data, detect_layout, list_samples
from ..data.tta import averaged_logits
from ..errors import CheckpointError, LightsegError
from ..export.config import check_img_size
from .._hashing import brief_repr, path_argument, sha256_file
from ..models import create_model, get_model_config
from ..models._weights import fit_summary, load_weights, pretrained_path
from ..types import MAX_BATCH, MAX_SEED, MAX_THREADS, MAX_WORKERS, TTA, PreprocessConfig, TrainPrecision
from .checkpoint import load_checkpoint, save_checkpoint
from .device import autocast, keep_dilated_convs_fp32, resolve_device, resolve_precision
from .ema import WeightEMA, check_decay
from .losses import LOSSES, group_loss
from ..metrics import MetricAccumulator
from .recipes import recipe_for


@dataclass(frozen=True)
class TrainConfig:
    model: str
    data: str
    out: str
    epochs: Optional[int] = None  # None: the recipe's
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    img_size: Optional[int] = None
    workers: int = 0
    seed: int = 42
    patience: int = 30  # epochs without a better val mDice before stopping; 0 disables
    max_train_images: Optional[int] = None
    max_val_images: Optional[int] = None
    threads: Optional[int] = None
    resume: bool = False
    progress: bool = True
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:N"
    precision: TrainPrecision = TrainPrecision.FP32  # autocast dtype of the forward pass
    augment: Augmentation = Augmentation.ROBUST
    max_minutes: Optional[float] = None  # stop cleanly (checkpointed, mid-epoch if need be) once this budget is spent
    checkpoint_minutes: float = 10.0  # last.pt is also written mid-epoch at this interval
    low_res: Optional[int] = None  # progressive resizing: train the first low_res_epochs epochs at low_res x low_res
    low_res_epochs: int = 0
    init_weights: Optional[str] = None  # "pretrained" (the shipped weights) or a .safetensors/.pt file to start from
    ema: Optional[float] = None  # decay of a moving average of the weights, validated beside them (None: no average)

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "lr", "img_size", "max_train_images", "max_val_images", "threads", "checkpoint_minutes", "low_res")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:  # nan and inf fail too: an lr of inf trains nan weights
                raise LightsegError(f"{name}: expected a positive finite number, got {value!r}")
        for name in ("workers", "seed", "patience", "max_minutes", "low_res_epochs"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise LightsegError(f"{name}: expected a number >= 0, got {value!r}")
        for name, high in (("threads", MAX_THREADS), ("workers", MAX_WORKERS), ("seed", MAX_SEED), ("batch_size", MAX_BATCH)):
            value = getattr(self, name)
            if value is not None and value > high:  # the CLI's bounds (cli._common), for callers of the API too
                raise LightsegError(f"{name}: expected at most {high}, got {value!r}")
        if self.ema is not None:
            check_decay(self.ema)
        mcfg = get_model_config(self.model)  # an unknown model fails here, listing the known ones
        for flag, size in (("--img-size", self.img_size), ("--progressive", self.low_res)):
            if size is not None:
                check_img_size(size, self.model, mcfg.stride, flag, mcfg.min_size)
        full = self.img_size or mcfg.input_size[0]
        if self.low_res is not None and self.low_res >= full:
            raise LightsegError(f"--progressive {self.low_res}: progressive resizing trains below the full size {full}; "
                                f"give a smaller SIZE or leave --progressive out")


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val: Dict[str, float]
    epochs_run: int
    stopped_early: bool
    best_checkpoint: Path
    out: Path


def _resolved(cfg: TrainConfig) -> TrainConfig:
    r = recipe_for(cfg.model)
    return replace(cfg, epochs=cfg.epochs or r.epochs, batch_size=cfg.batch_size or r.batch_size, lr=cfg.lr or r.lr)


def _preprocess_for(cfg: TrainConfig) -> PreprocessConfig:
    pre = get_model_config(cfg.model).preprocess
    return replace(pre, size=(cfg.img_size, cfg.img_size)) if cfg.img_size else pre


@torch.no_grad()
def predict_masks(model, loader, threshold: float = 0.5, device: Optional[torch.device] = None, precision: TrainPrecision = TrainPrecision.FP32,
                  tta: TTA = TTA.NONE):
    """Yield (predicted mask, ground truth) pairs at the network's resolution, thresholding sigmoid >= ``threshold``
    (the logits averaged over ``tta``'s views first)."""
    model.eval()
    device = device or torch.device("cpu")
    for x, y in loader:
        with autocast(device, precision):
            logits = averaged_logits(model, x.to(device, non_blocking=True), tta, flip=torch.flip)
        pred = (torch.sigmoid(logits.float()) >= threshold).cpu().numpy()[:, 0]
        yield from zip(pred, y.numpy()[:, 0] > 0.5)


def evaluate_model(model, loader, threshold: float = 0.5, device: Optional[torch.device] = None, precision: TrainPrecision = TrainPrecision.FP32,
                   tta: TTA = TTA.NONE) -> Dict[str, float]:
    """Metrics at the network's resolution, as the papers evaluate."""
    acc = MetricAccumulator()
    for p, g in predict_masks(model, loader, threshold, device, precision, tta):
        acc.update(p, g)
    return acc.compute()


def _optimizer(name: str, params, lr: float, wd: float):
    return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(params, lr=lr, weight_decay=wd)


def _write_logs(out: Path, history: List[dict]) -> None:
    write_text_atomic(out / "log.json", json.dumps(history, indent=1))
    keys = list(dict.fromkeys(k for h in history for k in h))  # rows of an older run may lack newer columns
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, keys)
    w.writeheader()
    w.writerows(history)
    write_text_atomic(out / "log.csv", text.getvalue())
    _plot_curves(out / "curves.png", history)


def _plot_curves(path: Path, history: List[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax[0].set_xlabel("epoch"), ax[0].legend()
    ax[1].plot(ep, [h["train_dice"] for h in history], label="train Dice")
    ax[1].plot(ep, [h["val_mdice"] for h in history], label="val mDice")
    averaged = [h for h in history if "val_mdice_ema" in h]
    if averaged:
        ax[1].plot([h["epoch"] for h in averaged], [h["val_mdice_ema"] for h in averaged], label="val mDice, EMA weights")
    ax[1].plot(ep, [h["val_miou"] for h in history], label="val mIoU")
    ax[1].set_xlabel("epoch"), ax[1].legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_bytes_atomic(path, png.getvalue())


def _check_out_outside_data(out: Path, samples: Tuple[List[Sample], List[Sample]]) -> None:
    """--out must not be a folder the dataset is read from: curves.png there would become a case without a mask."""
    folders = {p.parent.resolve() for group in samples for s in group for p in (s.image, s.mask) if p is not None}
    if out.resolve() in folders:
        raise LightsegError(f"--out {out}: this folder holds the dataset's images or masks; write the run elsewhere (e.g. runs/<model>)")


def _samples(cfg: TrainConfig) -> Tuple[List[Sample], List[Sample]]:
    """The train and val samples, each said in one line: listing them is cheap, so a bad --data fails before anything
    is created."""
    layout = detect_layout(cfg.data)
    picked = []
    for split, limit in (("train", cfg.max_train_images), ("val", cfg.max_val_images)):
        available = list_samples(cfg.data, split, layout)
        picked.append(subset(available, limit))
        print(describe_data(cfg.data, layout, split, len(picked[-1]), len(available)))
    return picked[0], picked[1]


def _loaders(cfg: TrainConfig, samples: Tuple[List[Sample], List[Sample]], pre: PreprocessConfig, device: torch.device):
    train_ds = SegmentationDataset(samples[0], pre, augment=cfg.augment, seed=cfg.seed, progress=cfg.progress)
    val_ds = SegmentationDataset(samples[1], pre, progress=cfg.progress)
    # no persistent workers: each epoch's workers must see the dataset's new epoch (it seeds the augmentations)
    extra = {"pin_memory": device.type == "cuda"}
    sampler = EpochShuffle(len(train_ds), cfg.seed)
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(train_ds) > cfg.batch_size, num_workers=cfg.workers, **extra)
    val_dl = DataLoader(val_ds, batch_size=16, num_workers=cfg.workers, **extra)
    return train_ds, sampler, train_dl, val_dl


@dataclass
class _Progress:
    """How far the current epoch got: saved in mid-epoch checkpoints so a resumed run picks up at the next batch."""

    epoch: int
    batches: int = 0
    loss_sum: float = 0.0
    dice_sum: float = 0.0


@dataclass
class _Clock:
    checkpoint_s: float
    budget_s: Optional[float]
    start: float = field(default_factory=time.perf_counter)
    saved: float = field(default_factory=time.perf_counter)

    def checkpoint_due(self) -> bool:
        return time.perf_counter() - self.saved >= self.checkpoint_s

    def out_of_time(self) -> bool:
        return self.budget_s is not None and time.perf_counter() - self.start >= self.budget_s


def _resume(path: Path, cfg: TrainConfig, recipe, model, opt, sched, scaler, ema: Optional[WeightEMA]) -> Tuple[_Progress, List[dict], dict, dict]:
    """Restore a run from its last.pt: (progress, history, best, what the run's first session started from)."""
    ck = load_checkpoint(path)
    recorded = ck["config"].get("model") if isinstance(ck.get("config"), dict) else None
    if recorded != cfg.model:
        raise CheckpointError(f"{path}: checkpoint is for model {brief_repr(recorded, 80)}, not {cfg.model!r}")
    try:
        problem = fit_summary(model.state_dict(), ck["model"])
        if problem:
            raise CheckpointError(f"{path}: its weights do not fit {cfg.model!r}: {problem}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if "scaler" in ck and scaler.is_enabled():
            scaler.load_state_dict(ck["scaler"])
        if ema is not None and "ema" in ck:
            ema.load(ck["ema"], ck["model"])
        torch.set_rng_state(ck["torch_rng"])
        start, history, best = ck["epoch"] + 1, ck["history"], ck["best"]
        part = _Progress(**ck["partial"]) if ck.get("partial", {}).get("epoch") == start else _Progress(start)
        started = {k: ck["config"][k] for k in _INIT_KEYS if k in ck["config"]}
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        # A best.pt copied over last.pt, a file from an older version: not resumable, and torch's text is a key list
        raise CheckpointError(f"{path}: not a resumable last.pt ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                              f"start a new run in another --out, or restore the run's own last.pt") from None
    t_max = min(recipe.t_max, cfg.epochs)
    if sched.T_max != t_max:
        # --epochs changed on resume: continue on the new cosine from the closed-form LR at this epoch
        print(f"schedule: T_max {sched.T_max} -> {t_max} epochs from epoch {start}")
        sched.T_max = t_max
        for group, lr in zip(opt.param_groups, sched._get_closed_form_lr()):
            group["lr"] = lr
    at = f"epoch {start + 1}, batch {part.batches + 1}" if part.batches else f"epoch {start + 1}"
    print(f"resumed from {path} at {at} (best val mDice {best['mdice']:.4f} at epoch {best['epoch'] + 1})")
    if (ema is not None) != ("ema" in ck):
        print("ema: the weight average starts here from the resumed weights" if ema is not None else
              "ema: the run's weight average is dropped (no --ema)")
    return part, history, best, started


_INIT_KEYS = ("init_weights", "init_sha256")


def _init_weights(cfg: TrainConfig) -> Optional[Tuple[Path, Dict[str, str]]]:
    """The file a new run starts from, and its record for the run's config: name and sha256 (so a card can say what
    the weights were tuned from)."""
    if cfg.init_weights is None:
        return None
    path = pretrained_path(cfg.model) if cfg.init_weights == "pretrained" else path_argument(cfg.init_weights, "--init-weights")
    if not path.is_file():
        raise CheckpointError(f"--init-weights {path}: file not found; expected 'pretrained' or a .safetensors/.pt weights file")
    return path, dict(zip(_INIT_KEYS, (path.name, sha256_file(path))))


def downscale(x: torch.Tensor, y: torch.Tensor, size: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """A training batch at ``size`` x ``size`` (area-averaged image, mask re-binarised), or as it is for None."""
    if size is None or x.shape[-1] == size:
        return x, y
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    y = (torch.nn.functional.interpolate(y, size=(size, size), mode="area") >= 0.5).float()
    return x, y


def _train_epoch(model, loader, opt, scaler, recipe, device: torch.device, precision: TrainPrecision, part: _Progress,
                 clock: _Clock, save: Callable[[_Progress], None], desc: Optional[str], size: Optional[int] = None,
                 ema: Optional[WeightEMA] = None) -> bool:
    """Train from batch ``part.batches`` of the epoch on, accumulating into ``part``; False when the time budget ran out
    mid-epoch (``part`` is then saved, and a resumed run continues with the next batch)."""
    model.train()
    base_loss = LOSSES[recipe.loss]
    it = loader
    if desc:
        from tqdm import tqdm

        it = tqdm(loader, desc=desc, unit="batch", leave=False, initial=part.batches, total=part.batches + len(loader))
    for x, y in it:
        x, y = downscale(x.to(device, non_blocking=True), y.to(device, non_blocking=True), size)
        with autocast(device, precision):
            final, stages = model.forward_train(x)
        final, stages = final.float(), [s.float() for s in stages or []]
        loss = group_loss(base_loss, final, stages, y, recipe.group_weights) if recipe.group_weights and stages else base_loss(final, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if ema is not None:
            ema.update(model)
        with torch.no_grad():
            p = (final >= 0).float()
            dice = (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        part.batches, part.loss_sum, part.dice_sum = part.batches + 1, part.loss_sum + float(loss.detach()), part.dice_sum + float(dice)
        if desc:
            it.set_postfix(loss=f"{part.loss_sum / part.batches:.4f}")
        if clock.out_of_time():
            save(part)
            return False
        if clock.checkpoint_due():
            save(part)
    return True


def train(cfg: TrainConfig) -> TrainResult:
    cfg = _resolved(cfg)
    recipe = recipe_for(cfg.model)
    # Everything that can be checked without decoding an image is, before the output folder is created.
    out = check_output_dir(cfg.out, "--out")
    last_path, best_path = out / "last.pt", out / "best.pt"
    if not cfg.resume and (last_path.exists() or best_path.exists()):
        raise LightsegError(f"{out}: already holds a training run (last.pt/best.pt); pass --resume to continue it, or another --out")
    if cfg.resume and best_path.exists() and not last_path.exists():
        # Nothing to resume from, and a fresh run would overwrite the finished run's best.pt with its first epoch
        raise CheckpointError(f"{out}: --resume needs last.pt, but only best.pt is there (a finished or copied run); "
                              f"train into another --out, or move best.pt away to start over")
    init = None if cfg.resume and last_path.exists() else _init_weights(cfg)  # a resumed run has its own weights
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    autocast(device, precision)  # refuses fp16 on CPU before any image is decoded
    samples = _samples(cfg)
    _check_out_outside_data(out, samples)
    make_dir(out, "--out")
    remove_stale_temporaries(out)  # what a killed run's atomic writes left behind
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed input size: let cuDNN pick its fastest kernels

    pre = _preprocess_for(cfg)
    train_ds, sampler, train_dl, val_dl = _loaders(cfg, samples, pre, device)
    model = create_model(cfg.model)
    if init:
        load_weights(model, init[0])
        print(f"initialised from {init[0].name} (sha256 {init[1]['init_sha256'][:16]}...)")
    model = keep_dilated_convs_fp32(model.to(device), device, precision)
    opt = _optimizer(recipe.optimizer, model.parameters(), cfg.lr, recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=min(recipe.t_max, cfg.epochs), eta_min=recipe.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision is TrainPrecision.FP16)
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None

    part, history, best, started = _Progress(0), [], {"epoch": -1, "mdice": -1.0}, {}
    if cfg.resume and last_path.is_file():
        part, history, best, started = _resume(last_path, cfg, recipe, model, opt, sched, scaler, ema)

    config = {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(cfg).items() if v is not None and k != "init_weights"}
    # a resumed run keeps what its first session started from, whatever --init-weights says now
    config.update(init[1] if init else started)
    meta = {"config": config, "preprocess": pre.to_dict(), "recipe": asdict(recipe)}
    clock = _Clock(cfg.checkpoint_minutes * 60, None if cfg.max_minutes is None else cfg.max_minutes * 60)

    def save_last(progress: _Progress) -> None:
        save_checkpoint(last_path, {"model": _cpu(model.state_dict()), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                    "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": progress.epoch - 1,
                                    "partial": asdict(progress), "history": history, "best": best, **meta,
                                    **({"ema": ema.state()} if ema else {})})
        clock.saved = time.perf_counter()

    stopped_early = False
    for epoch in range(part.epoch, cfg.epochs):
        if cfg.patience and epoch - best["epoch"] > cfg.patience and best["epoch"] >= 0:
            stopped_early = True
            print(f"early stop: no better val mDice for {cfg.patience} epochs")
            break
        part = part if part.epoch == epoch else _Progress(epoch)
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch, part.batches * cfg.batch_size)
        t0 = time.perf_counter()
        desc = f"epoch {epoch + 1}/{cfg.epochs}" if cfg.progress else None
        size = cfg.low_res if epoch < cfg.low_res_epochs else None  # validation always runs at the full size
        if not _train_epoch(model, train_dl, opt, scaler, recipe, device, precision, part, clock, save_last, desc, size, ema):
            print(f"time budget of {cfg.max_minutes} min reached at epoch {epoch + 1}, batch {part.batches}; checkpointed, continue with --resume", flush=True)
            break
        train_loss, train_dice = part.loss_sum / max(part.batches, 1), part.dice_sum / max(part.batches, 1)
        if not math.isfinite(train_loss):
            raise LightsegError(f"training diverged at epoch {epoch + 1} (loss {train_loss}); lower --lr")
        lr = opt.param_groups[0]["lr"]
        sched.step()
        candidates = _candidates(model, ema)
        vals = {kind: evaluate_model(m, val_dl, device=device, precision=precision) for kind, m in candidates.items()}
        val = vals["trained"]
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_dice": train_dice,
               "val_mdice": val["mdice"], "val_miou": val["miou"], "val_dice_star": val["dice_star"],
               **({"val_mdice_ema": vals["ema"]["mdice"], "val_miou_ema": vals["ema"]["miou"]} if ema else {}),
               "seconds": round(time.perf_counter() - t0, 1), "device": device.type, "precision": precision.value, "train_size": size or pre.size[0]}
        history.append(row)
        winner = max(vals, key=lambda kind: vals[kind]["mdice"])  # the trained weights on a tie
        improved = vals[winner]["mdice"] > best["mdice"]
        if improved:
            best = {"epoch": epoch, "mdice": vals[winner]["mdice"], "val": vals[winner], "weights": winner}
            save_checkpoint(best_path, {"model": _cpu(candidates[winner].state_dict()), "epoch": epoch, "val": vals[winner],
                                        "weights": winner, **meta})
        save_last(_Progress(epoch + 1))
        _write_logs(out, history)
        averaged = f"EMA val mDice {vals['ema']['mdice']:.4f}  " if ema else ""
        mark = "" if not improved else "*best*" if ema is None else f"*best: {winner}*"
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {train_loss:.4f}  train Dice {train_dice:.4f}  val mDice {val['mdice']:.4f}  "
              f"val mIoU {val['miou']:.4f}  {averaged}lr {lr:.2e}  {row['seconds']:.0f}s  {mark}", flush=True)
        if clock.out_of_time() and epoch + 1 < cfg.epochs:
            print(f"time budget of {cfg.max_minutes} min reached after epoch {epoch + 1}; continue with --resume", flush=True)
            break
    return TrainResult(best["epoch"] + 1, best.get("val", {}), len(history), stopped_early, best_path, out)


def _candidates(model, ema: Optional[WeightEMA]) -> Dict[str, torch.nn.Module]:
    """The weights validated each epoch: the trained ones, and with --ema their moving average."""
    return {"trained": model, **({"ema": ema.module} if ema else {})}


def _cpu(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}
