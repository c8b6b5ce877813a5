"""One split's photos as the pipeline handles them: file paths, labels and file hashes in memory, pixels decoded
only when a stage needs them, into a file on disk, and read back in batches.

Memory then no longer grows with the number of photos (a decoded 224 px photo is 147 KB; 100,000 of them would
be 15 GB), and a rebuild whose stages are all cached decodes nothing. Tests and tools that already hold decoded
images wrap them with `Photos.from_array`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decode import decode_chunks
from .pixels import BATCH, PixelStore, build_store
from .sampling import spread_evenly


@dataclass
class InMemoryPixels:
    """Already-decoded images behind the PixelStore interface."""

    images: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.images[start:stop]

    def take(self, indices) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def batches(self, batch_size: int = BATCH) -> Iterator[np.ndarray]:
        for start in range(0, len(self.images), batch_size):
            yield self.images[start : start + batch_size]


@dataclass
class Photos:
    labels: np.ndarray  # int64 (N,)
    hashes: list[str]  # sha256 of each file: the feature cache's keys
    image_size: int
    paths: list[Path] = field(default_factory=list)
    work_dir: Path | None = None  # where the pixel file is written when first needed
    name: str = "photos"
    _pixels: PixelStore | InMemoryPixels | None = None

    @classmethod
    def from_array(cls, images: np.ndarray, labels, hashes: list[str] | None = None, name: str = "photos") -> Photos:
        hashes = hashes if hashes is not None else [f"array-{i}" for i in range(len(images))]
        return cls(np.asarray(labels, np.int64), hashes, images.shape[1], name=name, _pixels=InMemoryPixels(images))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def pixels(self) -> PixelStore | InMemoryPixels:
        """Every photo decoded once, into `work_dir/<name>.u8` (a stage that needs them all, every epoch)."""
        if self._pixels is None:
            if self.work_dir is None:
                raise ValueError(f"{self.name}: no folder to decode the photos into")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            dest = self.work_dir / f"{self.name}-{self.image_size}.u8"
            self._pixels = build_store(self.paths, self.image_size, dest, f"decoding {self.name}")
        return self._pixels

    def decode(self, indices) -> np.ndarray:
        """Some photos' pixels (a calibration sample, one image to time), without decoding the rest."""
        indices = [int(i) for i in indices]
        if self._pixels is not None:
            return self._pixels.take(indices)
        paths = [self.paths[i] for i in indices]
        return np.concatenate([chunk.pixels for chunk in decode_chunks(paths, self.image_size)])

    def sample(self, limit: int) -> np.ndarray:
        """Up to `limit` photos spread evenly over the split (splits come sorted by class)."""
        return self.decode(spread_evenly(np.arange(len(self)), limit)) if len(self) else self._empty()

    def batches(self, batch_size: int = BATCH) -> Iterator[np.ndarray]:
        return self.pixels.batches(batch_size)

    def chunks(self, indices) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices, pixels) for the photos at `indices`, a chunk at a time, decoding while the caller computes:
        one pass over photos that are needed once (features of new photos)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._pixels is not None:
            for start in range(0, len(indices), BATCH):
                part = indices[start : start + BATCH]
                yield part, self._pixels.take(part)
            return
        for chunk in decode_chunks([self.paths[i] for i in indices], self.image_size):
            yield indices[chunk.start : chunk.start + len(chunk.pixels)], chunk.pixels

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)


@dataclass
class TrainingData:
    """What training reads: the train and val photos, taken once per build."""

    train: Photos
    val: Photos
