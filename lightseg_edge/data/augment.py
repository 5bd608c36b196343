"""Training augmentations, numpy + OpenCV, one random draw per (seed, epoch, sample).

Three policies:
- ``paper``: what UCM-Net / EGE-UNet's released scripts do (rotate +-180 deg with p=0.5, vertical and horizontal flips).
- ``robust``: the paper's geometry plus what differs between dermoscopes and clinics: scale, aspect and position of the
  lesion (other resolutions and crops), colour cast, saturation, hue, brightness, contrast and gamma (other cameras,
  polarised or not, other illumination), blur and resolution loss (other optics and JPEG pipelines), sensor noise.
  The ranges are moderate on purpose: each was checked on the ``val`` split not to cost in-domain accuracy.
- ``dermoscope``: ``robust`` with a wider zoom (0.6-1.5x: other magnifications) and, on a quarter of the samples,
  the dark corners of a dermoscope's round field of view (a black disc edge of random radius, centre and softness;
  the mask is cleared outside it). Many dermoscopes' images have them and few ISIC 2018 training images do; models
  trained with ``robust`` take the black corners for lesion and lose more on smaller lesions than on larger ones
  (``benchmarks/robustness.py``, shifts ``round-field`` and ``zoom-out``). A separate name, so runs recorded as ``robust``
  resume with exactly the augmentations they started with.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Tuple

import numpy as np


class Augmentation(str, Enum):
    NONE = "none"
    PAPER = "paper"
    ROBUST = "robust"
    DERMOSCOPE = "dermoscope"


Pair = Tuple[np.ndarray, np.ndarray]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _warp(image: np.ndarray, mask: np.ndarray, m: np.ndarray) -> Pair:
    import cv2

    h, w = mask.shape
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return image, mask


def _flips(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return image, mask


def paper(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
    """Rotate(limit=180, p=0.5), vertical and horizontal flips (p=0.5), as the released training scripts."""
    import cv2

    if rng.random() < 0.5:
        h, w = mask.shape
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(rng.uniform(-180, 180)), 1.0)
        image, mask = _warp(image, mask, m)
    return _flips(image, mask, rng)


def _geometry(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, zoom_range: Tuple[float, float] = (0.75, 1.33)) -> Pair:
    """One affine: rotation, isotropic zoom in ``zoom_range``, aspect stretch 0.8-1.25x, shift up to 10 % of the side."""
    h, w = mask.shape
    angle = math.radians(rng.uniform(-180, 180)) if rng.random() < 0.7 else 0.0
    zoom, aspect = _log_uniform(rng, *zoom_range), _log_uniform(rng, 0.8, 1.25)
    sx, sy = zoom * math.sqrt(aspect), zoom / math.sqrt(aspect)
    c, s = math.cos(angle), math.sin(angle)
    a = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    shift = rng.uniform(-0.1, 0.1, 2) * np.array([w, h])
    m = np.hstack([a, (centre + shift - a @ centre)[:, None]]).astype(np.float64)
    return _warp(image, mask, m)


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    x = image.astype(np.float32) / 255.0
    if rng.random() < 0.8:
        x = x * _log_uniform(rng, 0.7, 1.35)  # brightness
        mean = x.mean()
        x = (x - mean) * _log_uniform(rng, 0.7, 1.35) + mean  # contrast
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = gray[..., None] + (x - gray[..., None]) * _log_uniform(rng, 0.6, 1.4)  # saturation
    if rng.random() < 0.3:
        x = x * rng.uniform(0.9, 1.1, 3).astype(np.float32)  # white balance / colour cast
    x = np.clip(x, 0.0, 1.0)
    if rng.random() < 0.3:
        x = x ** _log_uniform(rng, 0.7, 1.4)  # gamma
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float HSV: hue in degrees
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12)) % 360.0
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _optics(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    r = rng.random()
    if r < 0.15:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
    elif r < 0.3:
        f = rng.uniform(0.35, 0.8)
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.1:
        noise = rng.normal(0.0, rng.uniform(2, 8), image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image


def _field_of_view(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
    """Black outside a disc: radius 0.9-1.35x half the side (1: through the mid-sides; above 1.41 nothing is cut),
    centre within 6 % of the side from the middle, an edge 1-6 px soft, a black level of 0-20."""
    h, w = mask.shape
    side = min(h, w)
    cy, cx = (np.array([h - 1, w - 1]) / 2) + rng.uniform(-0.06, 0.06, 2) * side
    radius, soft = rng.uniform(0.9, 1.35) * side / 2, rng.uniform(1.0, 6.0)
    yy, xx = np.ogrid[:h, :w]
    inside = np.clip((radius - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    black = np.float32(rng.uniform(0, 20))
    image = image.astype(np.float32) * inside[..., None] + black * (1 - inside[..., None])
    return (image + 0.5).astype(np.uint8), np.where(inside >= 0.5, mask, 0).astype(mask.dtype)


def _robust(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, zoom_range: Tuple[float, float],
            field_of_view: float) -> Pair:
    image, mask = _geometry(image, mask, rng, zoom_range)
    image, mask = _flips(image, mask, rng)
    image = _colour(np.ascontiguousarray(image), rng)
    if field_of_view and rng.random() < field_of_view:  # no draw at 0: `robust` keeps its exact random stream
        image, mask = _field_of_view(image, np.ascontiguousarray(mask), rng)
    return _optics(image, rng), mask


def robust(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
    return _robust(image, mask, rng, (0.75, 1.33), field_of_view=0.0)


def dermoscope(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
    return _robust(image, mask, rng, (0.6, 1.5), field_of_view=0.25)


_POLICIES = {Augmentation.PAPER: paper, Augmentation.ROBUST: robust, Augmentation.DERMOSCOPE: dermoscope}


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, policy: Augmentation = Augmentation.PAPER) -> Pair:
    """Apply ``policy`` to an HxWx3 uint8 image and its HxW mask; returns contiguous arrays of the same shapes."""
    policy = Augmentation(policy)
    if policy is not Augmentation.NONE:
        image, mask = _POLICIES[policy](image, mask, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
