"""Deterministic pre- and post-processing, numpy + OpenCV only.

One implementation serves training, INT8 calibration and every runtime, so a deployed model sees exactly what it was
trained on. Nothing here imports torch.
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidInputError
from ..types import PreprocessConfig

MAX_IMAGE_PIXELS = 100_000_000  # larger inputs are refused instead of exhausting memory on a device
SCRATCH_MAX_BYTES = 16 << 20  # the most each thread keeps for resized logits: a 2048x2048 image's float32 plane

_scratch = threading.local()


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


def _levels(cfg: PreprocessConfig, lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
    """3x256 float32: what each uint8 level of each channel normalises to, by the same float32 operations."""
    x = np.broadcast_to(np.arange(256, dtype=np.float32), (3, 256)).copy()
    if cfg.mode == "minmax":
        return (x - np.float32(lo)) / np.float32(hi - lo) if hi > lo else np.zeros_like(x)
    if cfg.mode == "scale":
        return x / 255.0
    if cfg.mode == "meanstd":
        return (x / 255.0 - np.asarray(cfg.mean, np.float32)[:, None]) / np.asarray(cfg.std, np.float32)[:, None]
    return x


def normalize_per_pixel(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The definition of the normalisation, every pixel in float32; ``normalize`` computes the same bits faster."""
    x = image.astype(np.float32)
    if cfg.mode == "minmax":
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    elif cfg.mode == "scale":
        x /= 255.0
    elif cfg.mode == "meanstd":
        x = (x / 255.0 - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def normalize(image: np.ndarray, cfg: PreprocessConfig, out: Optional[np.ndarray] = None) -> np.ndarray:
    """HxWx3 uint8 (already at network size) -> 3xHxW float32 normalised as ``cfg.mode`` says (into ``out`` if given).

    A lookup table per channel: 256 levels are computed instead of every pixel, with the same float32 operations,
    so the result is bit-identical to normalising the whole image and a few times faster. Each channel plane is
    looked up straight into its place in the CHW output (half the time of a lookup in HWC and a transposing copy)."""
    import cv2

    lo, hi = (float(image.min()), float(image.max())) if cfg.mode == "minmax" else (0.0, 255.0)
    levels = _levels(cfg, lo, hi)
    if out is None:
        out = np.empty((3,) + image.shape[:2], np.float32)
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(image))):
        cv2.LUT(plane, levels[c], dst=out[c])
    return out


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


def preprocess(image: np.ndarray, cfg: PreprocessConfig, out: Optional[np.ndarray] = None) -> np.ndarray:
    """One RGB uint8 image of any size -> 3xHxW float32 network input (into ``out`` if given)."""
    return normalize(resize_image(check_image(image), cfg.size), cfg, out)


def preprocess_batch(images: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    if len(images) == 0:
        raise InvalidInputError("expected at least one image, got an empty batch")
    batch = np.empty((len(images), 3) + tuple(cfg.size), np.float32)
    for im, slot in zip(images, batch):
        preprocess(im, cfg, slot)
    return batch


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large negative logits (fp16/INT8 engines) do not overflow exp().
    out = np.empty_like(x, dtype=np.float32)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _scratch_plane(shape: Tuple[int, int]) -> Optional[np.ndarray]:
    """This thread's reusable float32 plane of ``shape``, or None above ``SCRATCH_MAX_BYTES``.

    The resized logits are a temporary of every predict(); a fresh megabyte-sized array per call is often handed back
    to the OS by malloc and faulted in again page by page on the next call (benchmarks/prepost.py: with a new image
    decoded before each 512x512 predict(), ~140 page faults per call and 1.29x inference time instead of 1.18x)."""
    nbytes = 4 * shape[0] * shape[1]
    if nbytes > SCRATCH_MAX_BYTES:
        return None
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _scratch.buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(np.float32).reshape(shape)


def _resized_logits(logits: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
    """1xhxw (or hxw) logits -> HxW float32, bilinear; at another size than the logits' the result is this thread's
    scratch plane (valid until the thread's next call), so callers use it before returning."""
    import cv2

    lg = np.asarray(logits, dtype=np.float32)
    lg = lg.reshape(lg.shape[-2:])
    h, w = out_size
    if lg.shape == (h, w):
        return lg
    return cv2.resize(lg, (w, h), dst=_scratch_plane((h, w)), interpolation=cv2.INTER_LINEAR)


def logits_to_proba(logits: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
    """1xhxw (or hxw) logits -> HxW float32 probabilities at the original image size.

    Logits are resized before the sigmoid: bilinear interpolation of logits keeps edges sharper than interpolating
    probabilities and is what the papers' evaluation at native resolution does.
    """
    return sigmoid(_resized_logits(logits, out_size))


def proba_to_mask(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (proba >= threshold).astype(np.uint8)


def logit_band(threshold: float) -> Tuple[float, float]:
    """(logit(threshold), half-width of the band around it in which float32 rounding can decide differently).

    Outside the band the float32 sigmoid is on the same side of the threshold as the exact one: the band spans 16
    float32 steps of the probability at the threshold (the sigmoid's float32 error, NumPy's exp included, is a few
    steps), mapped to logits through the sigmoid's slope t(1 - t), plus 4 float32 steps of the logit itself. Near
    0.5 that is a few millionths; near 1, where float32 probabilities are coarse, it is wide (about 10 for
    1 - 1e-7), so the mask still equals the one cut from float32 probabilities."""
    t = float(threshold)
    cut = float(np.log(t) - np.log1p(-t))
    band = 16 * float(np.spacing(np.float32(t))) / (t * (1.0 - t)) + 4 * float(np.spacing(np.float32(abs(cut))))
    return cut, band


def logits_to_mask(logits: np.ndarray, out_size: Tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """``proba_to_mask(logits_to_proba(logits, out_size), threshold)``, bit for bit, without a full-size sigmoid.

    The resized logits are compared with logit(threshold); only those within a small band around it, where float32
    rounding of the sigmoid could decide differently, go through the sigmoid itself."""
    lg = _resized_logits(logits, out_size)
    if not 0.0 < threshold < 1.0:
        return proba_to_mask(sigmoid(lg), threshold)
    cut, band = logit_band(threshold)
    # Two comparisons bracket the band. When no logit falls inside it (the usual case), both give the mask; a bool
    # array viewed as uint8 is the 0/1 mask itself, with no conversion pass.
    above = lg > np.float32(cut + band)
    maybe = lg >= np.float32(cut - band)
    if np.count_nonzero(above) != np.count_nonzero(maybe):
        near = np.flatnonzero(maybe != above)  # a few pixels: index them, not a full-size boolean mask
        above.reshape(-1)[near] = sigmoid(lg.reshape(-1)[near]) >= threshold
    return above.view(np.uint8)
