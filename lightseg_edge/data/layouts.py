"""Readers for the official dataset layouts. Images and masks are paired by case id, never by listing order.

Supported (auto-detected from the root folder):
- ``isic2016``: ISBI2016_ISIC_Part1_{Training,Test}_Data/ISIC_x.jpg + ..._GroundTruth/ISIC_x_Segmentation.png
- ``isic2017``: ISIC-2017_{Training,Validation,Test_v2}_Data/ISIC_x.jpg (superpixels and CSVs skipped)
  + ISIC-2017_*_Part1_GroundTruth/ISIC_x_segmentation.png
- ``isic2018``: ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_x.jpg + ISIC2018_Task1_*_GroundTruth/ISIC_x_segmentation.png
- ``ph2``: PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp + IMDxxx_lesion/IMDxxx_lesion.bmp
- ``folder``: images/ + masks/ (mask named like the image, optionally with a _segmentation/_mask/_lesion suffix)
- ``split-folder``: {train,val[,test]}/{images,masks} (EGE-UNet / UCM-Net layout)
A ``split.csv`` (case_id,split) in the root, when present, assigns the splits.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .._hashing import brief_repr, is_regular_file
from ..errors import DataError
from .io import IMAGE_EXTS, PathLike

SPLITS = ("train", "val", "test")
_MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_mask", "_lesion", "_Mask", "")


@dataclass(frozen=True)
class Sample:
    case_id: str
    image: Path
    mask: Optional[Path]
    split: Optional[str] = None


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _split_of(name: str) -> Optional[str]:
    low = name.lower()
    for key, split in (("train", "train"), ("valid", "val"), ("val", "val"), ("test", "test")):
        if key in low:
            return split
    return None


def _pair(images: List[Path], mask_index: Dict[str, Path], split: Optional[str], where: Path, require_masks: bool) -> List[Sample]:
    out = []
    for img in images:
        mask = mask_index.get(img.stem)
        if mask is None and require_masks:
            raise DataError(f"{img}: no mask found for case {img.stem!r} in {where}")
        out.append(Sample(img.stem, img, mask, split))
    return out


def _mask_index(folder: Path, suffix_re: str) -> Dict[str, Path]:
    """case id -> mask path, for mask files named <case><suffix>.<ext>."""
    pat = re.compile(rf"^(?P<id>.+?){suffix_re}$")
    index: Dict[str, Path] = {}
    for p in _images(folder):
        m = pat.match(p.stem)
        if m:
            if m.group("id") in index:
                raise DataError(f"{p}: a second mask for case {m.group('id')!r} (first: {index[m.group('id')]})")
            index[m.group("id")] = p
    return index


def _read_isic(root: Path, image_glob: str, gt_for: Callable[[Path], Optional[Path]], suffix_re: str, require_masks: bool) -> List[Sample]:
    samples: List[Sample] = []
    for img_dir in sorted(root.glob(image_glob)):
        if not img_dir.is_dir():
            continue
        gt_dir = gt_for(img_dir)
        index = _mask_index(gt_dir, suffix_re) if gt_dir is not None and gt_dir.is_dir() else {}
        images = [p for p in _images(img_dir) if "superpixels" not in p.stem]
        samples += _pair(images, index, _split_of(img_dir.name), gt_dir or img_dir, require_masks and bool(index))
    return samples


def _read_isic2016(root: Path, require_masks: bool) -> List[Sample]:
    return _read_isic(root, "ISBI2016_ISIC_Part1_*_Data", lambda d: d.with_name(d.name.replace("_Data", "_GroundTruth")), "_Segmentation", require_masks)


def _read_isic2017(root: Path, require_masks: bool) -> List[Sample]:
    return _read_isic(root, "ISIC-2017_*_Data", lambda d: d.with_name(d.name.replace("_Data", "_Part1_GroundTruth")), "_segmentation", require_masks)


def _read_isic2018(root: Path, require_masks: bool) -> List[Sample]:
    def gt(d: Path) -> Path:
        return d.with_name(d.name.replace("ISIC2018_Task1-2_", "ISIC2018_Task1_").replace("_Input", "_GroundTruth"))

    return _read_isic(root, "ISIC2018_Task1-2_*_Input", gt, "_segmentation", require_masks)


def _ph2_dir(root: Path) -> Path:
    return root / "PH2 Dataset images" if (root / "PH2 Dataset images").is_dir() else root


def _read_ph2(root: Path, require_masks: bool) -> List[Sample]:
    samples = []
    for case in sorted(p for p in _ph2_dir(root).iterdir() if p.is_dir() and re.match(r"IMD\d+$", p.name)):
        img_dir, mask_dir = case / f"{case.name}_Dermoscopic_Image", case / f"{case.name}_lesion"
        imgs = _images(img_dir) if img_dir.is_dir() else []
        if not imgs:
            raise DataError(f"{img_dir}: PH2 case {case.name} has no dermoscopic image")
        masks = _images(mask_dir) if mask_dir.is_dir() else []
        if not masks and require_masks:
            raise DataError(f"{mask_dir}: PH2 case {case.name} has no lesion mask")
        samples.append(Sample(case.name, imgs[0], masks[0] if masks else None, None))
    return samples


def _read_folder(root: Path, require_masks: bool, split: Optional[str] = None) -> List[Sample]:
    images = _images(root / "images")
    suffixes = "|".join(re.escape(s) for s in _MASK_SUFFIXES if s)
    index = _mask_index(root / "masks", rf"(?:{suffixes})?") if (root / "masks").is_dir() else {}
    return _pair(images, index, split, root / "masks", require_masks)


def _read_split_folder(root: Path, require_masks: bool) -> List[Sample]:
    return [s for sp in SPLITS if (root / sp / "images").is_dir() for s in _read_folder(root / sp, require_masks, sp)]


_LAYOUTS: Dict[str, Tuple[Callable[[Path], bool], Callable[[Path, bool], List[Sample]]]] = {
    "isic2018": (lambda r: any(r.glob("ISIC2018_Task1-2_*_Input")), _read_isic2018),
    "isic2017": (lambda r: any(r.glob("ISIC-2017_*_Data")), _read_isic2017),
    "isic2016": (lambda r: any(r.glob("ISBI2016_ISIC_Part1_*_Data")), _read_isic2016),
    "ph2": (lambda r: any(p.is_dir() and re.match(r"IMD\d+$", p.name) for p in _ph2_dir(r).iterdir()), _read_ph2),
    "split-folder": (lambda r: (r / "train" / "images").is_dir(), _read_split_folder),
    "folder": (lambda r: (r / "images").is_dir(), _read_folder),
}
LAYOUTS = tuple(_LAYOUTS)


def detect_layout(root: PathLike) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    for name, (probe, _) in _LAYOUTS.items():
        if probe(root):
            return name
    raise DataError(
        f"{root}: unknown dataset layout; expected one of: ISIC 2016/2017/2018 official folders, 'PH2 Dataset images/', "
        f"images/ + masks/, or {{train,val}}/{{images,masks}}"
    )


def _read_split_csv(csv_path: Path) -> Dict[str, str]:
    """case id -> split from a split.csv. Written by hand or by Excel: a BOM, CRLF and spaces around values are fine;
    an unknown split or a case listed twice with different splits is refused, naming the line."""
    if not is_regular_file(csv_path):  # a folder, a FIFO (whose read would block) or a broken link
        raise DataError(f"{csv_path}: expected a CSV file with columns case_id,split, found something else there; remove it or replace it")
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would otherwise hide the 'case_id' header
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)} for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read it as a UTF-8 CSV ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    if not rows or "case_id" not in rows[0] or "split" not in rows[0]:
        raise DataError(f"{csv_path}: expected a CSV with columns case_id,split")
    split: Dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case, value = row.get("case_id", ""), row.get("split", "").lower()
        if value not in SPLITS:
            raise DataError(f"{csv_path}: line {line}: split {brief_repr(row.get('split'), 40)} for case {brief_repr(case, 60)}; expected one of {', '.join(SPLITS)}")
        if split.setdefault(case, value) != value:
            raise DataError(f"{csv_path}: line {line}: case {brief_repr(case, 60)} is listed again with split {value!r} (first: {split[case]!r})")
    return split


def _apply_split_csv(samples: List[Sample], csv_path: Path) -> List[Sample]:
    split = _read_split_csv(csv_path)
    out = []
    for s in samples:
        if s.case_id not in split:
            raise DataError(f"{csv_path}: case {s.case_id!r} ({s.image}) is not listed")
        out.append(replace(s, split=split[s.case_id]))
    return out


def hash_split(case_id: str, val_fraction: float = 0.1) -> str:
    """Deterministic train/val assignment for data without any split (sha256 of the case id)."""
    h = int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def list_samples(root: PathLike, split: Optional[str] = None, layout: Optional[str] = None, require_masks: bool = True) -> List[Sample]:
    """All samples of a dataset root, optionally of one split ('train', 'val', 'test')."""
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout not in _LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    samples = _LAYOUTS[layout][1](root, require_masks)
    if not samples:
        raise DataError(f"{root}: no images found in the {layout} layout")
    ids = [s.case_id for s in samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise DataError(f"{root}: duplicate case ids {dup}")
    if (root / "split.csv").exists() or (root / "split.csv").is_symlink():  # a folder or broken link there is an error too
        samples = _apply_split_csv(samples, root / "split.csv")
    elif all(s.split is None for s in samples):
        samples = [replace(s, split=hash_split(s.case_id)) for s in samples]
    if split is not None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        samples = [s for s in samples if s.split == split]
        if not samples:
            raise DataError(f"{root}: no samples in split {split!r}")
    return samples


def describe_data(root: PathLike, layout: str, split: str, count: int, available: Optional[int] = None, what: str = "data") -> str:
    """The one line every command prints about the data it used, in the same words everywhere: which folder (the
    default --data is picked from the environment, so it must be named), read as which layout, which split, how many
    images (and of how many, when only some are used)."""
    of = f" of {available}" if available is not None and available != count else ""
    return f"{what}: {Path(root).resolve()} ({layout} layout), split {split}: {count}{of} images"


def find_layout(root: PathLike) -> Optional[str]:
    """``detect_layout``, or None for a folder in no known dataset layout (a plain folder of images, say)."""
    try:
        return detect_layout(root)
    except DataError:
        return None


def plain_images(root: Path, split: Optional[str] = None) -> List[Sample]:
    """The image files directly in ``root`` as samples without masks, sorted, hidden files skipped."""
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    return [Sample(p.stem, p, None, split) for p in files]
