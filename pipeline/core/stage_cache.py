"""Results of build stages kept by what they were computed from, so a rebuild redoes only what changed.

A stage's key is a digest of exactly what it reads: the settings it uses, the digests of its inputs (file hashes
of the photos of its split, the upstream stage's key), imgpipe's version and the libraries that compute it. Its
outputs are a folder, written aside and renamed into place when complete, so a crash never leaves a half entry
that a later build would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .files import write_text_atomic
from .version import __version__, library_versions

log = logging.getLogger(__name__)

COMPLETE = "complete"  # written last inside an entry


def stage_key(stage: str, **parts) -> str:
    """A digest of `parts` (JSON-able: settings, upstream keys, file hashes), the stage name and the versions of
    imgpipe and of the libraries that compute it."""
    payload = {"stage": stage, "imgpipe": __version__, "libraries": library_versions(), **parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class StageCache:
    """Entries under `root/<stage>/<key>/`. An entry is never changed once complete; deleting the folder (or the
    whole cache) only costs recomputation."""

    root: Path

    def lookup(self, stage: str, key: str) -> Path | None:
        folder = self.root / stage / key
        return folder if (folder / COMPLETE).is_file() else None

    def holds_any(self, stage: str) -> bool:
        """Whether some complete entry of `stage` is here: a check that needs no key, so no computed inputs."""
        folder = self.root / stage
        return folder.is_dir() and any((entry / COMPLETE).is_file() for entry in folder.iterdir())

    @contextmanager
    def store(self, stage: str, key: str) -> Iterator[Path]:
        """Yield an empty folder to write the stage's outputs into; it becomes the entry only if the block ends
        without an error."""
        final = self.root / stage / key
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            yield work
            (work / COMPLETE).write_text("")
            if final.exists():  # another build stored the same entry meanwhile: equal by construction
                shutil.rmtree(work)
            else:
                os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def with_memo(self, name: str, compute):
        """`compute(memo)` with the JSON dict kept as `root/<name>.json` (what earlier builds learnt: file checks,
        weight checks), which it may add to; the dict is saved after. A missing or unreadable memo costs only the
        work it would have saved, and so does one that cannot be written."""
        path = self.root / f"{name}.json"
        try:
            memo = json.loads(path.read_text())
        except (OSError, ValueError):
            memo = {}
        memo = memo if isinstance(memo, dict) else {}
        result = compute(memo)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(memo))
        except OSError as e:
            log.warning(f"{path}: could not keep this for later builds ({e.strerror or e})")
        return result
