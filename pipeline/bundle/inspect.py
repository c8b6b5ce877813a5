"""`imgpipe inspect`: what a bundle holds, and whether every file in it is still the file that was published.

Three independent records are checked when present: the manifest's per-artifact sha256, `SHA256SUMS` (one line
per bundle file, so `sha256sum -c SHA256SUMS` works in the bundle folder too) and the `android.zip` / `ios.zip`
archives an app developer downloads. A problem is reported once, on the most specific file known to be wrong: a
changed weight file inside an .mlpackage is named rather than the whole package, and a zip is compared with the
sums (not the folder), so altering one folder file does not make its zip look altered too.

"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from ..core.errors import BundleError
from ..core.files import file_sha256, tree_sha256
from ..reports.table import artifact_rows, format_table
from .checksums import SUMS_LINE, SUMS_NAME, ZIPPED_FOLDERS, bundle_files
from .manifest import MANIFEST_NAME, bundle_folder, read_manifest

FIX = "restore the bundle from where it was published, or rebuild it"
SUMS_MAX_BYTES = 16 << 20  # one line per file: a real SHA256SUMS is a few kB
ZIP_MEMBER_MAX_BYTES = 2 << 30  # larger than any mobile model; a member claiming more is not one
CHUNK = 1 << 20  # zip members are hashed a chunk at a time: memory stays flat whatever a member claims to hold


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the bundle, POSIX
    issue: str
    found_by: str  # which record disagrees: manifest.json, SHA256SUMS or a zip


@dataclass
class InspectResult:
    bundle: Path
    model: dict
    labels: list[str]
    preprocessing: dict
    artifacts: list[dict]  # manifest entries plus `checksum_ok`
    verified: list[str]  # what was checked, for the summary line
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def error(self) -> BundleError | None:
        """The first problem as one line that starts with its file, and how many more there are."""
        if self.ok:
            return None
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        return BundleError(f"{self.bundle / first.path}: {first.issue}; {FIX}{more}")

    def to_dict(self) -> dict:
        return {
            "bundle": str(self.bundle),
            "ok": self.ok,
            "model": self.model,
            "labels": self.labels,
            "preprocessing": self.preprocessing,
            "artifacts": self.artifacts,
            "verified": self.verified,
            "problems": [asdict(p) for p in self.problems],
        }


def inspect_bundle(bundle: Path) -> InspectResult:
    """Summarise the manifest and verify every checksum record the bundle carries; never raises for a problem
    with a file (they are collected), only for an unreadable manifest."""
    bundle = bundle_folder(bundle)
    manifest = read_manifest(bundle)
    problems = _Problems()
    sums = _read_sums(bundle, problems)
    if sums is not None:  # first: it names single files, the manifest only whole artifacts
        _check_sums(bundle, sums, problems)
    artifacts = [_check_artifact(bundle, entry, problems) for entry in manifest["artifacts"]]
    zips = [folder for folder in ZIPPED_FOLDERS if (bundle / f"{folder}.zip").is_file()]
    for folder in zips:
        _check_zip(bundle, folder, sums, problems)
    verified = (
        [f"{len(artifacts)} artifact checksums ({MANIFEST_NAME})"]
        + ([f"{len(sums)} files ({SUMS_NAME})"] if sums is not None else [])
        + [f"{folder}.zip" for folder in zips]
    )
    return InspectResult(
        bundle,
        manifest.get("model", {}),
        list(manifest["labels"]),
        manifest["preprocessing"],
        artifacts,
        verified,
        problems.items,
    )


def format_inspection(result: InspectResult) -> str:
    p = result.preprocessing
    size = p["image_size"]
    lines = [
        f"bundle: {result.bundle}",
        f"model: {result.model.get('name', '?')} {result.model.get('version', '')}".rstrip()
        + (f" - {result.model['description']}" if result.model.get("description") else ""),
        f"labels ({len(result.labels)}): {', '.join(result.labels)}",
        f"input: {size}x{size} {p.get('channel_order', 'RGB')} {p.get('layout', 'NHWC')}, {p.get('resize', '')}; "
        f"(pixel - {_same(p['mean'])}) / {_same(p['std'])}",
        "",
        format_table(artifact_rows(result.artifacts)),
        "",
    ]
    lines += [f"  {'ok' if a['checksum_ok'] else 'CHANGED':<8} {a['path']}" for a in result.artifacts]
    lines.append(f"verified: {', '.join(result.verified)}")
    if result.ok:
        lines.append("OK: every file matches its checksum")
    else:
        lines.append(f"{len(result.problems)} problem(s):")
        lines += [f"  {q.path}: {q.issue}" for q in result.problems]
    return "\n".join(lines)


class _Problems:
    """Problems in discovery order, one per file; a record that only confirms a known problem adds nothing."""

    def __init__(self):
        self.items: list[Problem] = []

    def covers(self, path: str) -> bool:
        return any(p.path == path or p.path.startswith(path + "/") for p in self.items)

    def add(self, path: str, issue: str, found_by: str) -> None:
        if not self.covers(path):
            self.items.append(Problem(path, issue, found_by))


def _read_sums(bundle: Path, problems: _Problems) -> dict[str, str] | None:
    path = bundle / SUMS_NAME
    if not path.is_file():
        return None
    if path.stat().st_size > SUMS_MAX_BYTES:
        problems.add(SUMS_NAME, f"{path.stat().st_size:,} bytes, too large to be a checksum list", SUMS_NAME)
        return {}
    sums = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        match = SUMS_LINE.match(line)
        rel = PurePosixPath(match.group(2)) if match else None
        if rel is None or rel.is_absolute() or ".." in rel.parts:
            problems.add(SUMS_NAME, f"line {number} is not '<sha256>  <relative path>'", SUMS_NAME)
            continue
        sums[rel.as_posix()] = match.group(1).lower()
    return sums


def _check_sums(bundle: Path, sums: dict[str, str], problems: _Problems) -> None:
    root = bundle.resolve()
    for rel, expected in sums.items():
        path = bundle / rel
        if path.exists() and not path.resolve().is_relative_to(root):
            problems.add(rel, "a link to a file outside the bundle", SUMS_NAME)
        elif not path.is_file():
            problems.add(rel, f"missing (listed in {SUMS_NAME})", SUMS_NAME)
        elif file_sha256(path) != expected:
            problems.add(rel, f"altered (sha256 differs from {SUMS_NAME})", SUMS_NAME)
    for rel in bundle_files(bundle):
        if rel not in sums and rel != SUMS_NAME:
            problems.add(rel, f"not listed in {SUMS_NAME} (added after publishing?)", SUMS_NAME)


def _check_artifact(bundle: Path, entry: dict, problems: _Problems) -> dict:
    path = bundle / entry["path"]
    rel = PurePosixPath(entry["path"])
    if rel.is_absolute() or ".." in rel.parts or not path.resolve().is_relative_to(bundle.resolve()):
        problems.add(entry["path"], f"outside the bundle (listed in {MANIFEST_NAME}), not read", MANIFEST_NAME)
        return {**entry, "checksum_ok": False}
    if not path.exists():
        ok = False
        problems.add(entry["path"], f"missing (listed in {MANIFEST_NAME})", MANIFEST_NAME)
    else:
        ok = tree_sha256(path) == entry["sha256"]
        if not ok:
            problems.add(entry["path"], f"altered (sha256 differs from {MANIFEST_NAME})", MANIFEST_NAME)
    return {**entry, "checksum_ok": ok}


def _check_zip(bundle: Path, folder: str, sums: dict[str, str] | None, problems: _Problems) -> None:
    """Compare the archive's entries with SHA256SUMS when there is one (the published truth), else with the
    folder as it is now."""
    name = f"{folder}.zip"
    if problems.covers(name):
        return
    if sums is not None:
        expected = {rel: h for rel, h in sums.items() if rel.startswith(folder + "/")}
    else:
        expected = {f"{folder}/{rel}": file_sha256(bundle / folder / rel) for rel in bundle_files(bundle / folder)}
    issues = []
    try:
        with zipfile.ZipFile(bundle / name) as zf:
            entries = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            for rel in sorted(set(entries) | set(expected)):
                if rel not in entries:
                    issues.append(f"lacks {rel}")
                elif rel not in expected:
                    issues.append(f"holds {rel}, which is not in the bundle")
                elif not _member_matches(zf, entries[rel], bundle / rel, expected[rel]):
                    issues.append(f"its {rel} differs")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError) as e:
        issues.append(f"not a readable zip ({e})")
    if issues:
        against = SUMS_NAME if sums is not None else f"the {folder}/ folder"
        more = f", +{len(issues) - 1} more" if len(issues) > 1 else ""
        problems.add(name, f"{issues[0]} (checked against {against}{more})", against)


def _member_matches(zf: zipfile.ZipFile, info: zipfile.ZipInfo, published: Path, sha256: str) -> bool:
    """Whether a zip member holds the published file: its declared size must be the file's (so a member claiming
    gigabytes is never decompressed), then its content is hashed a chunk at a time."""
    try:
        size = published.stat().st_size
    except OSError:  # the folder's copy is missing (reported on its own): only the sum can tell
        size = None
    if info.file_size > (size if size is not None else ZIP_MEMBER_MAX_BYTES):
        return False
    h, read = hashlib.sha256(), 0
    with zf.open(info) as member:
        while chunk := member.read(CHUNK):
            read += len(chunk)
            if read > info.file_size:
                return False
            h.update(chunk)
    return h.hexdigest() == sha256


def _same(values: list[float]):
    """127.5 rather than [127.5, 127.5, 127.5] when all channels agree."""
    return values[0] if len(set(values)) == 1 else values
