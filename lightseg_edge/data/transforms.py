"""Deterministic pre- and post-processing, numpy + OpenCV only.

One implementation serves training, INT8 calibration and every runtime, so a deployed model sees exactly what it was
trained on. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..errors import InvalidInputError
from ..types import PreprocessConfig

MAX_IMAGE_PIXELS = 100_000_000  # larger inputs are refused instead of exhausting memory on a device


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an HxWx3 uint8 RGB image; the error says what was expected."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"{what}: expected a numpy array HxWx3 uint8 RGB, got {type(image).__name__}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise InvalidInputError(f"{what}: expected HxWx3 uint8 RGB, got a single-channel (grayscale) image of shape {image.shape}; convert it with cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = "; drop the alpha channel (image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise InvalidInputError(f"{what}: expected HxWx3 uint8 RGB, got shape {image.shape}{hint}")
    if image.dtype != np.uint8:
        hint = " (16-bit image: scale it to 8 bits first, e.g. (img >> 8).astype(np.uint8))" if image.dtype == np.uint16 else ""
        raise InvalidInputError(f"{what}: expected dtype uint8, got {image.dtype}{hint}")
    h, w = image.shape[:2]
    if h < 1 or w < 1:
        raise InvalidInputError(f"{what}: empty image of shape {image.shape}")
    if h * w > MAX_IMAGE_PIXELS:
        raise InvalidInputError(f"{what}: {w}x{h} is larger than the {MAX_IMAGE_PIXELS:,}-pixel limit; downscale it first")
    return image


def normalize(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """HxWx3 (already at network size) -> 3xHxW float32 normalised as ``cfg.mode`` says."""
    x = image.astype(np.float32)
    if cfg.mode == "minmax":
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    elif cfg.mode == "scale":
        x /= 255.0
    elif cfg.mode == "meanstd":
        x = (x / 255.0 - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def preprocess(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One RGB uint8 image of any size -> 3xHxW float32 network input."""
    return normalize(resize_image(check_image(image), cfg.size), cfg)


def preprocess_batch(images: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    if len(images) == 0:
        raise InvalidInputError("expected at least one image, got an empty batch")
    return np.stack([preprocess(im, cfg) for im in images])


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large negative logits (fp16/INT8 engines) do not overflow exp().
    out = np.empty_like(x, dtype=np.float32)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logits_to_proba(logits: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
    """1xhxw (or hxw) logits -> HxW float32 probabilities at the original image size.

    Logits are resized before the sigmoid: bilinear interpolation of logits keeps edges sharper than interpolating
    probabilities and is what the papers' evaluation at native resolution does.
    """
    import cv2

    lg = np.asarray(logits, dtype=np.float32)
    lg = lg.reshape(lg.shape[-2:])
    h, w = out_size
    if lg.shape != (h, w):
        lg = cv2.resize(lg, (w, h), interpolation=cv2.INTER_LINEAR)
    return sigmoid(lg)


def proba_to_mask(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (proba >= threshold).astype(np.uint8)
