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
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    problems: list[str] = []
    files_by_class = {d.name: _image_files(d, problems) for d in class_dirs}
    labels = _choose_labels(root, files_by_class, allowed_labels)

    candidates = [(f, labels.index(name)) for name in sorted(files_by_class) for f in files_by_class[name]]
    decoded = _decode_all([f for f, _ in candidates], image_size)

    kept: list[tuple[Path, int, np.ndarray, str]] = []
    unreadable = []
    for (path, label), (pixels, sha, error) in zip(candidates, decoded):
        if error:
            unreadable.append(f"{path}: {error}")
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


def _image_files(class_dir: Path, problems: list[str]) -> list[Path]:
    files = []
    for p in sorted(class_dir.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(class_dir).parts):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            problems.append(f"not an image type imgpipe reads, ignored: {p}")
    return files


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
