"""Errors a user can cause. The CLI prints them as one line and exits with their `exit_code`.

The operating system's refusals (a full or read-only disk, a permission, a file where a folder should be) are
the user's to fix too: `filesystem_error` turns them into a `FileSystemError` that names the path and the fix.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (converters attach pages of logs), or its type."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


class ImgpipeError(Exception):
    """A problem with the user's input or environment, with a message that names the file and the fix."""

    exit_code = 2


class DatasetError(ImgpipeError):
    """The dataset folder cannot be used as given."""


class WeightsError(ImgpipeError):
    """Backbone weights cannot be loaded."""


class ConfigError(ImgpipeError):
    """An option or config file value is invalid."""


class ExportError(ImgpipeError):
    """A converter refused the model."""


class BundleError(ImgpipeError):
    """A bundle on disk is missing, incomplete or altered."""


class ArtifactError(ImgpipeError):
    """An artifact file cannot be opened by its runtime."""


class ImageError(ImgpipeError):
    """An image given to `predict` cannot be read."""


class FileSystemError(ImgpipeError):
    """The operating system refused to read or write a file: the disk, the permissions or the path are wrong."""


class BusyError(ImgpipeError):
    """Another build holds the output folder."""


# What the user can do about each refusal; the path comes from the error itself, so the line names the real file.
# Errors that more likely mean a bug in imgpipe (ENOENT, EEXIST, EISDIR inside its own folders) keep their traceback.
_FIXES = {
    errno.ENOSPC: "no space left on that disk; free some space or choose a folder on another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or choose a folder on another disk",
    errno.EROFS: "that filesystem is read-only; choose a folder on a writable one",
    errno.EACCES: "permission denied; fix its permissions (chmod/chown) or choose a path you may use",
    errno.EPERM: "operation not permitted; fix its permissions or choose a path you own",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path or move the file",
    errno.ENAMETOOLONG: "the path is too long for this filesystem; choose a shorter one",
    errno.EIO: "the device reported an input/output error; check the disk",
    errno.EBUSY: "it is busy (a mount point, or open in another program); close it or choose another path",
    errno.EXDEV: "it is a mount point or on another disk than its folder; mount the whole folder instead",
}
# Libraries that write through their own C++ code (TensorFlow's SavedModel and TensorBoard writers, h5py) report
# these refusals as their own exception types, with the operating system's words in the message.
_MESSAGES = {os.strerror(code): code for code in _FIXES if code != errno.EIO}


def filesystem_error(e: BaseException, where=None) -> FileSystemError | None:
    """`e` as one line naming the path and the fix when the operating system refused something, else None.

    A converter's error (`ExportError`, a library's own type) is looked through to the `OSError` that caused it,
    so a full disk during an export is reported as a full disk, on the file being written. `where(errno)` names
    the folder to blame when the error names no file (a library's write() that failed)."""
    if isinstance(e, FileSystemError):
        return e
    if isinstance(e, ImgpipeError) and not isinstance(e, ExportError):
        return None  # already a line about the user's input
    for cause in _chain(e):
        if isinstance(cause, OSError) and cause.errno in _FIXES:
            if cause.filename is not None:
                return _line(cause.filename, cause.filename2, cause.errno)
            words = first_line(cause)  # a bare "[Errno 28] ..." says nothing the fix does not
            return _line(
                where(cause.errno) if where else None,
                None,
                cause.errno,
                words if where is None or not words.startswith("[Errno") else None,
            )
    text = first_line(e)
    code = next((c for message, c in _MESSAGES.items() if message.lower() in text.lower()), None)
    if code is None:
        return None
    return _line(where(code) if where else None, None, code, text)


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _line(path, other, code: int, words: str | None = None) -> FileSystemError:
    """'path: what happened; the fix', with the library's own `words` when the path is only a guess."""
    if path is None:
        return FileSystemError(f"{words}; {_FIXES[code]}")
    where = os.fsdecode(path) + (f" -> {os.fsdecode(other)}" if other is not None else "")
    return FileSystemError(f"{where}: {_FIXES[code]}" + (f" ({words})" if words else ""))
