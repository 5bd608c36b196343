"""What the demo page shows, computed with numpy + OpenCV only (no Gradio, no torch): unit-tested without a browser.

``timed_segment`` runs the predictor's own steps one by one (``check_image`` + ``preprocess_batch``, ``infer``,
``logits_to_mask``: the functions ``BasePredictor.predict`` calls) with ``time.perf_counter`` around each, so the
latency split is that of the real call and the mask is bit-identical to ``predictor.predict(image)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..data.overlay import PRED_COLOR, draw_contours
from ..data.transforms import check_image, logits_to_mask, logits_to_proba, preprocess_batch
from ..errors import InvalidInputError

FILL_ALPHA = 0.35  # how strongly the filled mask tints the lesion in the overlay
DISPLAY_MAX_SIDE = 2048  # images shown on the page are downscaled to this; every figure uses full resolution
BOTH_COLOR: Tuple[int, int, int] = (40, 200, 40)  # agreement map: lesion for both models
ONLY_A_COLOR: Tuple[int, int, int] = (255, 40, 40)  # lesion for A only
ONLY_B_COLOR: Tuple[int, int, int] = (40, 120, 255)  # lesion for B only


@dataclass(frozen=True)
class Latency:
    """Milliseconds per step of one ``predict`` call; ``probability_ms`` is the extra map the page shows."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    probability_ms: float

    @property
    def total_ms(self) -> float:
        """Pre-processing + inference + post-processing: what ``predictor.predict(image)`` costs."""
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

    def to_dict(self) -> Dict[str, float]:
        return {"preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3),
                "postprocess_ms": round(self.postprocess_ms, 3), "total_ms": round(self.total_ms, 3),
                "probability_map_ms": round(self.probability_ms, 3)}


@dataclass(frozen=True)
class Segmentation:
    mask: np.ndarray  # HxW uint8 {0, 1}, identical to predictor.predict(image, threshold)
    proba: np.ndarray  # HxW float32, identical to predictor.predict_proba(image)
    latency: Latency
    threshold: float


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def timed_segment(predictor: Any, image: np.ndarray, threshold: Optional[float] = None) -> Segmentation:
    """Segment one HxWx3 uint8 RGB image, timing pre-processing, inference and post-processing separately.

    Pre-processing is validation + resize + normalisation into the NCHW batch (padded like ``predict_batch`` does
    for a fixed-batch engine); inference is ``predictor.infer`` (the backend call under the predictor's lock);
    post-processing is resizing the logits to the image and thresholding them into the mask. The probability map is
    timed apart: ``predict`` does not compute it.
    """
    t = float(predictor.threshold if threshold is None else threshold)
    if not 0.0 <= t <= 1.0:
        raise InvalidInputError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    static = getattr(predictor, "static_batch_size", None)

    start = time.perf_counter()
    check_image(image)
    x = preprocess_batch([image], predictor.preprocess_config)
    if static is not None and static > 1:
        x = np.concatenate([x, np.repeat(x, static - 1, axis=0)])
    pre_ms = _ms(start)

    start = time.perf_counter()
    logits = predictor.infer(x)[0]
    infer_ms = _ms(start)

    start = time.perf_counter()
    mask = logits_to_mask(logits, image.shape[:2], t)
    post_ms = _ms(start)

    start = time.perf_counter()
    proba = logits_to_proba(logits, image.shape[:2])
    proba_ms = _ms(start)
    return Segmentation(mask=mask, proba=proba, latency=Latency(pre_ms, infer_ms, post_ms, proba_ms), threshold=t)


def lesion_area(mask: np.ndarray) -> Tuple[int, float]:
    """(lesion pixels, percent of the image's pixels) of an HxW mask (any value > 0 is lesion)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise InvalidInputError(f"mask: expected a non-empty HxW array, got shape {m.shape}")
    pixels = int(np.count_nonzero(m))
    return pixels, 100.0 * pixels / m.size


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement Dice 2|A∩B| / (|A| + |B|) of two HxW masks; 1.0 when both are empty (they agree entirely)."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if a.shape != b.shape:
        raise InvalidInputError(f"dice: the masks' shapes differ, {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def _tint(image: np.ndarray, where: np.ndarray, color: Tuple[int, int, int], alpha: float) -> None:
    """Blend ``color`` into ``image`` in place at ``where`` (HxW bool)."""
    if where.any():
        px = image[where].astype(np.float32)
        image[where] = np.clip(px * (1.0 - alpha) + np.asarray(color, np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int] = PRED_COLOR, alpha: float = FILL_ALPHA) -> np.ndarray:
    """A copy of ``image`` with the lesion filled (tinted by ``alpha``) and outlined (``draw_contours``)."""
    check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha!r}")
    m = np.asarray(mask)
    if m.shape != image.shape[:2]:
        raise InvalidInputError(f"mask: shape {m.shape} does not match the image's {image.shape[:2]}")
    out = np.ascontiguousarray(image).copy()
    _tint(out, m > 0, color, alpha)
    return draw_contours(out, m, pred_color=color)


def probability_map(proba: np.ndarray) -> np.ndarray:
    """HxW probabilities in [0, 1] -> HxWx3 uint8 RGB (OpenCV's inferno colour map: dark 0 to bright yellow 1)."""
    import cv2

    p = np.asarray(proba, np.float32)
    if p.ndim != 2 or p.size == 0:
        raise InvalidInputError(f"proba: expected a non-empty HxW array, got shape {p.shape}")
    levels = np.clip(np.nan_to_num(p, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def agreement_map(image: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """``image`` tinted where the masks say lesion: both (green), only A (red), only B (blue)."""
    check_image(image)
    a = np.asarray(mask_a) > 0
    b = np.asarray(mask_b) > 0
    if a.shape != image.shape[:2] or b.shape != image.shape[:2]:
        raise InvalidInputError(f"agreement_map: masks {a.shape} and {b.shape} must match the image's {image.shape[:2]}")
    out = np.ascontiguousarray(image).copy()
    _tint(out, a & b, BOTH_COLOR, alpha)
    _tint(out, a & ~b, ONLY_A_COLOR, alpha)
    _tint(out, b & ~a, ONLY_B_COLOR, alpha)
    return out


def for_display(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """``image`` downscaled (INTER_AREA) so its longer side is at most ``max_side``; as is when already smaller."""
    import cv2

    h, w = image.shape[:2]
    scale = max_side / float(max(h, w))
    if scale >= 1.0:
        return image
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def describe(seg: Segmentation) -> Dict[str, Any]:
    """The figures of one segmentation, as plain JSON-able values (what the page's details and the API return)."""
    pixels, percent = lesion_area(seg.mask)
    h, w = seg.mask.shape
    return {"lesion_pixels": pixels, "lesion_percent": round(percent, 4), "image_pixels": int(h * w),
            "image_size": [int(w), int(h)], "threshold": seg.threshold, "latency": seg.latency.to_dict()}


def summary_markdown(seg: Segmentation, title: str = "") -> str:
    """The lines the page shows under the overlay: area and the latency split."""
    pixels, percent = lesion_area(seg.mask)
    h, w = seg.mask.shape
    lat = seg.latency
    head = f"**{title}**  \n" if title else ""
    return (
        f"{head}Lesion area: **{pixels:,} px** ({percent:.2f} % of the {w}x{h} image, threshold {seg.threshold:g})  \n"
        f"Latency: pre-processing {lat.preprocess_ms:.1f} ms + inference {lat.inference_ms:.1f} ms + "
        f"post-processing {lat.postprocess_ms:.1f} ms = **{lat.total_ms:.1f} ms** "
        f"(probability map for display: {lat.probability_ms:.1f} ms more)"
    )
