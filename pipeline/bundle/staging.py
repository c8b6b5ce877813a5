"""The output folder of a build: checked and locked before any work, staged into, and published atomically.

Everything a build writes goes into a hidden staging folder inside OUT (the same filesystem). Only a complete,
verified build is published, by exchanging each published entry (`bundle/`, the reports, `metrics.json`, `logs/`,
`keras/`, `build.json`) with its staged replacement:

- Linux `renameat2(RENAME_EXCHANGE)`, macOS `renamex_np(RENAME_SWAP)`: one system call swaps the two names, so at
  every instant OUT/bundle is a complete bundle, old or new, and it stays a real folder (a CI job that copies it
  with `cp -r` gets files, where a symlink flipped between versions would copy as a dangling link).
- Elsewhere (Windows; filesystems that cannot exchange, such as some network mounts) three renames, where a crash
  between the first two leaves no OUT/bundle until the next build puts one back.

Before the first swap a journal (`publish.json` in the staging folder) records every entry and the inode of its
new version, so whoever finds a journal knows exactly which entries were swapped: a publish that fails with an
error swaps them back (a failed build publishes nothing); a build killed during its publish is finished by the
next build into OUT before that one does any work (the killed build was complete and verified). Nothing that holds
the only copy of a published bundle is ever deleted: the replaced entries become `OUT/.imgpipe-previous/` and are
deleted only when the build after has been published.

Every filesystem step of a publish goes through `_step`, so a test can stop the process between any two of them.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from ..core.files import prepare_folder, write_text_atomic
from ..core.signals import Terminated, signals_held
from .lock import PUBLISH_LOCK, FileLock, lock_build

REPORT_HTML = "report.html"
PUBLISHED_ENTRIES = ("bundle", "report.md", REPORT_HTML, "metrics.json", "logs", "keras", "build.json")
STAGING_PREFIX = ".imgpipe-staging-"
PREVIOUS = ".imgpipe-previous"
DISCARD_PREFIX = ".imgpipe-discard-"
JOURNAL = "publish.json"
ASIDE_PREFIX = ".aside-"
log = logging.getLogger(__name__)

# Tests set this to a function called with a description before every filesystem step of a publish or recovery.
STEP_HOOK: Callable[[str], None] | None = None


def _step(what: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(what)


class OutputFolder:
    """OUT for the length of one build: checked (a writable folder) and created before any work, held with a lock
    so no other build writes into it meanwhile, and settled after builds that were killed. A first build that
    fails leaves no OUT behind."""

    def __init__(self, out: Path, wait: bool = False):
        self.out = Path(out)
        self.wait = wait
        self.created = False
        self.lock = None

    def __enter__(self) -> OutputFolder:
        self.created = prepare_folder(self.out, "--out", "the build folder; the bundle is OUT/bundle")
        try:
            self.lock = lock_build(self.out, self.wait)
            recover(self.out)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()
        if self.created:
            try:
                self.out.rmdir()  # only if empty: a failed first build leaves nothing behind
            except OSError:
                pass


class Staging:
    """A staging folder inside OUT that disappears unless `publish` moved its contents into OUT."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out))
        self.bundle = self.root / "bundle"
        self.work = self.root / "work"
        self.bundle.mkdir()
        self.work.mkdir()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        if (self.root / JOURNAL).exists():
            return  # a publish that could neither finish nor be undone: the next build settles it from the journal
        shutil.rmtree(self.root, ignore_errors=True)

    def publish(self, entries=PUBLISHED_ENTRIES) -> None:
        """Swap every entry into OUT (an entry this build lacks is taken out of OUT), keeping what it replaced as
        OUT/.imgpipe-previous. SIGINT/SIGTERM arriving meanwhile are delivered once the publish is complete."""
        shutil.rmtree(self.work, ignore_errors=True)
        _make_readable(self.root)
        journal = {"entries": [[name, _identity(self.root / name)] for name in entries]}
        readers = FileLock(self.out / PUBLISH_LOCK)
        readers.acquire(wait=True, waiting_message=lambda: f"{self.out}: waiting for a reader holding {PUBLISH_LOCK}")
        published = False
        try:
            with signals_held():
                _step("write the journal")
                write_text_atomic(self.root / JOURNAL, json.dumps(journal))
                try:
                    _settle(self.out, self.root, journal, forward=True)
                except Exception as e:
                    _undo(self.out, self.root, journal, e)
                    raise
                published = True
                try:
                    _retire(self.out, self.root)
                except OSError as e:  # the new build is live; only tidying up failed, and the next build redoes it
                    log.warning(f"published, but could not tidy up {self.out} ({e}); the next build will")
        except (KeyboardInterrupt, Terminated) as e:
            if published:
                e.add_note(f"it came while publishing, which was finished first: {self.out / 'bundle'} is this build's")
            raise
        finally:
            readers.release()


def recover(out: Path) -> None:
    """Settle what builds that were killed left in OUT (call it holding OUT's lock, so none of them is running):
    finish an interrupted publish, remove staging folders and the discarded build before the previous one."""
    out = Path(out)
    with signals_held():
        for root in sorted(out.glob(STAGING_PREFIX + "*")):
            journal = _read_journal(root)
            if journal is None:  # stopped before publishing: it holds nothing that was ever published
                _step(f"remove {root.name}")
                shutil.rmtree(root, ignore_errors=True)
                continue
            log.warning(f"{out}: the last build was stopped while publishing; finishing its publish")
            _settle(out, root, journal, forward=True)
            _retire(out, root)
        for discard in sorted(out.glob(DISCARD_PREFIX + "*")):
            _step(f"remove {discard.name}")
            shutil.rmtree(discard, ignore_errors=True)
        leftover = out / PREVIOUS / JOURNAL
        if leftover.exists():
            _step("remove the previous build's journal")
            leftover.unlink()


def _settle(out: Path, root: Path, journal: dict, forward: bool) -> None:
    """Bring every journal entry to its new version (forward) or back to its old one, whatever state a crash or an
    error left it in; each entry's state is read from the disk, so this can be repeated after any step."""
    entries = journal["entries"] if forward else list(reversed(journal["entries"]))
    for name, new in entries:
        new = tuple(new) if new is not None else None
        live, staged, aside = out / name, root / name, root / f"{ASIDE_PREFIX}{name}"
        if os.path.lexists(aside):  # a three-rename exchange stopped half-way
            if not os.path.lexists(live):
                _step(f"put {name} back")
                os.rename(aside, live)
            else:
                _step(f"finish exchanging {name}")
                os.rename(aside, staged)
        new_is_live = _identity(live) == new if new is not None else not os.path.lexists(live)
        if forward and not new_is_live:
            if new is None:
                _step(f"take {name} out")
                os.rename(live, staged)
            elif not os.path.lexists(staged):
                log.warning(f"{staged}: missing, so {live} stays as it was")
            elif os.path.lexists(live):
                _exchange(staged, live)
            else:
                _step(f"move {name} in")
                os.rename(staged, live)
        elif not forward and new_is_live:
            if os.path.lexists(staged):
                _exchange(staged, live) if os.path.lexists(live) else _rename_step(staged, live, f"put {name} back")
            elif new is not None:
                _rename_step(live, staged, f"take {name} out")


def _undo(out: Path, root: Path, journal: dict, error: Exception) -> None:
    """After an error during a publish, swap back what was swapped; the journal goes once nothing is swapped."""
    try:
        _settle(out, root, journal, forward=False)
        (root / JOURNAL).unlink()
    except OSError as again:
        error.add_note(f"undoing the publish failed too ({again}); the next build into {out} will finish it")


def _retire(out: Path, root: Path) -> None:
    """The new build is live: what it replaced becomes OUT/.imgpipe-previous, and the build before goes."""
    kept = [p for p in root.iterdir() if p.name != JOURNAL]
    if not kept:  # a first publish replaced nothing: keep the previous build as it is
        _step("remove the empty staging folder")
        shutil.rmtree(root)
        return
    previous, discard = out / PREVIOUS, None
    if os.path.lexists(previous):
        discard = out / f"{DISCARD_PREFIX}{uuid.uuid4().hex[:8]}"
        _rename_step(previous, discard, "set aside the build before the previous one")
    _rename_step(root, previous, "keep the replaced build as the previous one")
    _step("remove the journal")
    (previous / JOURNAL).unlink()
    if discard is not None:
        _step("remove the build before the previous one")
        shutil.rmtree(discard)
    _sync_folder(out)


def _rename_step(source: Path, dest: Path, what: str) -> None:
    _step(what)
    os.rename(source, dest)


def _exchange(a: Path, b: Path) -> None:
    """Swap two existing names in one step where the system can, else with three renames through an aside name."""
    _step(f"exchange {b.name}")
    if _native_exchange(a, b):
        return
    aside = a.parent / f"{ASIDE_PREFIX}{b.name}"
    _rename_step(b, aside, f"move the old {b.name} aside")
    _rename_step(a, b, f"move the new {b.name} in")
    _rename_step(aside, a, f"keep the old {b.name}")


def _native_exchange(a: Path, b: Path) -> bool:
    """True when the system swapped `a` and `b` atomically; False (nothing changed) where it cannot."""
    call = _exchange_call()
    if call is None:
        return False
    if call(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOTTY):
        return False  # this filesystem cannot exchange
    raise OSError(code, os.strerror(code), str(b), None, str(a))


_EXCHANGE: list = []


def _exchange_call():
    """renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) on Linux, renamex_np(a, b, RENAME_SWAP) on macOS."""
    if not _EXCHANGE:
        call = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
                fn = libc.renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

                def call(a, b, fn=fn):
                    return fn(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE

            elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
                fn = libc.renamex_np
                fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]

                def call(a, b, fn=fn):
                    return fn(a, b, 2)  # RENAME_SWAP

        except (OSError, AttributeError, TypeError):  # no C library to load (Windows)
            call = None
        _EXCHANGE.append(call)
    return _EXCHANGE[0]


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file or folder is at `path`: a rename keeps it, so the journal can tell old from new."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _read_journal(root: Path) -> dict | None:
    try:
        return json.loads((root / JOURNAL).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _make_readable(root: Path) -> None:
    """Temp files are created 0600; published files are for copying into apps and sharing: 0644 / 0755."""
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    root.chmod(0o755)


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (a power cut after a publish keeps it); not possible or needed on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
