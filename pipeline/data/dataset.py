"""Scanning a class-folder dataset: which files count, which class, which split, and what went wrong.

The split of a file is decided by a hash of its path inside the dataset (as TF-Hub's retrain.py does), so a
file keeps its split when the dataset grows and test images never leak into training between builds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import SplitFractions
from ..core.console import progress_bar
from ..core.errors import DatasetError
from ..core.files import write_text_atomic
from ..core.preprocessing import IMAGE_SUFFIXES, decode_image_bytes, unreadable_reason

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageEntry:
    relpath: str  # path inside the dataset root, POSIX separators: the split hash and the manifest use it
    label: int
    sha256: str
    split: str


@dataclass
class LabelledImages:
    """One split's decoded images with their labels and file hashes (the feature cache's keys), in scan order."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)
    hashes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class SplitData:
    """What training reads: the train and val splits, taken once per build."""

    train: LabelledImages
    val: LabelledImages


@dataclass
class DatasetIndex:
    root: Path
    labels: list[str]
    entries: list[ImageEntry]
    images: np.ndarray  # uint8 (N, S, S, 3), decoded once, in `entries` order
    problems: list[str] = field(default_factory=list)

    def split(self, name: str) -> LabelledImages:
        idx = [i for i, e in enumerate(self.entries) if e.split == name]
        return LabelledImages(
            self.images[idx],
            np.array([self.entries[i].label for i in idx], dtype=np.int64),
            [self.entries[i].sha256 for i in idx],
        )

    def training_data(self) -> SplitData:
        return SplitData(self.split("train"), self.split("val"))

    @property
    def digest(self) -> str:
        """Identifies the exact labelled content: paths, bytes and labels."""
        h = hashlib.sha256()
        for e in sorted(self.entries, key=lambda e: e.relpath):
            h.update(f"{e.relpath}\0{e.sha256}\0{self.labels[e.label]}\n".encode())
        return h.hexdigest()

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


def scan_dataset(
    root: Path,
    image_size: int,
    fractions: SplitFractions = SplitFractions(),
    allowed_labels: list[str] | None = None,
) -> DatasetIndex:
    """Find, decode and split every image under `root/<class>/`.

    `allowed_labels` (evaluation of an existing bundle) keeps the bundle's label order and makes any other
    class folder an error. Unreadable files are reported and left out rather than failing the whole build.
    """
    fractions.check()
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; pass a folder with one sub-folder of images per class")
    problems: list[str] = []
    files_by_class = find_images(root, problems)
    labels = _choose_labels(root, files_by_class, allowed_labels)

    candidates = [(f, labels.index(name)) for name in sorted(files_by_class) for f in files_by_class[name]]
    decoded = _decode_all([f for f, _ in candidates], image_size)

    kept: list[tuple[Path, int, np.ndarray, str]] = []
    unreadable = []
    for (path, label), (pixels, sha, error) in zip(candidates, decoded):
        if error:
            unreadable.append(f"{path.relative_to(root).as_posix()}: {error}")
        else:
            kept.append((path, label, pixels, sha))
    if unreadable:
        problems.extend(f"unreadable, left out: {u}" for u in unreadable)
        log.warning(f"{len(unreadable)} unreadable file(s) left out:\n  " + "\n  ".join(unreadable))

    _check_class_sizes(root, labels, kept, allowed_labels is not None)
    relpaths = [p.relative_to(root).as_posix() for p, _, _, _ in kept]
    splits = assign_splits(relpaths, [lab for _, lab, _, _ in kept], fractions)
    entries = [ImageEntry(rel, lab, sha, split) for rel, (_, lab, _, sha), split in zip(relpaths, kept, splits)]
    problems.extend(_duplicate_problems(entries, labels))
    images = np.stack([px for _, _, px, _ in kept]) if kept else np.zeros((0, image_size, image_size, 3), np.uint8)
    return DatasetIndex(root, labels, entries, images, problems)


def assign_splits(relpaths: list[str], labels: list[int], fractions: SplitFractions) -> list[str]:
    """Split per file by a stable hash of its path, then make sure every class with >= 3 images has at least
    one val and one test image (when those splits are wanted) by moving its highest-hash train images."""
    scores = [_stable_unit(r) for r in relpaths]
    splits = [_split_for(s, fractions) for s in scores]
    wanted = [s for s in ("val", "test") if getattr(fractions, s) > 0]
    for label in sorted(set(labels)):
        members = [i for i, lab in enumerate(labels) if lab == label]
        if len(members) < 3:
            continue
        for split in wanted:
            if any(splits[i] == split for i in members):
                continue
            donors = sorted((i for i in members if splits[i] == "train"), key=lambda i: scores[i], reverse=True)
            if len(donors) > 1:
                splits[donors[0]] = split
    return splits


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


def _check_class_sizes(root: Path, labels: list[str], kept, evaluating: bool) -> None:
    counts = Counter(label for _, label, _, _ in kept)
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


def _decode_all(paths: list[Path], image_size: int):
    with ThreadPoolExecutor(max_workers=4) as pool, progress_bar("decoding", len(paths)) as advance:
        results = []
        for result in pool.map(lambda p: _decode_one(p, image_size), paths):
            results.append(result)
            advance(1)
        return results


def _decode_one(path: Path, image_size: int):
    try:
        data = path.read_bytes()
    except PermissionError:
        raise  # not a broken photo but a permission the user can fix: the build stops with one line naming it
    except OSError as e:
        return None, None, unreadable_reason(e)
    try:
        sha = hashlib.sha256(data).hexdigest()
        return decode_image_bytes(data, image_size), sha, None
    except Exception as e:  # PIL raises many types for broken files; each is a problem to report, not a crash
        return None, None, unreadable_reason(e)


def write_split_file(index: DatasetIndex, path: Path) -> None:
    """The per-file split list, so a user can see exactly which images were held out."""
    rows = [
        {"path": e.relpath, "label": index.labels[e.label], "split": e.split, "sha256": e.sha256} for e in index.entries
    ]
    write_text_atomic(path, json.dumps(rows, indent=1))


def read_split_file(path: Path) -> list[dict]:
    """What `write_split_file` wrote: the benchmark reuses a build's split instead of scanning again."""
    return json.loads(Path(path).read_text())
