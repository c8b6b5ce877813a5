"""Near-duplicate photos and groups: a copy or crop of a photo never sits in another split than the photo."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image

from imgpipe.pipeline.config import SplitFractions
from imgpipe.pipeline.core.errors import DatasetError
from imgpipe.pipeline.data.dataset import scan_dataset
from imgpipe.pipeline.data.near_duplicates import COSINE, cosine_bar, feature_pairs, groups_of


def _photo(seed: int, size=(96, 72)) -> Image.Image:
    """A smooth random photo-like image (low frequencies dominate, as in photos, so a resize keeps its hash)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def _dataset(root, per_class=12):
    for label in ("a", "b"):
        for i in range(per_class):
            (root / label).mkdir(parents=True, exist_ok=True)
            _photo(zlib.crc32(f"{label}{i}".encode())).save(root / label / f"{label}{i:02d}.png")
    return root


def _split_of(index, relpath):
    return next(e.split for e in index.entries if e.relpath == relpath)


def test_a_resized_reencoded_copy_lands_in_the_split_of_its_photo_and_is_reported(tmp_path):
    root = _dataset(tmp_path)
    for i in range(12):  # a copy of every photo of class a, so some original sits outside train
        copy = Image.open(root / "a" / f"a{i:02d}.png").resize((80, 60), Image.BILINEAR)
        copy.save(root / "a" / f"copy{i:02d}.jpg", quality=85)
    index = scan_dataset(root)
    for i in range(12):
        assert _split_of(index, f"a/a{i:02d}.png") == _split_of(index, f"a/copy{i:02d}.jpg")
    assert {_split_of(index, f"a/a{i:02d}.png") for i in range(12)} >= {"train", "test"}
    notes = [p for p in index.problems if p.startswith("near-duplicate photos (perceptual hash)")]
    assert notes and "a/a00.png ~ a/copy00.jpg" in notes[0]


def test_distinct_photos_are_not_grouped(tmp_path):
    index = scan_dataset(_dataset(tmp_path))
    assert len({e.group for e in index.entries}) == len(index.entries)
    assert not [p for p in index.problems if p.startswith("near-duplicate")]


def test_a_groups_file_keeps_each_group_in_one_split(tmp_path):
    root = _dataset(tmp_path / "data", per_class=20)
    rows = ["path,group"] + [f"{c}/{c}{i:02d}.png,person{i % 4}" for c in "ab" for i in range(20)]
    groups = tmp_path / "groups.csv"
    groups.write_text("\n".join(rows) + "\n")
    index = scan_dataset(root, groups_file=groups)
    for person in range(4):
        splits = {_split_of(index, f"{c}/{c}{i:02d}.png") for c in "ab" for i in range(person, 20, 4)}
        assert len(splits) == 1
    assert {e.split for e in index.entries} == {"train", "val", "test"}


def test_a_groups_file_naming_missing_photos_is_reported(tmp_path):
    root = _dataset(tmp_path / "data")
    groups = tmp_path / "groups.csv"
    groups.write_text("a/a00.png,x\na/gone.png,x\n")
    index = scan_dataset(root, groups_file=groups)
    assert any("1 path(s) not in the dataset, e.g. a/gone.png" in p for p in index.problems)


@pytest.mark.parametrize("content", ["a/a00.png\n", "a/a00.png,\n", ",g\n"])
def test_a_malformed_groups_file_is_one_clear_error(tmp_path, content):
    root = _dataset(tmp_path / "data")
    groups = tmp_path / "groups.csv"
    groups.write_text(content)
    with pytest.raises(DatasetError, match=r"groups.csv: line 1 is not 'path,group'"):
        scan_dataset(root, groups_file=groups)


def test_a_missing_groups_file_is_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"nope.csv: cannot read the groups file"):
        scan_dataset(_dataset(tmp_path / "data"), groups_file=tmp_path / "nope.csv")


def test_groups_that_leave_no_test_photo_stop_the_build_before_training(tmp_path):
    root = _dataset(tmp_path / "data", per_class=4)
    groups = tmp_path / "groups.csv"
    groups.write_text("".join(f"{c}/{c}{i:02d}.png,one\n" for c in "ab" for i in range(4)))
    index = scan_dataset(root, groups_file=groups)
    with pytest.raises(DatasetError, match=r"no photo landed in the (val|test) split \(8 photos in 1 groups\)"):
        index.check_splits(SplitFractions())


def test_features_pair_a_crop_with_its_photo_within_a_class_only():
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(40, 64)))  # ReLU-like features of distinct photos: cosine about 0.6-0.7
    labels = np.repeat([0, 1], 20)
    features[7] = features[3] + 0.05 * np.abs(rng.normal(size=64))  # a crop of photo 3
    features[30] = features[3]  # the same features in another class are not searched by features
    pairs, skipped = feature_pairs(features, labels)
    assert pairs == [(3, 7)] and skipped == []


def test_a_class_the_backbone_finds_all_alike_is_not_chained_into_one_group():
    rng = np.random.default_rng(1)
    base = np.abs(rng.normal(size=64))
    features = base + 0.15 * np.abs(rng.normal(size=(30, 64)))  # every pair above COSINE
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert (unit @ unit.T).min() >= COSINE
    assert cosine_bar(unit) > COSINE
    features[5] = features[9] * 1.01  # one true copy among them
    pairs, _ = feature_pairs(features, np.zeros(30, dtype=int))
    assert pairs == [(5, 9)]


def test_classes_over_the_limit_are_skipped_and_said():
    features = np.eye(6)
    pairs, skipped = feature_pairs(features, np.array([0, 0, 0, 0, 1, 1]), limit=3)
    assert skipped == [0] and pairs == []


def test_groups_follow_chains_of_pairs():
    assert groups_of(6, [(4, 5), (1, 4), (2, 3)]) == [0, 1, 2, 2, 1, 1]
