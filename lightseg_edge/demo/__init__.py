"""``lightseg-demo``: a local web app (Gradio) to try the models on a dermoscopy image.

The analysis behind the page (timed segmentation, overlay, lesion area, agreement Dice) is in :mod:`.analysis`
(numpy + OpenCV only); which models, runtimes and precisions the page offers, and the predictor cache, in
:mod:`.sources`; the page itself in :mod:`.app`, the only module that imports Gradio (install the ``demo`` extra).
Importing this package imports neither Gradio nor torch.

Not a diagnostic device: the demo shows what a model outputs, for engineering and evaluation only.
"""

from __future__ import annotations

DISCLAIMER = (
    "Not a diagnostic device. This demo shows what a segmentation model outputs, for engineering and evaluation "
    "only; it must not be used to diagnose, treat or triage any patient."
)

__all__ = ["DISCLAIMER"]
