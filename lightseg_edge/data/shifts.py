"""Fixed acquisition shifts for robustness checks: what another dermoscope or clinic does to an image, applied the
same way to every image (no randomness), so a model's accuracy under each one is a reproducible number.

Most shifts here sit at or past the edge of what the ``robust`` training augmentations (``augment.py``) draw (a
darker gamma, a stronger colour cast, more blur, a lower resolution, a bigger change of scale) and two are not in
them at all (JPEG artefacts; the black corners of a dermoscope's round field of view, which only the ``dermoscope``
augmentations add), so a drop under them says how far a model extrapolates. They are proxies: accuracy on another real collection (PH2,
other ISIC years) is measured with ``lightseg-eval --data`` on that collection.

Every shift takes an HxWx3 uint8 RGB image and its HxW uint8 mask at the network's size and returns both, the mask
moved with the image where the geometry changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..errors import InvalidInputError

Pair = Tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Shift:
    name: str
    what: str
    fn: Callable[[np.ndarray, np.ndarray], Pair]

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Pair:
        image, mask = self.fn(image, mask)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


SHIFTS: Dict[str, Shift] = {}


def _register(name: str, what: str):
    def add(fn: Callable[[np.ndarray, np.ndarray], Pair]) -> Callable[[np.ndarray, np.ndarray], Pair]:
        SHIFTS[name] = Shift(name, what, fn)
        return fn

    return add


def shift_names() -> List[str]:
    return list(SHIFTS)


def get_shift(name: str) -> Shift:
    if name not in SHIFTS:
        raise InvalidInputError(f"shift {name!r}: expected one of {', '.join(SHIFTS)}")
    return SHIFTS[name]


def _photometric(image: np.ndarray, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``f`` on the image as float RGB in [0, 1], rounded back to uint8 as the training augmentations round."""
    x = np.clip(f(image.astype(np.float32) / 255.0), 0.0, 1.0)
    return (x * 255.0 + 0.5).astype(np.uint8)


def _rescale(image: np.ndarray, mask: np.ndarray, zoom: float) -> Pair:
    """Magnify (zoom > 1, centre crop) or shrink (zoom < 1, mirrored border) about the centre, image and mask alike."""
    import cv2

    h, w = mask.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, zoom)
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return image, mask


@_register("none", "the images as they are")
def _none(image: np.ndarray, mask: np.ndarray) -> Pair:
    return image, mask


@_register("dark", "under-exposed: gamma 1.6 (training: 0.7-1.4)")
def _dark(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _photometric(image, lambda x: x ** 1.6), mask


@_register("bright", "over-exposed: gamma 0.6")
def _bright(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _photometric(image, lambda x: x ** 0.6), mask


@_register("warm", "warm colour cast: red x1.2, blue x0.8 (training: +-10 %)")
def _warm(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _photometric(image, lambda x: x * np.array([1.2, 1.0, 0.8], np.float32)), mask


@_register("cool", "cool colour cast: red x0.8, blue x1.2")
def _cool(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _photometric(image, lambda x: x * np.array([0.8, 1.0, 1.2], np.float32)), mask


@_register("low-contrast", "contrast x0.6 about the mean (training: 0.7-1.35)")
def _low_contrast(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _photometric(image, lambda x: (x - x.mean()) * 0.6 + x.mean()), mask


@_register("grey", "saturation x0.4 (training: 0.6-1.4)")
def _grey(image: np.ndarray, mask: np.ndarray) -> Pair:
    def f(x: np.ndarray) -> np.ndarray:
        gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        return gray + (x - gray) * 0.4

    return _photometric(image, f), mask


@_register("blur", "out of focus: Gaussian blur, sigma 2.5 px at 256x256 (training: up to 1.5)")
def _blur(image: np.ndarray, mask: np.ndarray) -> Pair:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigmaX=2.5), mask


@_register("low-res", "a quarter of the resolution: down 4x (area), back up (bilinear) (training: down to 0.35x)")
def _low_res(image: np.ndarray, mask: np.ndarray) -> Pair:
    import cv2

    h, w = mask.shape
    small = cv2.resize(image, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), mask


@_register("jpeg", "JPEG at quality 15 (training: never)")
def _jpeg(image: np.ndarray, mask: np.ndarray) -> Pair:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 15])
    if not ok:
        raise InvalidInputError(f"shift 'jpeg': OpenCV could not encode a {image.shape} {image.dtype} image")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), mask


@_register("zoom-out", "the lesion at 0.6x its size, mirrored skin around it (training: 0.75-1.33x)")
def _zoom_out(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _rescale(image, mask, 0.6)


@_register("zoom-in", "the lesion at 1.5x its size, the centre cropped")
def _zoom_in(image: np.ndarray, mask: np.ndarray) -> Pair:
    return _rescale(image, mask, 1.5)


@_register("round-field", "a dermoscope's round field of view: black outside a centred circle through the mid-sides, "
                          "the mask cleared there too (`robust` training: never)")
def _round_field(image: np.ndarray, mask: np.ndarray) -> Pair:
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    outside = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 > 1.0
    image, mask = image.copy(), mask.copy()
    image[outside] = 0
    mask[outside] = 0
    return image, mask
