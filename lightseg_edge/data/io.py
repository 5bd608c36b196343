"""Image and mask file I/O through OpenCV, with errors that name the file.

Reading checks before it decodes: the file must be a JPEG, PNG, BMP, TIFF or WebP (by its bytes, not its name) and
its header must announce at most ``MAX_IMAGE_PIXELS`` pixels. A decoder allocates what the header announces: a
14 MB JPEG whose frame header says 30000x30000 makes OpenCV take 5.4 GB before anything could refuse it.
"""

from __future__ import annotations

import numbers
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from .._hashing import path_argument, shown
from ..errors import DataError, InvalidInputError

PathLike = Union[str, Path]
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WebP")

# The largest ISIC dermoscopy images are 6688x4439 (~30 MP); 100 MP leaves room for higher-resolution dermatoscopes
# and 50 MP clinical cameras, bounds a decode at ~300 MB (8-bit RGB; 800 MB for 16-bit RGBA), which a 4 GB Jetson
# survives, and equals the predictors' own limit for arrays (data.transforms.MAX_IMAGE_PIXELS), so a file that
# reads is never refused later for its size. Raise it per call (max_pixels=) or per process (the variable below).
MAX_IMAGE_PIXELS = 100_000_000
MAX_PIXELS_ENV = "LIGHTSEG_MAX_IMAGE_PIXELS"


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


class _BadHeader(Exception):
    """A header that cannot be parsed; read_image turns it into a DataError naming the file."""


def pixel_limit(max_pixels: Optional[int] = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else $LIGHTSEG_MAX_IMAGE_PIXELS, else ``MAX_IMAGE_PIXELS``."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return MAX_IMAGE_PIXELS
        try:
            max_pixels = int(text.replace("_", ""))
        except ValueError:
            max_pixels = 0
        if max_pixels < 1:
            raise InvalidInputError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels, e.g. 100000000; unset it for the default")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise InvalidInputError(f"max_pixels={max_pixels!r}: expected a positive whole number of pixels")
    return int(max_pixels)


def _u(data: bytes, fmt: str, offset: int) -> int:
    try:
        return struct.unpack_from(fmt, data, offset)[0]
    except struct.error:
        raise _BadHeader("the header is cut short") from None


def _png_size(data: bytes) -> Tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise _BadHeader("the first chunk is not IHDR")
    return _u(data, ">I", 16), _u(data, ">I", 20)


# Frame headers (SOFn) carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, TEM: no length field


def _jpeg_size(data: bytes) -> Tuple[int, int]:
    """Walk the markers as libjpeg does (bytes between segments skipped up to the next 0xFF) to the frame header."""
    i, n = 2, len(data)
    while True:
        i = data.find(b"\xff", i)
        while 0 <= i < n and data[i] == 0xFF:
            i += 1  # fill bytes
        if i < 0 or i >= n:
            raise _BadHeader("no frame header (SOF marker)")
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _BadHeader("the image data starts before any frame header (SOF marker)")
        length = _u(data, ">H", i)
        if marker in _JPEG_SOF:
            return _u(data, ">H", i + 5), _u(data, ">H", i + 3)
        if length < 2:
            raise _BadHeader(f"a segment length of {length} at byte {i}")
        i += length


def _bmp_size(data: bytes) -> Tuple[int, int]:
    if _u(data, "<I", 14) == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _u(data, "<H", 18), _u(data, "<H", 20)
    return abs(_u(data, "<i", 18)), abs(_u(data, "<i", 22))  # a negative height means top-down rows


_TIFF_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8 (BigTIFF)


def _tiff_size(data: bytes) -> Tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first directory: the page OpenCV decodes."""
    bo = "<" if data[:2] == b"II" else ">"
    big = _u(data, bo + "H", 2) == 43
    if big:
        offset, count_fmt, entry, value_at = _u(data, bo + "Q", 8), "Q", 20, 12
    else:
        offset, count_fmt, entry, value_at = _u(data, bo + "I", 4), "H", 12, 8
    count = _u(data, bo + count_fmt, offset)
    first = offset + struct.calcsize(count_fmt)
    if first + count * entry > len(data):
        raise _BadHeader(f"the first directory ({count} entries at byte {offset}) runs past the end of the file")
    size: Dict[int, int] = {}
    for k in range(count):
        at = first + k * entry
        tag, typ = _u(data, bo + "H", at), _u(data, bo + "H", at + 2)
        if tag in (256, 257) and typ in _TIFF_TYPES:
            size[tag] = _u(data, bo + _TIFF_TYPES[typ], at + value_at)
    if len(size) != 2:
        raise _BadHeader("no ImageWidth/ImageLength in the first directory")
    return size[256], size[257]


def _webp_size(data: bytes) -> Tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        return _u(data, "<H", 26) & 0x3FFF, _u(data, "<H", 28) & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":  # lossless: 14-bit sizes minus one
        bits = _u(data, "<I", 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise _BadHeader(f"unknown WebP chunk {chunk!r}")


_SIGNATURES: Tuple[Tuple[Tuple[bytes, ...], str, Callable[[bytes], Tuple[int, int]]], ...] = (
    ((b"\xff\xd8\xff",), "JPEG", _jpeg_size),
    ((b"\x89PNG\r\n\x1a\n",), "PNG", _png_size),
    ((b"BM",), "BMP", _bmp_size),
    ((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF", _tiff_size),
)


def _format_of(data: bytes) -> Optional[Tuple[str, Callable[[bytes], Tuple[int, int]]]]:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp_size
    for prefixes, name, parse in _SIGNATURES:
        if data.startswith(prefixes):
            return name, parse
    return None


def read_header(path: PathLike, data: bytes) -> ImageHeader:
    """Format and size from the first bytes of an image file, without decoding; DataError naming ``path`` otherwise."""
    found = _format_of(data)
    if found is None:
        raise DataError(f"{shown(path)}: not a readable image: expected a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file, "
                        f"found one starting with {data[:8]!r}; convert it or remove it")
    name, parse = found
    try:
        width, height = parse(data)
    except _BadHeader as exc:
        raise DataError(f"{shown(path)}: damaged {name} header ({exc}); re-download or re-export the image") from None
    if width < 1 or height < 1:
        raise DataError(f"{shown(path)}: its {name} header announces an empty {width}x{height} image; re-download or re-export it")
    return ImageHeader(name, width, height)


def _check_size(path: Path, header: ImageHeader, limit: int) -> None:
    if header.width * header.height > limit:
        raise DataError(
            f"{shown(path)}: its {header.format} header announces {header.width}x{header.height} = {header.width * header.height:,} "
            f"pixels, over the {limit:,}-pixel limit; downscale the image, or raise the limit with max_pixels= or "
            f"{MAX_PIXELS_ENV} if this machine has the memory"
        )


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        info = os.stat(path)
        # A FIFO or device never ends (reading /dev/zero fills memory, a FIFO blocks); a regular file larger than any
        # image within the pixel limit (16-bit RGBA, uncompressed, plus headers) is refused before it is read.
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, socket or device)"
            raise DataError(f"{shown(path)}: cannot read it as an image: it is {kind}")
        if info.st_size > 8 * limit + (1 << 20):
            raise DataError(f"{shown(path)}: {info.st_size:,} bytes, more than an image within the {limit:,}-pixel limit can take; "
                            f"downscale it, or raise the limit with max_pixels= or {MAX_PIXELS_ENV}")
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{shown(path)}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise DataError(f"{shown(path)}: file is empty")
    return data


def _check_complete(path: Path, data: bytes) -> None:
    """OpenCV decodes a cut-off JPEG/PNG without failing, filling the rest with grey; check the end markers."""
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in data[-64:]:
        raise DataError(f"{shown(path)}: truncated JPEG (no end-of-image marker); re-download or remove it")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        raise DataError(f"{shown(path)}: truncated PNG (no IEND chunk); re-download or remove it")


def _decode(path: Path, max_pixels: Optional[int], what: str) -> np.ndarray:
    """The decoded array, after every check that can be made on the bytes (format, announced size, completeness)."""
    import cv2

    limit = pixel_limit(max_pixels)
    data = _read_bytes(path, limit)
    header = read_header(path, data)
    _check_size(path, header, limit)
    _check_complete(path, data)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # a damaged stream can trip an assertion inside a codec
        raise DataError(f"{shown(path)}: cannot decode this {header.format} ({' '.join(str(exc).split())[-160:]}); re-download or remove it") from exc
    if img is None or img.size == 0:
        raise DataError(f"{shown(path)}: not a readable {what}: the {header.format} data is damaged; re-download or remove it")
    if img.shape[0] * img.shape[1] > limit:  # the header and the decoder disagree: still refuse the result
        raise DataError(f"{shown(path)}: decoded to {img.shape[1]}x{img.shape[0]}, over the {limit:,}-pixel limit")
    return img


def read_image(path: PathLike, max_pixels: Optional[int] = None) -> np.ndarray:
    """An HxWx3 uint8 RGB image (grayscale and RGBA files are converted; 16-bit is scaled to 8-bit).

    ``max_pixels``: refuse (DataError) a file whose header announces more pixels, before decoding it; default
    ``$LIGHTSEG_MAX_IMAGE_PIXELS`` or ``MAX_IMAGE_PIXELS``.
    """
    import cv2

    path = path_argument(path, "read_image")
    img = _decode(path, max_pixels, "image")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"{shown(path)}: unsupported pixel type {img.dtype}; expected 8- or 16-bit")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if img.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise DataError(f"{shown(path)}: {channels} colour channels; expected a grey, RGB or RGBA image")
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if channels == 4:
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


def read_mask(path: PathLike, max_pixels: Optional[int] = None) -> np.ndarray:
    """An HxW uint8 mask in {0, 1} (see ``binarize_mask``); the same checks before decoding as ``read_image``."""
    return binarize_mask(_decode(path_argument(path, "read_mask"), max_pixels, "mask image"))


def write_png_atomic(path: PathLike, image: np.ndarray) -> Path:
    """Write an RGB (HxWx3) or single-channel image as PNG via a temporary file and rename (OutputError if it cannot)."""
    import cv2

    from .._atomic import write_bytes_atomic

    path = Path(path)
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise DataError(f"{path}: could not encode PNG")
    return write_bytes_atomic(path, buf.tobytes())
