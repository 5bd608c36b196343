"""Builders of every official dataset layout from the committed real ISIC sample."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_bmp_1bit(path: Path, mask01: np.ndarray) -> None:
    """A 1-bit palette BMP as PH2 ships (OpenCV writes no 1-bit BMPs)."""
    h, w = mask01.shape
    row_bytes = ((w + 31) // 32) * 4
    rows = []
    for y in range(h - 1, -1, -1):  # bottom-up
        bits = np.packbits(mask01[y].astype(np.uint8)).tobytes()
        rows.append(bits + b"\0" * (row_bytes - len(bits)))
    pixels = b"".join(rows)
    palette = b"\0\0\0\0" + b"\xff\xff\xff\0"
    offset = 14 + 40 + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 1, 0, len(pixels), 2835, 2835, 2, 2)
    path.write_bytes(header + info + palette + pixels)


def _pairs(sample_dir: Path):
    for img in sorted((sample_dir / "images").glob("*.jpg")):
        yield img.stem, img, sample_dir / "masks" / f"{img.stem}_segmentation.png"


@pytest.fixture
def make_layout(sample_dir, tmp_path):
    def make(kind: str) -> Path:
        root = tmp_path / kind
        pairs = list(_pairs(sample_dir))
        if kind == "isic2018":
            for split, chunk in (("Training", pairs[:6]), ("Validation", pairs[6:])):
                (root / f"ISIC2018_Task1-2_{split}_Input").mkdir(parents=True)
                (root / f"ISIC2018_Task1_{split}_GroundTruth").mkdir(parents=True)
                for cid, img, m in chunk:
                    shutil.copy(img, root / f"ISIC2018_Task1-2_{split}_Input" / img.name)
                    shutil.copy(m, root / f"ISIC2018_Task1_{split}_GroundTruth" / m.name)
        elif kind == "isic2017":
            d, g = root / "ISIC-2017_Training_Data", root / "ISIC-2017_Training_Part1_GroundTruth"
            d.mkdir(parents=True), g.mkdir(parents=True)
            for cid, img, m in pairs:
                shutil.copy(img, d / img.name)
                shutil.copy(m, g / m.name)
                cv2.imwrite(str(d / f"{cid}_superpixels.png"), np.zeros((8, 8, 3), np.uint8))
            (d / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id,age\n")
        elif kind == "isic2016":
            d, g = root / "ISBI2016_ISIC_Part1_Training_Data", root / "ISBI2016_ISIC_Part1_Training_GroundTruth"
            d.mkdir(parents=True), g.mkdir(parents=True)
            for cid, img, m in pairs:
                shutil.copy(img, d / img.name)
                shutil.copy(m, g / f"{cid}_Segmentation.png")
        elif kind == "ph2":
            base = root / "PH2 Dataset images"
            for i, (cid, img, m) in enumerate(pairs):
                case = f"IMD{i + 2:03d}"
                (base / case / f"{case}_Dermoscopic_Image").mkdir(parents=True)
                (base / case / f"{case}_lesion").mkdir(parents=True)
                cv2.imwrite(str(base / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp"), cv2.imread(str(img)))
                mask = cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 127
                if i % 2:
                    write_bmp_1bit(base / case / f"{case}_lesion" / f"{case}_lesion.bmp", mask)
                else:  # 24-bit BMP mask
                    cv2.imwrite(str(base / case / f"{case}_lesion" / f"{case}_lesion.bmp"), np.repeat(mask[..., None] * 255, 3, 2).astype(np.uint8))
        elif kind == "folder":
            shutil.copytree(sample_dir / "images", root / "images")
            shutil.copytree(sample_dir / "masks", root / "masks")
        elif kind == "split-folder":
            for split, chunk in (("train", pairs[:5]), ("val", pairs[5:])):
                (root / split / "images").mkdir(parents=True)
                (root / split / "masks").mkdir(parents=True)
                for cid, img, m in chunk:
                    shutil.copy(img, root / split / "images" / img.name)
                    shutil.copy(m, root / split / "masks" / f"{cid}.png")
        return root

    return make
