#!/usr/bin/env bash
# Every unfinished training run, resumed from its committed state (see training/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${LIGHTSEG_ISIC2018:-../shared/data/isic2018}
# lmsaunet: epochs 1-9 ran on a GPU at 256x256 (batch 16, fp32); the rest on a 2-core CPU with bf16 autocast,
# epochs 10-13 at 128x128 (progressive resizing) and the last at 256x256.
lightseg-train --model lmsaunet --data "$DATA" --out training/lmsaunet --epochs 14 --batch-size 16 --threads 2 \
    --precision bf16 --progressive 128:13 --no-progress --resume
