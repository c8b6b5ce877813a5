"""Dataset scanning: what counts as an image, split stability, and the errors a user can run into."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgpipe.pipeline.config import SplitFractions
from imgpipe.pipeline.core.errors import ConfigError, DatasetError
from imgpipe.pipeline.data.dataset import assign_splits, scan_dataset


def _save(path, mode="RGB", size=(40, 30), color=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size[::-1]).astype(np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    img.save(path, **kw)
    return path


def _dataset(tmp_path, per_class=5, classes=("a", "b")):
    for c in classes:
        for i in range(per_class):
            _save(tmp_path / c / f"{c}{i}.png")
    return tmp_path


def test_labels_are_sorted_folder_names_and_images_decoded_to_rgb(tmp_path):
    _dataset(tmp_path, classes=("zebra", "apple", "mango"))
    index = scan_dataset(tmp_path)
    assert index.labels == ["apple", "mango", "zebra"]
    pixels = index.photos(None, 32).decode(range(15))
    assert pixels.shape == (15, 32, 32, 3) and pixels.dtype == np.uint8
    assert [index.labels[e.label] for e in index.entries] == [e.relpath.split("/")[0] for e in index.entries]


def test_every_suffix_and_colour_mode_is_accepted(tmp_path):
    files = [
        _save(tmp_path / "a" / "gray.JPG", "L", format="JPEG"),
        _save(tmp_path / "a" / "palette.gif", "P"),
        _save(tmp_path / "a" / "alpha.PNG", "RGBA"),
        _save(tmp_path / "a" / "cmyk.jpeg", "CMYK", format="JPEG"),
        _save(tmp_path / "b" / "deep.png", "I;16"),
        _save(tmp_path / "b" / "bitmap.Bmp", "RGB", format="BMP"),
        _save(tmp_path / "b" / "modern.webp", "RGB", format="WEBP"),
    ]
    index = scan_dataset(tmp_path)
    assert len(index.entries) == len(files)
    assert index.photos(None, 24).sample(10).shape == (len(files), 24, 24, 3)
    assert not index.problems


def test_sixteen_bit_images_keep_their_brightness(tmp_path):
    path = tmp_path / "a" / "x.png"
    path.parent.mkdir()
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(path)
    from imgpipe.pipeline.core.preprocessing import load_image

    assert load_image(path, 8).min() == 255


def test_unreadable_files_are_reported_and_left_out(tmp_path, caplog):
    _dataset(tmp_path, per_class=3)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "a" / "notes.txt").write_text("hello")
    index = scan_dataset(tmp_path)
    assert len(index.entries) == 6
    assert any("broken.jpg" in p for p in index.problems)
    assert any("notes.txt" in p for p in index.problems)
    assert any("broken.jpg" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda root: None, "class folder"),
        (lambda root: _dataset(root, classes=("only",)), "at least 2"),
        (lambda root: (_dataset(root), (root / "empty").mkdir()), "empty class folder"),
        (lambda root: (_dataset(root), _save(root / "c" / "one.png")), "1 readable image"),
    ],
)
def test_unusable_datasets_are_clear_errors(tmp_path, setup, fragment):
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    with pytest.raises(DatasetError, match=fragment):
        scan_dataset(root)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        scan_dataset(tmp_path / "nowhere")


def test_split_of_a_file_does_not_change_when_the_dataset_grows():
    small = [f"a/img{i}.jpg" for i in range(200)]
    grown = small + [f"a/new{i}.jpg" for i in range(300)]
    before = assign_splits(small, [0] * len(small), SplitFractions())
    after = assign_splits(grown, [0] * len(grown), SplitFractions())
    assert after[:200] == before


def test_split_proportions_follow_the_fractions():
    paths = [f"c/{i}.png" for i in range(5000)]
    splits = assign_splits(paths, [0] * 5000, SplitFractions(0.7, 0.2, 0.1))
    assert splits.count("train") / 5000 == pytest.approx(0.7, abs=0.03)
    assert splits.count("val") / 5000 == pytest.approx(0.2, abs=0.03)


def test_every_class_with_three_images_gets_val_and_test(tmp_path):
    for c in "abcdefgh":
        for i in range(3):
            _save(tmp_path / c / f"{i}.png", size=(8, 8))
    index = scan_dataset(tmp_path)
    for counts in index.counts().values():
        assert counts["train"] >= 1 and counts["val"] >= 1 and counts["test"] >= 1


def test_digest_changes_with_content_and_not_with_scan_order(tmp_path):
    _dataset(tmp_path)
    first = scan_dataset(tmp_path).digest
    assert scan_dataset(tmp_path).digest == first
    _save(tmp_path / "a" / "a0.png", size=(41, 30))
    assert scan_dataset(tmp_path).digest != first


def test_a_rescan_reads_only_files_whose_size_or_time_changed(tmp_path, monkeypatch):
    _dataset(tmp_path)
    memo: dict = {}
    first = scan_dataset(tmp_path, memo=memo)
    read = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real_read(self))
    assert scan_dataset(tmp_path, memo=memo).digest == first.digest and read == []
    edited = tmp_path / "a" / "a1.png"
    _save(edited, size=(40, 31))  # new content, new time
    again = scan_dataset(tmp_path, memo=memo)
    assert read == ["a1.png"] and again.digest != first.digest
    assert memo["files"][str(edited.resolve())][2] == next(e.sha256 for e in again.entries if e.relpath == "a/a1.png")


def test_identical_files_across_classes_are_flagged(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "b" / "copy.png").write_bytes((tmp_path / "a" / "a0.png").read_bytes())
    index = scan_dataset(tmp_path)
    assert any("different classes" in p and "copy.png" in p for p in index.problems)


def test_bad_split_fractions_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="add up to 1"):
        scan_dataset(tmp_path, SplitFractions(0.5, 0.1, 0.1))


def test_nested_folders_keep_distinct_identities_and_splits(tmp_path):
    """`daisy/2019/x.jpg` and `roses/2019/x.jpg` are two photos: their identity is the whole path in the dataset."""
    for c in ("daisy", "roses"):
        for i in range(4):
            _save(tmp_path / c / "2019" / f"{c}{i}.png")
        _save(tmp_path / c / "2019" / "x.png", size=(41 if c == "daisy" else 43, 30))
    index = scan_dataset(tmp_path)
    paths = [e.relpath for e in index.entries]
    assert {"daisy/2019/x.png", "roses/2019/x.png"} <= set(paths) and len(set(paths)) == len(paths)
    splits = dict(zip(paths, assign_splits(paths, [e.label for e in index.entries], SplitFractions())))
    assert splits == {e.relpath: e.split for e in index.entries}


def test_unknown_classes_are_rejected_when_evaluating_against_known_labels(tmp_path):
    _dataset(tmp_path, classes=("a", "b", "c"))
    with pytest.raises(DatasetError, match="c are not among"):
        scan_dataset(tmp_path, allowed_labels=["a", "b"])


def test_two_photos_with_the_same_nested_name_get_their_own_splits(tmp_path):
    """With the class in the identity, `daisy/2019/x.png` and `roses/2019/x.png` are split independently: some
    such pair lands in different splits (with `2019/x.png` as identity every pair shared one)."""
    from imgpipe.pipeline.data.dataset import _split_for, _stable_unit

    name = next(
        f"x{i}.png"
        for i in range(1000)
        if _split_for(_stable_unit(f"daisy/2019/x{i}.png"), SplitFractions())
        != _split_for(_stable_unit(f"roses/2019/x{i}.png"), SplitFractions())
    )
    for c in ("daisy", "roses"):
        for i in range(3):
            _save(tmp_path / c / f"{c}{i}.png")
        _save(tmp_path / c / "2019" / name, size=(41 if c == "daisy" else 43, 30))
    splits = {e.relpath: e.split for e in scan_dataset(tmp_path).entries}
    assert splits[f"daisy/2019/{name}"] != splits[f"roses/2019/{name}"]


# --- symbolic links: followed inside the dataset folder only, every real file once ------------------------------


def _problem(index, path: str) -> str:
    (found,) = [p for p in index.problems if p.startswith(f"{path}:")]
    return found


def test_a_folder_link_back_to_the_dataset_is_neither_a_class_nor_more_images(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "loop").symlink_to(".")
    (tmp_path / "a" / "again").symlink_to("..")
    (tmp_path / "a" / "self").symlink_to(".")
    index = scan_dataset(tmp_path)
    assert index.labels == ["a", "b"] and len(index.entries) == 10
    assert "back to the dataset folder" in _problem(index, "loop")
    assert "back to the dataset folder" in _problem(index, "a/again")
    assert "already searched" in _problem(index, "a/self")


def test_a_file_link_inside_the_dataset_is_one_image_not_two(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "a" / "alias.png").symlink_to("a0.png")
    (tmp_path / "b" / "a0_as_b.png").symlink_to("../a/a1.png")  # the same photo under another label
    index = scan_dataset(tmp_path)
    paths = sorted(e.relpath for e in index.entries)
    assert len(paths) == 10 and "a/a0.png" in paths and "a/a1.png" in paths
    assert "a/alias.png" not in paths and "b/a0_as_b.png" not in paths
    assert "counted once" in _problem(index, "a/alias.png")
    assert "a/a1.png" in _problem(index, "b/a0_as_b.png")


def test_links_that_leave_the_dataset_are_reported_and_left_out(tmp_path):
    data = _dataset(tmp_path / "data")
    outside = _dataset(tmp_path / "elsewhere", classes=("c",))
    (data / "a" / "secret.png").symlink_to(outside / "c" / "c0.png")
    (data / "a" / "more").symlink_to(outside / "c")
    (data / "c").symlink_to(outside / "c")  # a whole class from elsewhere
    (data / "b" / "gone.png").symlink_to(data / "b" / "missing.png")
    index = scan_dataset(data)
    assert index.labels == ["a", "b"] and len(index.entries) == 10
    for path in ("a/secret.png", "a/more", "c"):
        assert "outside the dataset folder, left out" in _problem(index, path)
    assert "a link to nothing" in _problem(index, "b/gone.png")
    assert not any(str(tmp_path) in p for p in index.problems), "problems go into the manifest: no machine paths"


def test_links_inside_the_dataset_are_followed(tmp_path):
    """A class kept in a hidden folder and linked in, and a sub-folder linked into a class, are read; a link into
    another class's folder would give its photos a second label and is not followed."""
    _dataset(tmp_path)
    for i in range(3):
        _save(tmp_path / ".raw" / "c" / f"c{i}.png")
        _save(tmp_path / ".raw" / "extra" / f"e{i}.png")
    (tmp_path / "c").symlink_to(".raw/c")
    (tmp_path / "a" / "extra").symlink_to("../.raw/extra")
    (tmp_path / "b" / "stolen").symlink_to("../a")
    index = scan_dataset(tmp_path)
    assert index.labels == ["a", "b", "c"]
    paths = {e.relpath for e in index.entries}
    assert {"c/c0.png", "a/extra/e2.png"} <= paths and len(paths) == 16
    assert "class 'a'" in _problem(index, "b/stolen")
