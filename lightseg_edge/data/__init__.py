"""Dataset readers and the shared pre/post-processing. ``transforms`` and ``io`` need no torch."""

from .io import binarize_mask, read_image, read_mask
from .layouts import LAYOUTS, Sample, detect_layout, list_samples
from .transforms import logits_to_proba, preprocess, preprocess_batch, proba_to_mask

__all__ = [
    "LAYOUTS", "Sample", "detect_layout", "list_samples", "read_image", "read_mask", "binarize_mask",
    "preprocess", "preprocess_batch", "logits_to_proba", "proba_to_mask",
]
