"""PyTorch dataset: decoded once (at network size), augmented per sample as the papers do."""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from ..types import PreprocessConfig
from .augment import Augmentation, augment
from .io import read_image, read_mask
from .layouts import Sample
from .shifts import Shift
from .transforms import normalize, resize_image, resize_mask


def load_pair(sample: Sample, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Read, check and resize one image/mask pair; a size mismatch is an error naming both files."""
    if sample.mask is None:
        raise DataError(f"{sample.image}: no mask for case {sample.case_id!r}")
    image, mask = read_image(sample.image), read_mask(sample.mask)
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but image {sample.image} is {image.shape[1]}x{image.shape[0]}")
    return resize_image(image, size), resize_mask(mask, size)


class SegmentationDataset(Dataset):
    """Samples decoded and resized up front (2,594 ISIC images at 256x256 are ~0.5 GB), then augmented on the fly.

    Randomness comes from (seed, epoch, index), so every sample gets its own rotation each epoch and a resumed run
    sees exactly the augmentations it would have seen.
    """

    def __init__(self, samples: Sequence[Sample], preprocess: PreprocessConfig, augment: Augmentation = Augmentation.NONE, seed: int = 0, progress: bool = False) -> None:
        if not samples:
            raise DataError("empty dataset: no samples to load")
        self.samples: List[Sample] = list(samples)
        self.cfg = preprocess
        self.augment = Augmentation(augment)
        self.seed = seed
        self.epoch = 0
        it = self.samples
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="loading images", unit="img", leave=False)
        pairs = [load_pair(s, preprocess.size) for s in it]
        self.images = np.stack([p[0] for p in pairs])
        self.masks = np.stack([p[1] for p in pairs])

    def with_shift(self, shift: Shift) -> "SegmentationDataset":
        """A copy whose cached images and masks went through ``shift`` (``lightseg_edge.data.shifts``) once."""
        if shift.name == "none":
            return self
        shifted = copy.copy(self)
        pairs = [shift(image, mask) for image, mask in zip(self.images, self.masks)]
        shifted.images = np.stack([p[0] for p in pairs])
        shifted.masks = np.stack([p[1] for p in pairs])
        return shifted

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        image, mask = self.images[i], self.masks[i]
        if self.augment is not Augmentation.NONE:
            image, mask = augment(image, mask, np.random.default_rng([self.seed, self.epoch, i]), self.augment)
        x = torch.from_numpy(normalize(image, self.cfg))
        y = torch.from_numpy(mask.astype(np.float32))[None]
        return x, y


def subset(samples: Sequence[Sample], limit: Optional[int]) -> List[Sample]:
    return list(samples) if not limit else list(samples)[:limit]


class EpochShuffle(Sampler):
    """A shuffle that depends on (seed, epoch) only, read from position ``start``: a run resumed mid-epoch sees the
    rest of exactly the order it was interrupted in."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return iter(order[self.start:].tolist())

    def __len__(self) -> int:
        return self.n - self.start
