"""The build history: an embedded SQLite file with one row per build and one per artifact of it.

The file lives in the cache folder (`~/.cache/imgpipe/history.sqlite`, or `CACHE_DIR/history.sqlite`, or
`--history FILE`). Its layout is versioned from the first release: `schema_version` holds the number of the last
migration applied, and `MIGRATIONS` are the ordered steps from an empty file to the current layout, each applied
once in its own transaction, so an older file is brought forward when it is opened and a newer one is refused
rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..config import default_cache_dir
from ..core.errors import ImgpipeError
from ..core.version import __version__

HISTORY_FILE = "history.sqlite"
HISTORY_HELP = "build history database (default: CACHE_DIR/history.sqlite, CACHE_DIR being ~/.cache/imgpipe)"

# Ordered steps from an empty file to the current layout: (version, what it adds, statements).
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (
        1,
        "builds and their artifacts",
        (
            """CREATE TABLE builds (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                created TEXT NOT NULL,
                out TEXT,
                bundle_sha256 TEXT,
                model TEXT,
                dataset TEXT,
                dataset_digest TEXT,
                images INTEGER,
                classes INTEGER,
                labels TEXT,
                imgpipe_version TEXT,
                config TEXT,
                timings TEXT,
                seconds REAL,
                reference_accuracy REAL
            )""",
            """CREATE TABLE artifacts (
                build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                format TEXT NOT NULL,
                variant TEXT NOT NULL,
                source TEXT NOT NULL,
                published INTEGER NOT NULL,
                path TEXT,
                bytes INTEGER,
                gzip_bytes INTEGER,
                accuracy REAL,
                accuracy_drop REAL,
                macro_f1 REAL,
                latency_ms_p50 REAL,
                latency_ms_p95 REAL,
                gates TEXT,
                PRIMARY KEY (build_id, name)
            )""",
            "CREATE INDEX builds_by_out ON builds(out)",
            "CREATE INDEX builds_by_bundle ON builds(bundle_sha256)",
        ),
    ),
    (
        2,
        "per-test-photo predictions (which photos changed prediction between builds)",
        (
            "ALTER TABLE builds ADD COLUMN test_photos TEXT",  # JSON [[relative path, sha256, true label], ...]
            "ALTER TABLE builds ADD COLUMN reference_predictions BLOB",  # uint16 per test photo, keras:float
            "ALTER TABLE artifacts ADD COLUMN predictions BLOB",  # uint16 per test photo, in test_photos order
        ),
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
ARTIFACT_COLUMNS = (
    "name",
    "format",
    "variant",
    "source",
    "published",
    "path",
    "bytes",
    "gzip_bytes",
    "accuracy",
    "accuracy_drop",
    "macro_f1",
    "latency_ms_p50",
    "latency_ms_p95",
    "gates",
    "predictions",
)


class HistoryError(ImgpipeError):
    """The history file cannot be used, or a build asked for is not in it."""


def history_path(path: Path | None = None, cache_dir: Path | None = None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    return Path(cache_dir or default_cache_dir()) / HISTORY_FILE


def schema_version(db: sqlite3.Connection) -> int:
    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if not has_table:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Apply every migration after the file's version, up to `upto`, each in its own transaction; returns the
    version reached. Concurrent openers serialise on BEGIN IMMEDIATE, and each re-reads the version inside."""
    for version, _, statements in MIGRATIONS:
        if version > upto:
            break
        db.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(db)
            if current >= version:
                db.execute("COMMIT")
                continue
            if current == 0:
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version VALUES (0)")
            for statement in statements:
                db.execute(statement)
            db.execute("UPDATE schema_version SET version = ?", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return schema_version(db)


class History:
    """An open history file. `History.open(path)` creates and migrates it; use it as a context manager."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db, self.path = db, path

    @classmethod
    def open(cls, path: Path | None = None, cache_dir: Path | None = None, create: bool = True) -> History:
        path = history_path(path, cache_dir)
        if not create and not path.is_file():
            raise HistoryError(
                f"{path}: no build history yet; run `imgpipe build` first, or pass --history FILE "
                "(builds record into CACHE_DIR/history.sqlite)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            found = schema_version(db)
            if found > SCHEMA_VERSION:
                db.close()
                raise HistoryError(
                    f"{path}: history schema version {found} is newer than this imgpipe ({__version__}) reads "
                    f"(up to {SCHEMA_VERSION}); upgrade imgpipe or pass --history with another file"
                )
            migrate(db)
        except sqlite3.DatabaseError as e:
            raise HistoryError(f"{path}: not a usable history database ({e}); move it away or pass --history") from None
        return cls(db, path)

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def add(self, record: dict) -> int:
        """Store a build record (see `records.build_record`); returns its id."""
        photos = record.get("test_photos")
        with self._transaction() as db:
            cursor = db.execute(
                """INSERT INTO builds (created, out, bundle_sha256, model, dataset, dataset_digest, images, classes,
                labels, imgpipe_version, config, timings, seconds, reference_accuracy, test_photos,
                reference_predictions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    record["created"],
                    record.get("out"),
                    record.get("bundle_sha256"),
                    record.get("model"),
                    record["dataset"]["name"],
                    record["dataset"]["digest"],
                    record["dataset"].get("images"),
                    record["dataset"].get("classes"),
                    json.dumps(record["labels"]),
                    record.get("imgpipe_version"),
                    json.dumps(record.get("config") or {}),
                    json.dumps(record.get("timings") or {}),
                    record.get("seconds"),
                    record["reference"].get("accuracy"),
                    json.dumps(photos) if photos is not None else None,
                    _pack(record.get("reference_predictions")),
                ),
            )
            build_id = int(cursor.lastrowid)
            for a in record["artifacts"]:
                values = {**a, "gates": json.dumps(a.get("gates")), "predictions": _pack(a.get("predictions"))}
                values["published"] = int(bool(a.get("published")))
                db.execute(
                    f"INSERT INTO artifacts (build_id, {', '.join(ARTIFACT_COLUMNS)}) "
                    f"VALUES (?, {', '.join('?' for _ in ARTIFACT_COLUMNS)})",
                    (build_id, *(values.get(c) for c in ARTIFACT_COLUMNS)),
                )
        return build_id

    def builds(self, limit: int | None = None) -> list[dict]:
        """Newest first, without per-photo predictions: what `imgpipe history` lists."""
        sql = "SELECT id FROM builds ORDER BY id DESC" + (" LIMIT ?" if limit else "")
        ids = [row["id"] for row in self.db.execute(sql, (limit,) if limit else ())]
        return [self.get(i, predictions=False) for i in ids]

    def get(self, build_id: int, predictions: bool = True) -> dict:
        row = self.db.execute("SELECT * FROM builds WHERE id = ?", (build_id,)).fetchone()
        if row is None:
            last = self.db.execute("SELECT max(id) FROM builds").fetchone()[0]
            known = f"builds 1-{last}" if last else "no builds yet"
            raise HistoryError(f"build {build_id} is not in {self.path} ({known}); see `imgpipe history`")
        artifacts = []
        for a in self.db.execute("SELECT * FROM artifacts WHERE build_id = ? ORDER BY rowid", (build_id,)):
            entry = {c: a[c] for c in ARTIFACT_COLUMNS if c != "predictions"}
            entry["published"] = bool(entry["published"])
            entry["gates"] = json.loads(a["gates"]) if a["gates"] else None
            if predictions:
                entry["predictions"] = _unpack(a["predictions"])
            artifacts.append(entry)
        record = {
            "id": row["id"],
            "created": row["created"],
            "out": row["out"],
            "bundle_sha256": row["bundle_sha256"],
            "model": row["model"],
            "dataset": {
                "name": row["dataset"],
                "digest": row["dataset_digest"],
                "images": row["images"],
                "classes": row["classes"],
            },
            "labels": json.loads(row["labels"] or "[]"),
            "imgpipe_version": row["imgpipe_version"],
            "config": json.loads(row["config"] or "{}"),
            "timings": json.loads(row["timings"] or "{}"),
            "seconds": row["seconds"],
            "reference": {"accuracy": row["reference_accuracy"]},
            "artifacts": artifacts,
        }
        if predictions:
            record["test_photos"] = json.loads(row["test_photos"]) if row["test_photos"] else None
            record["reference_predictions"] = _unpack(row["reference_predictions"])
        return record

    def previous(self, build_id: int) -> dict | None:
        """What "vs last build" compares with: the latest earlier build into the same output folder, else the
        latest earlier build of the same dataset content."""
        for column in ("out", "dataset_digest"):
            row = self.db.execute(
                f"SELECT id FROM builds WHERE id < ? AND {column} = (SELECT {column} FROM builds WHERE id = ?) "
                "ORDER BY id DESC",
                (build_id, build_id),
            ).fetchone()
            if row is not None:
                return self.get(row["id"])
        return None

    def find_bundle(self, bundle_sha256: str) -> dict | None:
        row = self.db.execute(
            "SELECT id FROM builds WHERE bundle_sha256 = ? ORDER BY id DESC", (bundle_sha256,)
        ).fetchone()
        return None if row is None else self.get(row["id"])

    def resolve(self, ref: str) -> dict:
        """A build record from an id, a build folder, a bundle folder or a manifest.json."""
        from .records import record_from_bundle

        text = str(ref).strip().lstrip("#")
        if text.isdigit():
            return self.get(int(text))
        return record_from_bundle(Path(ref), self)


def _pack(values) -> bytes | None:
    return None if values is None else np.asarray(values, dtype="<u2").tobytes()


def _unpack(blob: bytes | None) -> list[int] | None:
    return None if blob is None else np.frombuffer(blob, dtype="<u2").astype(int).tolist()
