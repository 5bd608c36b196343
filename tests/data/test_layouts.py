from __future__ import annotations


import cv2
import numpy as np
import pytest

from lightseg_edge.data import detect_layout, list_samples, read_image, read_mask
from lightseg_edge.data.augment import Augmentation
from lightseg_edge.data.dataset import SegmentationDataset, load_pair
from lightseg_edge.errors import DataError
from lightseg_edge.types import PreprocessConfig

LAYOUTS = ["isic2018", "isic2017", "isic2016", "ph2", "folder", "split-folder"]


@pytest.mark.parametrize("kind", LAYOUTS)
def test_every_layout_is_detected_and_paired_by_case_id(make_layout, kind):
    root = make_layout(kind)
    assert detect_layout(root) == kind
    samples = list_samples(root)
    assert len(samples) == 8
    for s in samples:
        assert s.image.stem == s.case_id
        assert s.mask.stem.startswith(s.case_id), f"{s.mask} paired with {s.image}"
        img, mask = load_pair(s, (64, 64))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1} and mask.any()


def test_isic2017_skips_superpixels_and_csv(make_layout):
    samples = list_samples(make_layout("isic2017"))
    assert all("superpixels" not in s.image.name and s.image.suffix == ".jpg" for s in samples)


def test_official_split_folders_give_splits(make_layout):
    root = make_layout("isic2018")
    assert {s.split for s in list_samples(root)} == {"train", "val"}
    assert len(list_samples(root, "val")) == 2


def test_split_csv_assigns_splits(sample_dir):
    assert [s.case_id for s in list_samples(sample_dir, "test")] == ["ISIC_0000018", "ISIC_0000026"]


def test_ph2_1bit_and_24bit_masks_agree_with_source(make_layout, sample_dir):
    ph2 = list_samples(make_layout("ph2"))
    sources = sorted((sample_dir / "masks").iterdir())
    assert len(ph2) == len(sources)
    for s, src in zip(ph2, sources):  # IMD002.. were written in the sample's sorted order, alternating 24-bit / 1-bit
        expected = (cv2.imread(str(src), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        assert np.array_equal(read_mask(s.mask), expected), s.mask


def test_missing_mask_names_the_case_instead_of_shifting_pairs(make_layout):
    root = make_layout("isic2018")
    victim = sorted((root / "ISIC2018_Task1_Training_GroundTruth").iterdir())[2]
    victim.unlink()
    with pytest.raises(DataError, match=victim.name.replace("_segmentation.png", "")):
        list_samples(root)


def test_truncated_jpeg_is_reported(tmp_path, sample_dir):
    src = next((sample_dir / "images").iterdir())
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    with pytest.raises(DataError, match="truncated JPEG"):
        read_image(bad)


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="x.png"):
        read_image(tmp_path / "x.png")
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / "e.jpg")
    with pytest.raises(DataError, match="missing.jpg: cannot read file"):
        read_image(tmp_path / "missing.jpg")


def test_size_mismatch_names_both_files(make_layout):
    root = make_layout("folder")
    s = list_samples(root)[0]
    cv2.imwrite(str(s.mask), np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match="mask is 12x10"):
        load_pair(s, (64, 64))


def test_empty_and_unknown_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no images"):
        list_samples(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="unknown dataset layout"):
        list_samples(tmp_path / "other")
    with pytest.raises(DataError, match="not found"):
        list_samples(tmp_path / "nope")


def test_augmentation_is_per_sample_and_reproducible(sample_dir):
    samples = list_samples(sample_dir, "train")
    ds = SegmentationDataset([samples[0]] * 6, PreprocessConfig(size=(64, 64)), augment=Augmentation.PAPER, seed=1)
    views = [ds[i][0].numpy() for i in range(6)]
    assert any(not np.array_equal(views[0], v) for v in views[1:]), "every sample got the same augmentation"
    assert np.array_equal(ds[3][0].numpy(), views[3])  # same (seed, epoch, index) -> same view
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i][0].numpy(), views[i]) for i in range(6))
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64) and set(np.unique(y.numpy())) <= {0.0, 1.0}
