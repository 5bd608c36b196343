"""The real images an export checks itself on: held-out images (parity, FP16/INT8 accuracy) and calibration images.

Both come from ``data.layouts.list_samples`` and go through ``data.transforms.preprocess``, the single
pre-processing path that training and every runtime use. Calibration images come from the training split only and
held-out images from the ``val`` split, so the accuracy numbers are never measured on calibration data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.io import IMAGE_EXTS, read_image, read_mask
from ..data.layouts import Sample, describe_data, detect_layout, find_layout, list_samples, plain_images
from ..data.transforms import preprocess
from ..errors import DataError
from ..types import PreprocessConfig
from .._hashing import sha256_file

HELDOUT_SPLIT = "val"
CALIB_SPLIT = "train"
# Eight real ISIC pairs committed with the repository: the fallback when no dataset is configured.
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "tests" / "assets" / "isic_sample"


def default_image_root(calib_data: Optional[str] = None) -> Optional[str]:
    """``--data`` default: $LIGHTSEG_ISIC2018, else a ``--calib-data`` dataset root with a ``val`` split (the images the
    user named), else ./data/isic2018, else the committed sample set."""
    from .._defaults import default_data_dir

    env = os.environ.get("LIGHTSEG_ISIC2018")
    found = env or (calib_data if calib_data and _has_heldout(calib_data) else None) or default_data_dir()
    if found:
        return found
    return str(SAMPLE_DIR) if SAMPLE_DIR.is_dir() else None


def _has_heldout(root: str) -> bool:
    try:
        return bool(list_samples(root, split=HELDOUT_SPLIT, layout=detect_layout(root), require_masks=True))
    except DataError:
        return False


@dataclass(frozen=True)
class ImageSet:
    """A chosen list of samples and where they came from (for the manifest)."""

    root: str
    layout: str
    split: str
    samples: Tuple[Sample, ...]
    available: int  # samples of that split before selection
    seed: int

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def case_ids(self) -> List[str]:
        return [s.case_id for s in self.samples]

    def list_sha256(self) -> str:
        """sha256 over '<case id> <sha256 of the image file>' lines: names the exact images and their content."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(f"{s.case_id} {sha256_file(s.image)}\n".encode())
        return h.hexdigest()

    def listing(self) -> str:
        """One line per image (case id, path relative to the root, sha256): the calibration list file."""
        root = Path(self.root)
        lines = []
        for s in self.samples:
            try:
                rel = s.image.relative_to(root)
            except ValueError:
                rel = s.image
            lines.append(f"{s.case_id}\t{rel}\t{sha256_file(s.image)}")
        return "\n".join(lines) + "\n"

    def describe(self, what: str) -> str:
        return describe_data(self.root, self.layout, self.split, len(self), self.available, what)

    def provenance(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "split": self.split,
            "images": len(self),
            "available": self.available,
            "seed": self.seed,
        }


def _choose(samples: Sequence[Sample], count: int, seed: int) -> Tuple[Sample, ...]:
    """A seeded random subset, kept in case-id order so the list (and its hash) is reproducible."""
    ordered = sorted(samples, key=lambda s: s.case_id)
    if count >= len(ordered):
        return tuple(ordered)
    idx = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return tuple(ordered[i] for i in sorted(idx))


def heldout_set(root: str, count: int, seed: int = 0) -> ImageSet:
    """Up to ``count`` image/mask pairs of the ``val`` split of a dataset root."""
    root = str(Path(root).resolve())
    layout = detect_layout(root)
    samples = list_samples(root, split=HELDOUT_SPLIT, layout=layout, require_masks=True)
    return ImageSet(root, layout, HELDOUT_SPLIT, _choose(samples, count, seed), len(samples), seed)


def selection_set(heldout: ImageSet, count: int) -> ImageSet:
    """Up to ``count`` images of the held-out split that are not in ``heldout`` (the images the export reports on), for
    the keep trials (``export.keep``); the held-out images themselves when the split has no others."""
    samples = list_samples(heldout.root, split=heldout.split, layout=heldout.layout, require_masks=True)
    taken = set(heldout.case_ids)
    rest = [s for s in samples if s.case_id not in taken]
    if not rest:
        return ImageSet(heldout.root, heldout.layout, heldout.split, tuple(heldout.samples[:count]), 0, heldout.seed)
    return ImageSet(heldout.root, heldout.layout, heldout.split, _choose(rest, count, heldout.seed), len(rest), heldout.seed)


def calibration_set(root: str, count: int, seed: int = 0) -> ImageSet:
    """Up to ``count`` training-split images of a dataset root, or all images of a flat folder of images.

    A flat folder has no split information: every image in it is taken as calibration material. A dataset root
    (ISIC/PH2/images+masks layouts) contributes its ``train`` split only (split.csv, or the deterministic hash split).
    """
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"--calib-data {path}: folder not found")
    path = path.resolve()
    flat = plain_images(path, CALIB_SPLIT)
    layout = find_layout(path)
    if layout is None:
        if not flat:
            raise DataError(
                f"--calib-data {path}: no images found (expected {', '.join(IMAGE_EXTS)} files in the folder, or a dataset root "
                f"in one of the supported layouts: ISIC 2016/2017/2018, PH2, images/+masks/, {{train,val}}/{{images,masks}})"
            )
        return ImageSet(str(path), "flat", "all", _choose(flat, count, seed), len(flat), seed)
    try:
        samples = list_samples(path, split=CALIB_SPLIT, layout=layout, require_masks=False)
    except DataError as exc:
        raise DataError(f"--calib-data {path}: no training images to calibrate on ({exc})") from exc
    return ImageSet(str(path), layout, CALIB_SPLIT, _choose(samples, count, seed), len(samples), seed)


def load_inputs(samples: Sequence[Sample], cfg: PreprocessConfig) -> np.ndarray:
    """(N, 3, H, W) float32 network inputs."""
    return np.stack([preprocess(read_image(s.image), cfg) for s in samples])


def load_masks(samples: Sequence[Sample]) -> List[np.ndarray]:
    """Ground-truth masks at their original size, {0, 1} uint8."""
    out = []
    for s in samples:
        if s.mask is None:
            raise DataError(f"{s.image}: no ground-truth mask for case {s.case_id!r}")
        out.append(read_mask(s.mask))
    return out


def batches(n: int, size: int) -> Iterator[Tuple[int, int]]:
    """(start, stop) index pairs covering range(n) in chunks of ``size``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
