"""Image and mask file I/O through OpenCV, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from ..errors import DataError

PathLike = Union[str, Path]
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise DataError(f"{path}: file is empty")
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """OpenCV decodes a cut-off JPEG/PNG without failing, filling the rest with grey; check the end markers."""
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-64:]:
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker); re-download or remove it")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        raise DataError(f"{path}: truncated PNG (no IEND chunk); re-download or remove it")


def read_image(path: PathLike) -> np.ndarray:
    """An HxWx3 uint8 RGB image (grayscale and RGBA files are converted; 16-bit is scaled to 8-bit)."""
    import cv2

    path = Path(path)
    data = _read_bytes(path)
    _check_complete(path, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: not a readable image (expected one of {', '.join(IMAGE_EXTS)})")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {img.dtype}; expected 8- or 16-bit")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """Any mask encoding -> HxW uint8 in {0, 1}.

    Handles 0/1 and 0/255 masks, JPEG-style noise around those values, 1-bit BMPs (read as 0/255) and RGB masks
    (a pixel is lesion if any channel is). Values above half of the mask's maximum count as lesion; an all-zero mask
    stays empty.
    """
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    m = m.astype(np.float32)
    peak = float(m.max()) if m.size else 0.0
    if peak <= 0:
        return np.zeros(m.shape, np.uint8)
    thr = 0.5 if peak <= 1.0 else peak / 2.0
    return (m > thr).astype(np.uint8) if peak > 1.0 else (m >= thr).astype(np.uint8)


def read_mask(path: PathLike) -> np.ndarray:
    import cv2

    path = Path(path)
    data = _read_bytes(path)
    _check_complete(path, data)
    m = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise DataError(f"{path}: not a readable mask image")
    return binarize_mask(m)


def write_png_atomic(path: PathLike, image: np.ndarray) -> Path:
    """Write an RGB (HxWx3) or single-channel image as PNG via a temporary file and rename."""
    import os

    import cv2

    path = Path(path)
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise DataError(f"{path}: could not encode PNG")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path
