"""Reader for Core ML's weight file format (MILBlob storage v2), written against the published layout.

coremltools reads these through a private C extension (`libmilstoragepython`); reading the bytes here keeps the
executor honest about what ships and turns a truncated or mismatched file into a clear error instead of a crash.
Layout: a 64-byte header (uint32 count, uint32 version=2), then per blob a 64-byte metadata record
(uint32 0xDEADBEEF sentinel, uint32 type code, uint64 size in bytes, uint64 data offset, uint64 padding bits)
followed by the data, everything 64-byte aligned. A program refers to a blob by the offset of its metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dtypes import MilType, decode_bytes

HEADER = np.dtype([("count", "<u4"), ("version", "<u4"), ("reserved", "<u8", 7)])
METADATA = np.dtype(
    [
        ("sentinel", "<u4"),
        ("dtype", "<u4"),
        ("size", "<u8"),
        ("offset", "<u8"),
        ("padding_bits", "<u8"),
        ("reserved", "<u8", 3),
    ]
)
SENTINEL = 0xDEADBEEF


class BlobFormatError(ValueError):
    """Raised for any inconsistency; the caller adds the package path."""


class BlobFile:
    """One weights file, read fully once: MobileNet weights are a few MB and every blob is needed anyway."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = np.fromfile(self.path, dtype=np.uint8)
        if self.data.size < HEADER.itemsize:
            raise BlobFormatError(f"{self.path.name} is {self.data.size} bytes, too short for a weight file header")
        header = self.data[: HEADER.itemsize].view(HEADER)[0]
        if int(header["version"]) != 2:
            raise BlobFormatError(f"{self.path.name} has storage version {int(header['version'])}, expected 2")

    def read(self, offset: int, mil_type: MilType, count: int) -> np.ndarray:
        """Decode `count` elements of the blob whose metadata starts at `offset`, checking every field first."""
        meta = self._metadata(offset)
        if int(meta["dtype"]) != mil_type.blob_code:
            raise BlobFormatError(
                f"{self.path.name} blob at offset {offset} stores type code {int(meta['dtype'])}, "
                f"the program declares {mil_type.name}"
            )
        start, size = int(meta["offset"]), int(meta["size"])
        expected = -(-count * mil_type.bits // 8)
        if size != expected:
            raise BlobFormatError(
                f"{self.path.name} blob at offset {offset} holds {size} bytes, "
                f"{count} {mil_type.name} values need {expected}"
            )
        if start + size > self.data.size:
            raise BlobFormatError(
                f"{self.path.name} is truncated: blob at offset {offset} ends at byte {start + size}, "
                f"file has {self.data.size}"
            )
        return decode_bytes(self.data[start : start + size].tobytes(), mil_type, count)

    def _metadata(self, offset: int) -> np.void:
        if offset < HEADER.itemsize or offset + METADATA.itemsize > self.data.size:
            raise BlobFormatError(
                f"{self.path.name} is truncated or the program is wrong: no blob metadata at offset {offset} "
                f"(file has {self.data.size} bytes)"
            )
        meta = self.data[offset : offset + METADATA.itemsize].view(METADATA)[0]
        if int(meta["sentinel"]) != SENTINEL:
            raise BlobFormatError(f"{self.path.name} has no blob at offset {offset} (sentinel missing)")
        return meta
