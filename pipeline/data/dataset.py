"""Scanning a class-folder dataset: which files count, which class, which split, and what went wrong.

The split of a file is decided by a hash of its path inside the dataset (as TF-Hub's retrain.py does), so a
file keeps its split when the dataset grows and test images never leak into training between builds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from ..config import SplitFractions
from ..core.errors import DatasetError
from ..core.files import write_text_atomic
from ..core.preprocessing import IMAGE_SUFFIXES
from .decode import FileCheck, check_files
from .near_duplicates import groups_of, hash_pairs
from .photos import Photos, TrainingData

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageEntry:
    relpath: str  # path inside the dataset root, POSIX separators: the split hash and the manifest use it
    label: int
    sha256: str
    split: str
    group: str = ""  # photos of one group share a split (a groups file's key, or a near-duplicate's)
    phash: int | None = None


@dataclass
class DatasetIndex:
    """What a scan found: labels, one entry per readable photo (in class order) with its split, and problems.
    No pixels: each stage decodes what it needs (`photos`)."""

    root: Path
    labels: list[str]
    entries: list[ImageEntry]
    problems: list[str] = field(default_factory=list)

    def photos(self, split: str | None, image_size: int, work_dir: Path | None = None) -> Photos:
        """The photos of one split (every photo with None), in scan order."""
        chosen = self.entries_of(split)
        return Photos(
            np.array([e.label for e in chosen], dtype=np.int64),
            [e.sha256 for e in chosen],
            image_size,
            [self.root / e.relpath for e in chosen],
            work_dir,
            split or "all",
        )

    def entries_of(self, split: str | None) -> list[ImageEntry]:
        """One split's entries (every entry with None), in the order `photos` gives their pixels and labels."""
        return [e for e in self.entries if split is None or e.split == split]

    def training_data(self, image_size: int, work_dir: Path | None = None) -> TrainingData:
        return TrainingData(self.photos("train", image_size, work_dir), self.photos("val", image_size, work_dir))

    @property
    def digest(self) -> str:
        """Identifies the exact labelled content: paths, bytes and labels."""
        h = hashlib.sha256()
        for e in sorted(self.entries, key=lambda e: e.relpath):
            h.update(f"{e.relpath}\0{e.sha256}\0{self.labels[e.label]}\n".encode())
        return h.hexdigest()

    def split_digest(self, split: str) -> str:
        """Identifies one split's labelled content: what a stage reading only that split depends on."""
        h = hashlib.sha256()
        for e in self.entries:
            if e.split == split:
                h.update(f"{e.sha256}\0{e.label}\n".encode())
        return h.hexdigest()

    def check_splits(self, fractions: SplitFractions) -> None:
        """A wanted split with no photo at all (few photos, or groups too big to spread) stops the build here,
        before training, rather than as a Keras error about empty data."""
        for split in ("val", "test"):
            if getattr(fractions, split) > 0 and not any(e.split == split for e in self.entries):
                groups = len({e.group for e in self.entries})
                raise DatasetError(
                    f"{self.root}: no photo landed in the {split} split ({len(self.entries)} photos in {groups} "
                    "groups); add photos, or use smaller groups in the groups file"
                )

    def counts(self) -> dict[str, dict[str, int]]:
        c = Counter((self.labels[e.label], e.split) for e in self.entries)
        return {label: {s: c[(label, s)] for s in SPLITS} for label in self.labels}

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "digest": self.digest,
            "images": len(self.entries),
            "classes": len(self.labels),
            "counts": self.counts(),
            "problems": list(self.problems),
        }

    def regrouped(self, fractions: SplitFractions, pairs: list[tuple[int, int]], why: str) -> DatasetIndex:
        """The same photos with `pairs` (entry indices) joined into groups, and the splits that follow."""
        groups = [e.group for e in self.entries]
        joined = groups_of(len(groups), pairs)
        members: dict[int, list[int]] = {}
        for i, root in enumerate(joined):
            members.setdefault(root, []).append(i)
        for indices in members.values():
            if len(indices) > 1:
                key = min(groups[i] for i in indices)
                for i in indices:
                    groups[i] = key
        entries = _with_splits(self.entries, groups, fractions)
        problems = list(self.problems) + _near_duplicate_notes(entries, pairs, why)
        return DatasetIndex(self.root, self.labels, entries, problems)


def scan_dataset(
    root: Path,
    fractions: SplitFractions = SplitFractions(),
    allowed_labels: list[str] | None = None,
    groups_file: Path | None = None,
    memo: dict | None = None,
) -> DatasetIndex:
    """Find, check and split every image under `root/<class>/`, keeping no pixels.

    `allowed_labels` (evaluation of an existing bundle) keeps the bundle's label order and makes any other
    class folder an error. Unreadable files are reported and left out rather than failing the whole build.
    `groups_file` (CSV `path,group`) keeps each group of photos in one split; photos whose perceptual hashes are
    within HASH_DISTANCE are grouped too. `memo` (JSON-able, kept in the build's cache) holds what earlier scans
    learnt, which is not redone; this scan's findings are added to it.
    """
    fractions.check()
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; pass a folder with one sub-folder of images per class")
    problems: list[str] = []
    files_by_class = find_images(root, problems)
    labels = _choose_labels(root, files_by_class, allowed_labels)
    candidates = [(f, labels.index(name)) for name in sorted(files_by_class) for f in files_by_class[name]]
    results = check_files([f for f, _ in candidates], {} if memo is None else memo)

    kept: list[tuple[Path, int, FileCheck]] = []
    unreadable = []
    for (path, label), check in zip(candidates, results):
        if check.error:
            unreadable.append(f"{path.relative_to(root).as_posix()}: {check.error}")
        else:
            kept.append((path, label, check))
    if unreadable:
        problems.extend(f"unreadable, left out: {u}" for u in unreadable)
        log.warning(f"{len(unreadable)} unreadable file(s) left out:\n  " + "\n  ".join(unreadable))

    _check_class_sizes(root, labels, [label for _, label, _ in kept], allowed_labels is not None)
    relpaths = [p.relative_to(root).as_posix() for p, _, _ in kept]
    declared = read_groups_file(groups_file, root) if groups_file else {}
    unknown = sorted(set(declared) - set(relpaths))
    if unknown:
        problems.append(
            f"groups file {groups_file}: {len(unknown)} path(s) not in the dataset, e.g. {unknown[0]} "
            "(paths are relative to the dataset folder)"
        )
    entries = [
        ImageEntry(rel, label, check.sha256, "", declared.get(rel, rel), check.phash)
        for rel, (_, label, check) in zip(relpaths, kept)
    ]
    pairs = hash_pairs(np.array([e.phash or 0 for e in entries], dtype=np.uint64))
    index = DatasetIndex(root, labels, entries, problems).regrouped(fractions, pairs, "perceptual hash")  # splits
    index.problems.extend(_duplicate_problems(index.entries, labels))
    return index


def _with_splits(entries: list[ImageEntry], groups: list[str], fractions: SplitFractions) -> list[ImageEntry]:
    splits = assign_splits([e.relpath for e in entries], [e.label for e in entries], fractions, groups)
    return [replace(e, split=s, group=g) for e, s, g in zip(entries, splits, groups)]


def assign_splits(
    relpaths: list[str], labels: list[int], fractions: SplitFractions, groups: list[str] | None = None
) -> list[str]:
    """Split by a stable hash of each photo's group (its own path unless it belongs to a group), so a group stays
    together and a photo keeps its split as the dataset grows; then make sure every class with >= 3 images has
    at least one val and one test image (when those splits are wanted) by moving a whole group of it, the one
    with the highest hash, out of train."""
    groups = groups or relpaths
    scores = [_stable_unit(g) for g in groups]
    splits = [_split_for(s, fractions) for s in scores]
    wanted = [s for s in ("val", "test") if getattr(fractions, s) > 0]
    for label in sorted(set(labels)):
        members = [i for i, lab in enumerate(labels) if lab == label]
        if len(members) < 3:
            continue
        for split in wanted:
            if any(splits[i] == split for i in members):
                continue
            in_train = {groups[i] for i in members if splits[i] == "train"}
            movable = [g for g in in_train if all(splits[j] == "train" for j, gj in enumerate(groups) if gj == g)]
            if len(in_train) > 1 and movable:
                chosen = max(movable, key=_stable_unit)
                for j, g in enumerate(groups):
                    if g == chosen:
                        splits[j] = split
    return splits


def read_groups_file(path: Path, root: Path) -> dict[str, str]:
    """CSV `path,group` (a header row is allowed): photos of one group, a photographer, a patient, a device, go
    to one split. Paths are relative to the dataset folder."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row and not row[0].startswith("#")]
    except OSError as e:
        raise DatasetError(
            f"{path}: cannot read the groups file ({e.strerror or e}); pass a CSV of path,group"
        ) from None
    if rows and rows[0][:2] == ["path", "group"]:
        rows = rows[1:]
    bad = [i for i, row in enumerate(rows, 1) if len(row) < 2 or not row[0].strip() or not row[1].strip()]
    if bad:
        raise DatasetError(f"{path}: line {bad[0]} is not 'path,group'; fix the groups file")
    return {PurePosixPath(row[0].strip()).as_posix(): f"group:{row[1].strip()}" for row in rows}


def _near_duplicate_notes(entries: list[ImageEntry], pairs: list[tuple[int, int]], why: str) -> list[str]:
    """Near-duplicates are a dataset problem worth seeing even though the grouped split keeps them together."""
    if not pairs:
        return []
    shown = ", ".join(f"{entries[a].relpath} ~ {entries[b].relpath}" for a, b in pairs[:10])
    more = f" and {len(pairs) - 10} more" if len(pairs) > 10 else ""
    return [f"near-duplicate photos ({why}), kept in one split: {shown}{more}"]


def _stable_unit(relpath: str) -> float:
    digest = hashlib.sha1(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_for(score: float, f: SplitFractions) -> str:
    if score < f.train:
        return "train"
    return "val" if score < f.train + f.val else "test"


def find_images(root: Path, problems: list[str]) -> dict[str, list[Path]]:
    """`{class: image files}` for every `root/<class>/` folder, searched recursively, hidden names skipped.

    Symbolic links are followed only while they stay inside the dataset folder, and every real file counts once:
    a link to a file that is counted anyway, a link to a folder already searched (`loop -> .`), a link back to
    the dataset folder and a link into another class's folder add nothing and are reported; a link that points
    outside the dataset folder, or nowhere, is reported and left out. A file found both by its own path and
    through a link keeps its own path (the identity that decides its split). Problems name paths relative to
    the dataset folder, since they are recorded in the manifest.
    """
    root_real = root.resolve()
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    own = {p.name: p.resolve() for p in entries if p.is_dir() and not p.is_symlink()}
    classes: dict[str, Path] = {}
    for p in entries:
        if not p.is_dir():
            if p.is_symlink() and not p.exists():
                problems.append(f"{rel(p)}: a link to nothing, ignored")
            continue
        real = p.resolve()
        if p.is_symlink():
            reason = _folder_link_problem(real, root_real, {**own, **classes})
            if reason:
                problems.append(f"{rel(p)}: {reason}")
                continue
        classes[p.name] = real

    found: list[tuple[str, Path, Path, bool]] = []  # (class, path, real file, reached through a link)
    searched: set[Path] = set()
    links: list[tuple[str, Path]] = []
    for name in sorted(classes):  # first every real folder, so files keep their own paths
        _search(name, root / name, classes[name], False, searched, found, links, problems, rel)
    while links:  # then the links met on the way, in order
        name, link = links.pop(0)
        target = link.resolve()
        if not link.exists():
            problems.append(f"{rel(link)}: a link to nothing, ignored")
        elif not target.is_relative_to(root_real):
            problems.append(f"{rel(link)}: a link to something outside the dataset folder, left out")
        elif link.is_dir():
            others = {k: v for k, v in classes.items() if k != name}
            reason = _folder_link_problem(target, root_real, others) or (
                "a link to a folder already searched, ignored" if target in searched else None
            )
            if reason:
                problems.append(f"{rel(link)}: {reason}")
            else:
                _search(name, link, target, True, searched, found, links, problems, rel)
        elif _is_image(link, problems, rel):
            found.append((name, link, target, True))

    kept: dict[Path, tuple[str, Path, bool]] = {}
    for name, path, real, via_link in found:
        if real not in kept or (kept[real][2] and not via_link):
            if real in kept:
                problems.append(f"{rel(kept[real][1])}: a link to {rel(path)}, counted once")
            kept[real] = (name, path, via_link)
        else:
            problems.append(f"{rel(path)}: a link to {rel(kept[real][1])}, counted once")
    by_class: dict[str, list[Path]] = {name: [] for name in classes}
    for name, path, _ in kept.values():
        by_class[name].append(path)
    return {name: sorted(paths) for name, paths in by_class.items()}


def _search(name, folder: Path, real: Path, via_link: bool, searched, found, links, problems, rel) -> None:
    """Every image file under `folder` without following links (they are queued in `links`)."""
    searched.add(real)
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink():
            links.append((name, p))
        elif p.is_dir():
            _search(name, p, p.resolve(), via_link, searched, found, links, problems, rel)
        elif p.is_file() and _is_image(p, problems, rel):
            found.append((name, p, p.resolve(), via_link))


def _is_image(path: Path, problems: list[str], rel) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    problems.append(f"not an image type imgpipe reads, ignored: {rel(path)}")
    return False


def _folder_link_problem(target: Path, root: Path, classes: dict[str, Path]) -> str | None:
    """Why a link to the folder `target` must not be followed, or None."""
    if not target.is_relative_to(root):
        return "a link to a folder outside the dataset folder, left out"
    if root.is_relative_to(target):
        return "a link back to the dataset folder, ignored (each image counts once)"
    for name, folder in classes.items():
        if target.is_relative_to(folder) or folder.is_relative_to(target):
            return f"a link into the folder of class '{name}', ignored (each image counts once, in one class)"
    return None


def _choose_labels(root: Path, files_by_class: dict[str, list[Path]], allowed: list[str] | None) -> list[str]:
    if allowed is not None:
        unknown = sorted(set(files_by_class) - set(allowed))
        if unknown:
            raise DatasetError(
                f"{root}: class folder(s) {', '.join(unknown)} are not among the model's labels "
                f"({', '.join(allowed)}); remove or rename them"
            )
        return list(allowed)
    if len(files_by_class) < 2:
        raise DatasetError(
            f"{root}: found {len(files_by_class)} class folder(s); a classifier needs at least 2 "
            "sub-folders, one per class, each holding that class's images"
        )
    empty = [name for name, files in files_by_class.items() if not files]
    if empty:
        raise DatasetError(
            f"{root / empty[0]}: empty class folder (no .jpg/.jpeg/.png/.bmp/.gif/.webp files); "
            "add images or remove the folder"
        )
    return sorted(files_by_class)


def _check_class_sizes(root: Path, labels: list[str], kept: list[int], evaluating: bool) -> None:
    counts = Counter(kept)
    if evaluating:
        if not kept:
            raise DatasetError(f"{root}: no readable images found; add images under {root}/<class>/")
        return
    for i, name in enumerate(labels):
        if counts[i] < 2:
            raise DatasetError(
                f"{root / name}: {counts[i]} readable image(s); every class needs at least 2 "
                "(3 or more to appear in val and test); add images or remove the folder"
            )


def _duplicate_problems(entries: list[ImageEntry], labels: list[str]) -> list[str]:
    by_hash: dict[str, list[ImageEntry]] = {}
    for e in entries:
        by_hash.setdefault(e.sha256, []).append(e)
    problems = []
    for group in by_hash.values():
        if len(group) > 1:
            classes = {labels[e.label] for e in group}
            kind = "in different classes" if len(classes) > 1 else "duplicated"
            splits = {e.split for e in group}
            leak = " across splits (inflates test accuracy)" if len(splits) > 1 else ""
            problems.append(f"identical files {kind}{leak}: {', '.join(e.relpath for e in group)}")
    return problems


def write_split_file(index: DatasetIndex, path: Path) -> None:
    """The per-file split list, so a user can see exactly which images were held out."""
    rows = [
        {"path": e.relpath, "label": index.labels[e.label], "split": e.split, "sha256": e.sha256} for e in index.entries
    ]
    write_text_atomic(path, json.dumps(rows, indent=1))


def read_split_file(path: Path) -> list[dict]:
    """What `write_split_file` wrote: the benchmark reuses a build's split instead of scanning again."""
    return json.loads(Path(path).read_text())
