"""Decoded pixels of one split kept on disk instead of in memory, read back in batches.

The test split is run by every artifact's verification, and image-level training (fine-tuning, pruning, QAT)
reads the train split every epoch; decoding each photo once into a flat uint8 file and reading batches from it
keeps memory at one batch however many photos there are. Reads are plain file reads, not a memory map, so the
pages do not count against the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.console import progress_bar
from .decode import decode_chunks

BATCH = 32


@dataclass
class PixelStore:
    path: Path
    count: int
    image_size: int

    @property
    def image_bytes(self) -> int:
        return self.image_size * self.image_size * 3

    def __len__(self) -> int:
        return self.count

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images start..stop-1 as uint8 (n, S, S, 3)."""
        stop = min(stop, self.count)
        with open(self.path, "rb") as f:
            f.seek(start * self.image_bytes)
            data = f.read((stop - start) * self.image_bytes)
        return np.frombuffer(data, np.uint8).reshape(stop - start, self.image_size, self.image_size, 3)

    def take(self, indices) -> np.ndarray:
        """The images at `indices`, in that order (a calibration sample, a shuffled batch)."""
        with open(self.path, "rb") as f:
            out = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
            for row, index in enumerate(indices):
                f.seek(int(index) * self.image_bytes)
                out[row] = np.frombuffer(f.read(self.image_bytes), np.uint8).reshape(out.shape[1:])
        return out

    def batches(self, batch_size: int = BATCH) -> Iterator[np.ndarray]:
        for start in range(0, self.count, batch_size):
            yield self.read(start, start + batch_size)


def build_store(paths: list[Path], image_size: int, dest: Path, what: str = "decoding") -> PixelStore:
    """Decode `paths` (already known to be readable) into `dest`, in order."""
    with open(dest, "wb") as f, progress_bar(what, len(paths)) as advance:
        for chunk in decode_chunks(paths, image_size):
            f.write(chunk.pixels.tobytes())
            advance(len(chunk.pixels))
    return PixelStore(Path(dest), len(paths), image_size)
