"""lightseg-train: train a zoo model on an ISIC/PH2/folder dataset, resumable, best checkpoint on val."""

from __future__ import annotations

import argparse
from typing import List, Optional, Tuple

from ..data.augment import Augmentation
from ..types import TrainPrecision
from ._common import (batch_size, check_model, default_data_dir, existing_dir, img_size, non_negative_float, non_negative_int, output_dir,
                      positive_float, positive_int, run_cli, seed_value, thread_count, worker_count)


def _progressive(text: str) -> Tuple[int, int]:
    size, _, epochs = text.partition(":")
    try:
        return positive_int(size), non_negative_int(epochs)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected SIZE:EPOCHS (e.g. 128:60), got {text!r}") from None


def _decay(text: str) -> float:
    from ..errors import LightsegError
    from ..train.ema import check_decay

    try:
        return check_decay(float(text))
    except (ValueError, LightsegError):
        raise argparse.ArgumentTypeError(f"expected a decay between 0 and 1 exclusive (e.g. 0.998), got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightseg-train", description=__doc__)
    p.add_argument("--model", required=True, help="registry name (see lightseg_edge.list_models())")
    p.add_argument("--data", type=existing_dir, default=default_data_dir(), help="dataset root (layout auto-detected; split.csv honoured)")
    p.add_argument("--out", type=output_dir, default=None, help="output folder (default runs/<model>)")
    p.add_argument("--epochs", type=positive_int, help="default: the paper recipe's")
    p.add_argument("--batch-size", type=batch_size)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--img-size", type=img_size, help="square input size (multiple of the model stride)")
    p.add_argument("--workers", type=worker_count, default=0)
    p.add_argument("--seed", type=seed_value, default=42)
    p.add_argument("--patience", type=non_negative_int, default=30, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--threads", type=thread_count, help="torch intra-op threads")
    p.add_argument("--max-train-images", type=positive_int, help="use only the first N training images (quick runs)")
    p.add_argument("--max-val-images", type=positive_int)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if it exists")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=[m.value for m in TrainPrecision], default="fp32",
                   help="autocast dtype (default fp32): bf16 on CUDA or a CPU with native bf16 (AVX512-BF16, AMX); fp16 on CUDA "
                        "only; auto: bf16 where the device has it natively, else fp32")
    p.add_argument("--augment", choices=[m.value for m in Augmentation], default=Augmentation.ROBUST.value,
                   help="robust (default): geometry, colour, blur and noise for other cameras and clinics; paper: rotate + flips")
    p.add_argument("--max-minutes", type=non_negative_float, help="stop cleanly once this budget is spent, checkpointed mid-epoch if need be (continue with --resume)")
    p.add_argument("--progressive", type=_progressive, metavar="SIZE:EPOCHS",
                   help="progressive resizing: train the first EPOCHS epochs at SIZE x SIZE (e.g. 128:60), the rest and all validation at full size")
    p.add_argument("--checkpoint-minutes", type=positive_float, default=10.0, help="also write last.pt mid-epoch at this interval (default 10)")
    p.add_argument("--init-weights", metavar="pretrained|FILE",
                   help="start a new run from weights: 'pretrained' (the shipped ones) or a .safetensors/.pt file (fine-tuning); "
                        "ignored on --resume, the run's own last.pt has them")
    p.add_argument("--ema", type=_decay, metavar="DECAY",
                   help="also keep an exponential moving average of the weights (e.g. 0.998, warmed up over the first steps), "
                        "validated every epoch beside them; best.pt holds whichever of the two scores higher")
    return p


def _run(argv: List[str]) -> int:
    args = _parser().parse_args(argv)
    from ..errors import DataError
    from ..train.trainer import TrainConfig, train

    check_model(args.model)
    if not args.data:
        raise DataError("no dataset: pass --data DIR or set LIGHTSEG_ISIC2018")
    cfg = TrainConfig(
        model=args.model, data=args.data, out=args.out or f"runs/{args.model}", epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, img_size=args.img_size, workers=args.workers, seed=args.seed, patience=args.patience,
        max_train_images=args.max_train_images, max_val_images=args.max_val_images, threads=args.threads,
        resume=args.resume, progress=not args.no_progress, device=args.device, precision=TrainPrecision(args.precision),
        augment=Augmentation(args.augment), max_minutes=args.max_minutes, checkpoint_minutes=args.checkpoint_minutes,
        low_res=args.progressive[0] if args.progressive else None, low_res_epochs=args.progressive[1] if args.progressive else 0,
        init_weights=args.init_weights, ema=args.ema,
    )
    res = train(cfg)
    print(f"best val mDice {res.best_val.get('mdice', float('nan')):.4f} at epoch {res.best_epoch}; checkpoint {res.best_checkpoint}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_run, argv, keep_memory=True)


if __name__ == "__main__":
    raise SystemExit(main())
