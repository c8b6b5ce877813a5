"""Decoding photos in parallel, in order, a bounded chunk at a time: the one way pixels enter the pipeline.

Decoding overlaps with whatever consumes the pixels (the backbone, a file write): the next chunk is decoded by a
thread pool while the caller works on the current one, and never more than two chunks are in memory, so a
100,000-photo dataset needs no more memory than a 500-photo one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.preprocessing import decode_image_bytes, unreadable_reason

CHUNK = 128  # photos decoded ahead: about 19 MB of 224 px pixels
WORKERS = min(8, (os.cpu_count() or 2) * 2)  # Pillow and the resize release the GIL for most of their work


@dataclass
class DecodedChunk:
    start: int  # index of the first path of this chunk in the list given
    pixels: np.ndarray  # uint8 (n, S, S, 3); a zero image where decoding failed
    errors: list[str | None]  # why each failed, None where it worked


def decode_chunks(paths: list[Path], image_size: int, chunk: int = CHUNK) -> Iterator[DecodedChunk]:
    """Decode and resize `paths` in order, yielding chunks while the next one is being decoded."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:

        def submit(start: int):
            return start, [pool.submit(_decode, p, image_size) for p in paths[start : start + chunk]]

        pending = submit(0) if paths else None
        while pending is not None:
            start, futures = pending
            pending = submit(start + chunk) if start + chunk < len(paths) else None
            results = [f.result() for f in futures]
            pixels = np.stack(
                [px if px is not None else np.zeros((image_size, image_size, 3), np.uint8) for px, _ in results]
            )
            yield DecodedChunk(start, pixels, [error for _, error in results])


def _decode(path: Path, image_size: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_image_bytes(Path(path).read_bytes(), image_size), None
    except Exception as e:  # PIL raises many types for broken files; each is a problem to report, not a crash
        return None, unreadable_reason(e)


def hash_and_check(path: Path) -> tuple[str | None, str | None]:
    """(sha256 of the file, why it cannot be decoded or None): what the dataset scan needs of a file, without
    keeping its pixels. JPEGs are decoded at 1/8 scale, which still reads every byte of the compressed data (a
    truncated or corrupt file fails) at a fraction of the cost; other formats are decoded whole."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"cannot read it ({e.strerror or e})"
    sha = hashlib.sha256(data).hexdigest()
    try:
        _check_decodes(data)
    except Exception as e:  # as in _decode: every failure is a reason to report
        return sha, unreadable_reason(e)
    return sha, None


def _check_decodes(data: bytes) -> None:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
        img.load()
