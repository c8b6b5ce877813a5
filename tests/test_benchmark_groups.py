"""The benchmarks' held-out groups: photographers from a PROVENANCE.md's credit lines, breeds from file names."""

from __future__ import annotations

import csv

from imgpipe.benchmarks.groups import known_groups


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _rows(path):
    return list(csv.reader(path.open()))[1:]


def test_photographers_come_from_the_flickr_credits(tmp_path):
    data = tmp_path / "flowers"
    for rel in ("daisy/1.jpg", "daisy/2.jpg", "tulips/3.jpg"):
        _touch(data / rel)
    (data / "PROVENANCE.md").write_text(
        "# flowers\n"
        "    daisy/1.jpg CC-BY by A - https://www.flickr.com/photos/alice/1/\n"
        "    daisy/2.jpg CC-BY by B - https://www.flickr.com/photos/7738710@N06/2/\n"
        "    tulips/3.jpg CC-BY by A - https://www.flickr.com/photos/alice/3/\n"
    )
    path, what = known_groups(data, tmp_path / "groups.csv")
    assert what.startswith("photographer")
    assert _rows(path) == [["daisy/1.jpg", "alice"], ["daisy/2.jpg", "7738710@N06"], ["tulips/3.jpg", "alice"]]


def test_breeds_come_from_numbered_file_names(tmp_path):
    data = tmp_path / "pets"
    for rel in ("cat/Abyssinian_1.jpg", "cat/Bengal_12.jpg", "dog/american_bulldog_3.jpg", "dog/pug_4.jpg"):
        _touch(data / rel)
    path, what = known_groups(data, tmp_path / "groups.csv")
    assert what.startswith("breed")
    assert [g for _, g in _rows(path)] == ["Abyssinian", "Bengal", "american_bulldog", "pug"]


def test_a_dataset_that_reveals_no_groups_gets_none(tmp_path):
    data = tmp_path / "plain"
    for rel in ("a/IMG_0001.jpg", "b/photo.jpg"):
        _touch(data / rel)
    assert known_groups(data, tmp_path / "groups.csv") is None
