"""The benchmarks' held-out groups: photographers from a PROVENANCE.md's credit lines, breeds from file names."""

from __future__ import annotations

import csv

from imgpipe.benchmarks.groups import known_groups, write_groups
from imgpipe.pipeline.config import SplitFractions
from imgpipe.pipeline.data.dataset import assign_splits


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
    rows, what = known_groups(data)
    assert what.startswith("photographer")
    assert _rows(write_groups(rows, tmp_path / "groups.csv")) == [
        ["daisy/1.jpg", "alice"],
        ["daisy/2.jpg", "7738710@N06"],
        ["tulips/3.jpg", "alice"],
    ]


def test_breeds_come_from_numbered_file_names(tmp_path):
    data = tmp_path / "pets"
    for rel in ("cat/Abyssinian_1.jpg", "cat/Bengal_12.jpg", "dog/american_bulldog_3.jpg", "dog/pug_4.jpg"):
        _touch(data / rel)
    rows, what = known_groups(data)
    assert what.startswith("breed")
    assert [g for _, g in rows] == ["Abyssinian", "Bengal", "american_bulldog", "pug"]


def test_a_dataset_that_reveals_no_groups_gets_none(tmp_path):
    data = tmp_path / "plain"
    for rel in ("a/IMG_0001.jpg", "b/photo.jpg"):
        _touch(data / rel)
    assert known_groups(data) is None


def test_each_draw_renames_every_group_alike_and_so_splits_the_same_groups_another_way(tmp_path):
    rows = [(f"c{i % 2}/{i}.jpg", f"person{i // 3}") for i in range(120)]  # 40 groups of 3 photos
    drawn = []
    for draw in range(3):
        written = _rows(write_groups(rows, tmp_path / f"groups-{draw}.csv", draw))
        assert [p for p, _ in written] == [p for p, _ in rows]
        names = {g: w for (_, g), (_, w) in zip(rows, written)}  # one new name per group, never shared
        assert len(set(names.values())) == len(names) == 40
        if draw == 0:
            assert all(g == w for g, w in names.items())
        splits = assign_splits(
            [p for p, _ in written], [int(p[1]) for p, _ in written], SplitFractions(), [w for _, w in written]
        )
        by_group = {}
        for (_, g), split in zip(rows, splits):
            by_group.setdefault(g, set()).add(split)
        assert all(len(s) == 1 for s in by_group.values())
        drawn.append(splits)
    assert drawn[0] != drawn[1] and drawn[1] != drawn[2]
