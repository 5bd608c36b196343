#!/usr/bin/env bash
# Every unfinished training run, resumed from its committed state, one after the other (see training/README.md).
# A finished run (its log reaches the last epoch) returns at once, so the script can be re-run as a whole.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${LIGHTSEG_ISIC2018:-../shared/data/isic2018}
run() { lightseg-train --data "$DATA" --threads 2 --no-progress --resume "$@"; }

# lmsaunet: epochs 1-9 ran on a GPU at 256x256 (batch 16, fp32); the rest on a 2-core CPU with bf16 autocast,
# epochs 10-13 at 128x128 (progressive resizing) and the last at 256x256.
run --model lmsaunet --out training/lmsaunet --epochs 14 --batch-size 16 --precision bf16 --progressive 128:13
# The small baselines on the CPU, fp32 (bf16 does not pay for them: benchmarks/results/train_speed.md) except
# UNeXt-S; one cosine period (the recipes' T_max) instead of the papers' 300 epochs of cosine cycles.
run --model egeunet --out training/egeunet --epochs 50 --progressive 128:35
run --model malunet --out training/malunet --epochs 50 --progressive 128:35
run --model unext_s --out training/unext_s --epochs 100 --progressive 128:70 --precision bf16
