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

from ..core.console import progress_bar
from ..core.errors import DatasetError
from ..core.preprocessing import decode_image_bytes, unreadable_reason

CHUNK = 128  # photos decoded ahead: about 19 MB of 224 px pixels
WORKERS = min(8, (os.cpu_count() or 2) * 2)  # Pillow and the resize release the GIL for most of their work


@dataclass
class DecodedChunk:
    start: int  # index of the first path of this chunk in the list given
    pixels: np.ndarray  # uint8 (n, S, S, 3)


def decode_chunks(paths: list[Path], image_size: int, chunk: int = CHUNK) -> Iterator[DecodedChunk]:
    """Decode and resize `paths` (files the scan found readable) in order, yielding chunks while the next one is
    being decoded."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:

        def submit(start: int):
            return start, [pool.submit(_decode, p, image_size) for p in paths[start : start + chunk]]

        pending = submit(0) if paths else None
        while pending is not None:
            start, futures = pending
            pending = submit(start + chunk) if start + chunk < len(paths) else None
            yield DecodedChunk(start, np.stack([f.result() for f in futures]))


def _decode(path: Path, image_size: int) -> np.ndarray:
    try:
        return decode_image_bytes(Path(path).read_bytes(), image_size)
    except PermissionError:
        raise
    except Exception as e:  # PIL raises many types for broken files
        raise DatasetError(
            f"{path}: could be read when the dataset was scanned but not now ({unreadable_reason(e)}); "
            "leave the dataset unchanged during a build and run it again"
        ) from None


@dataclass(frozen=True)
class FileCheck:
    sha256: str
    error: str | None  # why the file cannot be decoded, None when it can
    phash: int | None  # perceptual hash, for near-duplicates


def check_bytes(sha256: str, data: bytes) -> FileCheck:
    """What the dataset scan needs of a file, without keeping its pixels: whether it decodes, and its perceptual
    hash. JPEGs are decoded at 1/8 scale, which still reads every byte of the compressed data (a truncated or
    corrupt file fails) at a fraction of the cost; other formats are decoded whole."""
    try:
        return FileCheck(sha256, None, _check_decodes(data))
    except Exception as e:  # PIL raises many types for broken files; each is a reason to report, not a crash
        return FileCheck(sha256, unreadable_reason(e), None)


def _check_decodes(data: bytes) -> int:
    import io

    from PIL import Image, ImageOps

    from .near_duplicates import perceptual_hash

    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
        img.load()
        grey = ImageOps.exif_transpose(img).convert("L").resize((32, 32), Image.BILINEAR)
        return perceptual_hash(np.asarray(grey, dtype=np.float64))


def check_files(paths: list[Path], memo: dict) -> list[FileCheck]:
    """Every file's check (what the dataset scan needs), in parallel. `memo["checks"]` holds earlier checks by
    content hash, so a file seen before is only hashed; `memo["files"]` holds each path's hash with its size and
    modification time, which a file that still has both is not even read for (make's and rsync's rule: an edit
    changes the time)."""
    checks: dict[str, list] = memo.setdefault("checks", {})  # sha256 -> [error, phash]
    files: dict[str, list] = memo.setdefault("files", {})  # absolute path -> [size, mtime_ns, sha256]

    def check(path: Path) -> tuple[FileCheck, list | None]:
        try:
            stat = path.stat()
            seen = files.get(os.path.abspath(path))
            if seen and seen[:2] == [stat.st_size, stat.st_mtime_ns] and seen[2] in checks:
                return FileCheck(seen[2], *checks[seen[2]]), seen
            data = path.read_bytes()
        except PermissionError:
            raise  # a permission the user can fix: the build stops with one line naming the file
        except OSError as e:
            return FileCheck("", unreadable_reason(e), None), None
        sha = hashlib.sha256(data).hexdigest()
        known = checks.get(sha)
        return (FileCheck(sha, *known) if known else check_bytes(sha, data)), [stat.st_size, stat.st_mtime_ns, sha]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool, progress_bar("checking photos", len(paths)) as advance:
        results = []
        for path, (result, identity) in zip(paths, pool.map(check, paths)):
            results.append(result)
            if identity is not None:
                checks[result.sha256] = [result.error, result.phash]
                files[os.path.abspath(path)] = identity
            advance(1)
        return results
