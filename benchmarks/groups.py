"""Groups a benchmark dataset's own documentation or names reveal, for a held-out split: the photographer of
every flowers photo (the flickr user in PROVENANCE.md's attribution lines), the breed of every Oxford-IIIT Pet
photo (its file name, `Abyssinian_101.jpg`). A test split of photographers (or breeds) the model never saw says
how it does on new photos; a random split of the same photos flatters it when one photographer's shots are alike."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..pipeline.core.preprocessing import IMAGE_SUFFIXES

FLICKR_CREDIT = re.compile(r"^\s*(\S+/\S+)\s.*https?://(?:www\.)?flickr\.com/photos/([^/\s]+)/")
NUMBERED = re.compile(r"^(.+)_\d+$")


def known_groups(dataset: Path, dest: Path) -> tuple[Path, str] | None:
    """(a groups CSV written to `dest`, what the groups are), or None when the dataset reveals none."""
    photos = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    provenance = dataset / "PROVENANCE.md"
    credits = {}
    if provenance.is_file():
        for line in provenance.read_text(encoding="utf-8").splitlines():
            match = FLICKR_CREDIT.match(line)
            if match:
                credits[match[1]] = match[2]
    if photos and all(p in credits for p in photos):
        return _write(dest, [(p, credits[p]) for p in photos]), "photographer (flickr user, from PROVENANCE.md)"
    stems = [Path(p).stem for p in photos]
    if photos and all(NUMBERED.match(s) for s in stems):
        rows = [(p, NUMBERED.match(s)[1]) for p, s in zip(photos, stems)]
        if len({g for _, g in rows}) > len({p.split("/")[0] for p in photos}):
            return _write(dest, rows), "breed (file name prefix)"
    return None


def _write(dest: Path, rows: list[tuple[str, str]]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "group"])
        writer.writerows(rows)
    return dest
