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

# UCM-Net was trained again for 50 epochs (one cosine period of its recipe, T_max 50) with the robust augmentations
# and shipped (val 0.8893 vs 0.8865 before).

# EGE-UNet and UNeXt-S a little below the 0.885 bar: one more cosine period each, started from the shipped weights (the
# released EGE-UNet recipe runs six periods of 50 epochs; 30 here, for the CPU budget). EGE-UNet's was shipped (val
# 0.8901 vs 0.8863). UNeXt-S's (val 0.8807 vs 0.8770) was not: at 128x128 its masks shrank to a fraction of the old
# weights' on the committed sample images, a loss of scale robustness the val gain does not justify.

# UNeXt-S's fine-tune was run again (it reproduced val 0.8807) and shipped with `ship --interpolate` as the WiSE-FT
# mixture 0.25 x start + 0.75 x fine-tuned (val 0.8811; test 0.8866), which keeps more of the start's accuracy at
# 128x128 input than the fine-tuned weights alone.

# UCM-Net was fine-tuned from those weights for 30 epochs with the `dermoscope` augmentations (they took a round field
# of view's black corners for lesion: benchmarks/robustness.py) and shipped with `ship --interpolate --select
# val-shifts` (alpha 1; val 0.8895 vs 0.8893; test 0.8930).

# UNeXt-S the same way (30 epochs, bf16): shipped, alpha 0.75 on val + shifts (val 0.8847 vs 0.8811; test 0.8902).

# MALUNet and EGE-UNet the same way (30 epochs from their shipped weights, `dermoscope`, each with the precision it
# was trained with): under `robust` they lose 0.12-0.13 test mDice when the lesion is smaller and 0.03-0.06 with a
# round field of view. MALUNet's was shipped with alpha 1 (val 0.8900 vs 0.8895; test 0.8933; mean over val + shifts
# 0.8797 vs 0.8713); EGE-UNet's with alpha 0.75 (val 0.8915 vs 0.8901; test 0.8897; mean over val + shifts 0.8798 vs
# 0.8705).

# LMSAUnet, fine-tuned from the shipped 10-epoch weights: one 20-epoch cosine period of its recipe, the first 12 epochs
# at 128x128, the last 8 at 256x256, enough full-size epochs to recover from the change of scale (README, Training).
# bf16 where the CPU has it natively (`--precision auto`): with AVX512-BF16 an epoch took about 5-7 minutes at 128x128
# and 27 at 256x256; epochs 1-9 ran in bf16. On an AVX2-only machine bf16 is emulated and slower than fp32
# (benchmarks/results/avx2/train_speed.md), and there the run goes on in fp32: about 11 and 80 minutes an epoch.
# From epoch 13 (batch 80) on, the decoders squeeze before they upsample (the same function, docs/models.md):
# 0.56x the step time of the released order (benchmarks/results/avx2/squeeze_first/train_speed.md). Epochs 13 and 14,
# the first at 256x256, reached val mDice 0.8704 and 0.8701 (epoch 14: 1545 s on the AVX2 host); epoch 15 0.8760.
# From epoch 16 (batch 127) on, lightseg-train keeps the memory it frees (README, Training): 0.40x the step time at
# 256x256 (benchmarks/results/avx2/malloc/train_speed.md). Epoch 16: val mDice 0.8742.
# Epochs 17-20: val mDice 0.8789, 0.8751, 0.8788, 0.8742 (about 11 minutes an epoch at 256x256 with the kept memory).
# Shipped as epoch 17 (WiSE-FT alpha 1 won on val): val 0.8789 vs 0.8670 before, test 0.8844 vs 0.8720.

# LMSAUnet N=32, after LMSAUnet, the same way: fine-tuned from its shipped 8-epoch weights (val 0.8326), one 20-epoch
# cosine period, the first 8 epochs at 128x128 (not 12: with the kept memory a 256x256 epoch takes about 17 minutes
# on the AVX2 host, and LMSAUnet's run needed several full-size epochs to recover from the change of scale).
# Epochs 1-6 (at 128x128, validated at 256x256): val mDice 0.7515, 0.7537, 0.6838, 0.7096, 0.7822, 0.7716; about 6
# minutes an epoch. Epochs 7 and 8: val mDice 0.6736, 0.7207.
# From epoch 9 (the first at 256x256) on, with a moving average of the weights (--ema 0.998, README Training),
# validated beside them; best.pt holds whichever scores higher. And from epoch 9, batch 62, with the cascades' paired
# depthwise convolutions (docs/models.md: 0.67x the step time at 256x256). Epoch 9: val mDice 0.8376 (EMA 0.8235); epoch 10: 0.8580 (EMA 0.8619).
# Epochs 11-14: val mDice 0.8621, 0.8574, 0.8655, 0.8582 (EMA 0.8646, 0.8638, 0.8645, 0.8635); best so far epoch 13,
# the trained weights. About 15 minutes an epoch at 256x256 with the paired cascades.
# Epochs 15-20 (trained / EMA): 0.8582 / 0.8595, 0.8632 / 0.8624, 0.8606 / 0.8637, 0.8618 / 0.8614, 0.8597 / 0.8614,
# 0.8583 / 0.8600. Shipped with `ship --interpolate` as the best val epoch (alpha 1.0): val 0.8655 vs 0.8326 before,
# test 0.8715 vs 0.8408.

# UCM-Net once more (bar 0.90 test mDice; shipped 0.8930): longer than its 30-epoch `dermoscope` fine-tune, one full
# period of its recipe's cosine (T_max 50) from the shipped weights, with the same augmentations and the weight
# average. About 70-100 s an epoch on this CPU. Ship only if it beats the shipped weights on val
# (`ship --interpolate --select val-shifts`).
# Epochs 1-2 (trained / EMA): val mDice 0.8823 / 0.8852, 0.8872 / 0.8854 (the shipped weights: 0.8895).
# Epochs 3-26 (trained / EMA): the EMA passed the shipped weights from epoch 13 on (0.8898) and reached 0.8910 at
# epochs 24 and 26; the trained weights stayed at 0.871-0.888. Epochs 27-50: both rose as the LR decayed; best val
# epoch 44, the trained weights (0.8923; EMA 0.8918). Shipped with `ship --interpolate --select val-shifts` (alpha 1):
# val 0.8923 vs 0.8895, mean over val and the 12 shifts 0.8833 vs 0.8804, test 0.8984 vs 0.8930. Finished.

# LMSAUnet N=32 with the `dermoscope` augmentations, before LMSAUnet (N=8): its shipped weights, fine-tuned with
# `robust` only, fail under a round field of view (test mean Dice 0.55, 182 of 514 images below 0.5;
# benchmarks/results/robustness.md), far worse than N=8 (0.84). One 10-epoch cosine period at 256x256 from the
# shipped weights with the weight average; ship with `ship --interpolate --select val-shifts` if it wins there.
# Epochs 1-2 (trained / EMA): val mDice 0.8177 / 0.8324, 0.8139 / 0.8507 (the shipped weights: 0.8655).
run --model lmsaunet_n32 --out training/lmsaunet_n32 --epochs 10 --precision auto --init-weights pretrained --augment dermoscope --ema 0.998

# UCM-Net, a second fine-tune from the weights shipped on 2026-12-01 (val 0.8923, test 0.8984; bar 0.90 test mDice):
# the 50-epoch run's val mDice still rose while its LR decayed, so 30 more epochs from them at half the recipe's
# peak LR (cosine over the 30), same augmentations and weight average. Ship only if it wins on val
# (`ship --interpolate --select val-shifts`). About 110 s an epoch undisturbed.
run --model ucmnet --out training/ucmnet --epochs 30 --lr 5e-4 --init-weights pretrained --augment dermoscope --ema 0.998

# LMSAUnet again, after N=32 and UCM-Net (the shorter run first): its shipped weights lose 0.043 test mDice under a
# round field of view (the shift the `dermoscope` augmentations target; benchmarks/results/robustness.md), so one
# more cosine period of 15 epochs at 256x256 from them with `--augment dermoscope`, as the small models had, and the
# weight average. Ship with `ship --interpolate --select val-shifts` if it wins on val.
run --model lmsaunet --out training/lmsaunet --epochs 15 --precision auto --init-weights pretrained --augment dermoscope --ema 0.998
