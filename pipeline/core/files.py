"""Files on disk: atomic writes (the one place imgpipe writes a file that someone else may read) and checksums.

A reader, an app's CI copying a bundle, or an interrupted build never sees half a file: content is written beside
its destination (same filesystem), flushed, and renamed over it in one step. Folders (an .mlpackage) are built
aside and swapped in the same way.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import FileSystemError, filesystem_error


def write_atomic(dest: Path, write: Callable[[BinaryIO], None], mode: int = 0o644, durable: bool = True) -> Path:
    """Call `write(file)` on a temporary file beside `dest`, then rename it over `dest`.

    `durable` flushes to the disk before the rename, so a power cut leaves the old or the new file; cache entries
    skip it (a damaged entry is detected and recomputed) because thousands of syncs cost seconds.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)  # a full disk leaves no truncated file behind
        if isinstance(e, OSError) and e.filename is None:  # write() errors name no file: this one
            if e.errno is None:  # numpy's short write ("1280 requested and 992 written"): the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest)) from e
            raise OSError(e.errno, e.strerror, str(dest)) from e
        raise
    return dest


def prepare_folder(path: Path, option: str, what: str) -> bool:
    """Make sure `path` is a folder this process can create files in, creating it (and its parents) if needed;
    True when it was created. Called before any work, so a wrong path costs nothing: anything in the way is one
    line naming the path and the fix."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise FileSystemError(f"{path}: is a broken symbolic link; {option} takes a folder ({what}): fix the link")
    if path.exists() and not path.is_dir():
        raise FileSystemError(
            f"{path}: is a file, not a folder; {option} takes a folder ({what}): choose another path or move the file"
        )
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise FileSystemError(f"{existing}: is a file, so {path} cannot be a folder inside it; choose another {option}")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".imgpipe-probe-")
        except OSError as e:  # name the folder, not the probe file
            raise OSError(e.errno, e.strerror, str(path)) from None
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        error = filesystem_error(e)
        if error is None:  # anything else the system says about a path the user gave is still about that path
            raise FileSystemError(f"{path}: cannot create a folder there ({e.strerror}); choose another {option}")
        raise FileSystemError(f"{error} ({option})") from None
    return created


def write_bytes_atomic(dest: Path, data: bytes) -> Path:
    return write_atomic(dest, lambda f: f.write(data))


def write_text_atomic(dest: Path, text: str) -> Path:
    return write_atomic(dest, lambda f: f.write(text.encode("utf-8")))


def replace_tree_atomic(dest: Path, build: Callable[[Path], None]) -> Path:
    """Call `build(path)` to create a folder beside `dest`, then swap it in; the old folder goes only after."""
    dest = Path(dest)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        staged, previous = staging / dest.name, staging / "previous"
        build(staged)
        if dest.exists():
            os.replace(dest, previous)
        try:
            os.replace(staged, dest)
        except OSError:
            if previous.exists():
                os.replace(previous, dest)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def files_under(path: Path) -> list[Path]:
    """The file itself, or every file under a folder in sorted order."""
    path = Path(path)
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in files_under(path))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a file; for a folder (an .mlpackage), of its relative paths and contents in sorted order."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in files_under(path):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(p)))
    return h.hexdigest()


def tree_gzip_bytes(path: Path) -> int:
    """What the artifact costs inside a compressed app download (pruning only pays off here)."""
    return sum(len(gzip.compress(p.read_bytes(), compresslevel=9, mtime=0)) for p in files_under(path))
