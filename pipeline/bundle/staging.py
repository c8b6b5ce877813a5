"""Staging a build and publishing it atomically.

Everything is written under a hidden staging folder inside `--out`; only a complete build is moved into place,
so an interrupted or failed build leaves the previous bundle and report exactly as they were.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PUBLISHED_ENTRIES = ("bundle", "report.md", "report.html", "metrics.json", "logs", "keras")
STAGING_PREFIX = ".imgpipe-staging-"


class Staging:
    """A staging folder that disappears unless `publish` moved its contents into `out`."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.created_out = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out))
        self.bundle = self.root / "bundle"
        self.work = self.root / "work"
        self.bundle.mkdir()
        self.work.mkdir()

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self.created_out and not any(self.out.iterdir()):  # a failed first build leaves no empty folder behind
            self.out.rmdir()

    def publish(self, entries=PUBLISHED_ENTRIES) -> None:
        """Swap each finished entry into `out`: the old one is renamed aside first and deleted only after the
        new one is in place."""
        shutil.rmtree(self.work, ignore_errors=True)
        _make_readable(self.root)
        for name in entries:
            new = self.root / name
            if not new.exists():
                continue
            target = self.out / name
            old = self.root / f"{name}.previous"
            if target.exists():
                os.replace(target, old)
            os.replace(new, target)
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()


def _make_readable(root: Path) -> None:
    """Temp files are created 0600; published files are for copying into apps and sharing: 0644 / 0755."""
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    root.chmod(0o755)


def remove_stale_staging(out: Path) -> None:
    """Staging folders left by a build that was killed (SIGKILL skips cleanup); a running build's are kept."""
    for p in Path(out).glob(STAGING_PREFIX + "*") if Path(out).is_dir() else []:
        pid = p.name[len(STAGING_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
