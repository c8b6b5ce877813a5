"""Groups a benchmark dataset's own documentation or names reveal, for a held-out split: the photographer of
every flowers photo (the flickr user in PROVENANCE.md's attribution lines), the breed of every Oxford-IIIT Pet
photo (its file name, `Abyssinian_101.jpg`). A test split of photographers (or breeds) the model never saw says
how it does on new photos; a random split of the same photos flatters it when one photographer's shots are alike.

One group split tests few photos (57 of the 500 flowers), so the benchmark draws several: a build splits by a hash
of each group's name, and renaming every group (`alice` -> `alice~2`) draws another split of the same groups."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..pipeline.core.preprocessing import IMAGE_SUFFIXES

FLICKR_CREDIT = re.compile(r"^\s*(\S+/\S+)\s.*https?://(?:www\.)?flickr\.com/photos/([^/\s]+)/")
NUMBERED = re.compile(r"^(.+)_\d+$")


def known_groups(dataset: Path) -> tuple[list[tuple[str, str]], str] | None:
    """([(photo path, group)], what the groups are), or None when the dataset reveals none."""
    photos = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    provenance = dataset / "PROVENANCE.md"
    credits = {}
    if provenance.is_file():
        for line in provenance.read_text(encoding="utf-8").splitlines():
            match = FLICKR_CREDIT.match(line)
            if match:
                credits[match[1]] = match[2]
    if photos and all(p in credits for p in photos):
        return [(p, credits[p]) for p in photos], "photographer (flickr user, from PROVENANCE.md)"
    stems = [Path(p).stem for p in photos]
    if photos and all(NUMBERED.match(s) for s in stems):
        rows = [(p, NUMBERED.match(s)[1]) for p, s in zip(photos, stems)]
        if len({g for _, g in rows}) > len({p.split("/")[0] for p in photos}):
            return rows, "breed (file name prefix)"
    return None


def write_groups(rows: list[tuple[str, str]], dest: Path, draw: int = 0) -> Path:
    """A groups CSV (`--groups`) for split number `draw`: 0 keeps the groups' own names, which gives the split a
    user with this groups file gets; every other number renames each group the same way, which draws another."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "group"])
        writer.writerows((path, group if draw == 0 else f"{group}~{draw}") for path, group in rows)
    return dest
