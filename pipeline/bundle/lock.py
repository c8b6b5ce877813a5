"""Advisory file locks on the output folder: one build per OUT at a time, and readers that never see a publish
half-way.

`OUT/.imgpipe.lock` is held by a build from before its first piece of work to its end; a second build into the same
OUT stops at once naming the holder (pid, host, start time), or waits with `--wait`. `OUT/.imgpipe-publish.lock` is
held only while a publish swaps folders: a script that copies the bundle under a shared lock on it
(`flock -s OUT/.imgpipe-publish.lock cp -r OUT/bundle dest`) gets one build's files, never a mix.

The operating system releases a lock when its process dies, even by SIGKILL, so a killed build never leaves OUT
locked. The lock file is removed on release; whoever acquires it checks that the file they locked is still the
one at the path, so a build that waited on a removed file never shares OUT with a newer one.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..core.errors import BusyError

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

BUILD_LOCK = ".imgpipe.lock"
PUBLISH_LOCK = ".imgpipe-publish.lock"
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
_WINDOWS_LOCK_OFFSET = 1 << 20  # Windows locks are mandatory: lock a byte past the holder's info so it stays readable
log = logging.getLogger(__name__)


class FileLock:
    """An exclusive (or shared) lock on `path`, created if needed."""

    def __init__(self, path: Path, shared: bool = False, remove_on_release: bool = False):
        self.path = Path(path)
        self.shared = shared
        self.remove_on_release = remove_on_release
        self.fd: int | None = None

    def acquire(self, wait: bool, waiting_message=None) -> bool:
        """True once held. Without `wait`, False when someone else holds it; with `wait`, blocks (logging
        `waiting_message()` once). A filesystem that has no locks (some network mounts) counts as held."""
        announced = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _try_lock(fd, self.shared):
                    if not wait:
                        os.close(fd)
                        return False
                    if not announced and waiting_message is not None:
                        log.info(waiting_message())
                        announced = True
                    _lock_blocking(fd, self.shared)
            except OSError as e:
                os.close(fd)
                if e.errno in _UNSUPPORTED:
                    log.warning(f"{self.path}: this filesystem has no file locks; builds into it are not serialized")
                    return True
                raise
            if _same_file(fd, self.path):
                self.fd = fd
                return True
            os.close(fd)  # the holder removed the file as we waited on it: lock the current one

    def write_holder(self) -> None:
        """Who holds the lock, for the message another build prints."""
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, json.dumps(info).encode())

    def holder(self) -> str:
        """'pid 123 on host, started 2025-01-01T10:00:00+01:00', or what can be said without the file."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that has not said who it is yet"

    def release(self) -> None:
        if self.fd is None:
            return
        if self.remove_on_release and fcntl is not None:
            self.path.unlink(missing_ok=True)  # still held: nobody can take it between this and the close
        os.close(self.fd)  # closing releases the lock
        self.fd = None
        if self.remove_on_release and fcntl is None:
            try:
                self.path.unlink()  # Windows removes no open file; another build may have opened it already
            except OSError:
                pass


def lock_build(out: Path, wait: bool) -> FileLock:
    """Hold OUT for this build, or raise BusyError naming who holds it (after waiting, with `wait`)."""
    lock = FileLock(Path(out) / BUILD_LOCK, remove_on_release=True)
    if not lock.acquire(wait, lambda: f"{out}: waiting for the build that holds it ({lock.holder()})"):
        raise BusyError(_busy(out, lock))
    if lock.fd is not None:
        lock.write_holder()
    return lock


def refuse_if_held(out: Path) -> None:
    """Raise BusyError at once if a build holds OUT: the command line asks before loading TensorFlow, which takes
    seconds. Only a quick answer: the build still takes the lock itself."""
    path = Path(out) / BUILD_LOCK
    try:
        fd = os.open(path, os.O_RDONLY if fcntl is not None else os.O_RDWR)
    except OSError:
        return  # no lock file (or none we can open): no build holds OUT, or the build will say why
    try:
        if not _try_lock(fd, shared=True):
            raise BusyError(_busy(out, FileLock(path)))
    finally:
        os.close(fd)


def _busy(out: Path, lock: FileLock) -> str:
    return (
        f"{out}: another imgpipe build is writing to this folder ({lock.holder()}); wait for it to finish, pass "
        "--wait to queue behind it, or choose another --out"
    )


def _try_lock(fd: int, shared: bool) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _lock_blocking(fd: int, shared: bool) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        return
    while not _try_lock(fd, shared):
        time.sleep(0.5)


def _same_file(fd: int, path: Path) -> bool:
    if fcntl is None:
        return True  # Windows cannot remove an open file, so the path cannot change under us
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)
