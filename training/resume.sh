#!/usr/bin/env bash
# Every unfinished training run, resumed from its committed state, one after the other (see training/README.md).
# A finished run (its log reaches the last epoch) returns at once, so the script can be re-run as a whole.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${LIGHTSEG_ISIC2018:-../shared/data/isic2018}
run() { lightseg-train --data "$DATA" --threads 2 --no-progress --resume "$@"; }

# The small baselines on the CPU at 256x256, fp32 (bf16 does not pay for them: benchmarks/results/train_speed.md)
# except UNeXt-S; one short cosine period instead of the papers' 300 epochs (cosine cycles of 50). EGE-UNet was
# trained this way (30 epochs, about 80 s each) and shipped, and so were MALUNet (30 epochs, about 60 s each) and
# UNeXt-S (50 epochs with bf16, about 35 s each).

# EGE-UNet was trained again for 50 epochs (one full cosine period of its recipe) with the robust augmentations and
# shipped (val 0.8863 vs 0.8776 before).

# UCM-Net again, 50 epochs (one cosine period of its recipe, T_max 50) instead of 18, with the robust augmentations
# (the shipped weights were trained before they existed): shipped only if it beats the current weights on val (0.8865).
run --model ucmnet --out training/ucmnet --epochs 50
