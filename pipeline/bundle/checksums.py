"""What a bundle carries to prove its files: `SHA256SUMS` (coreutils format, so `sha256sum -c` works) and the
`android.zip` / `ios.zip` archives an app developer downloads, byte-identical for identical folders.

`zip_platform_folders` runs before `write_sha256sums`, so that the sums cover the zips.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ...exporters.registry import FORMATS
from ..core.files import file_sha256, write_atomic, write_text_atomic

SUMS_NAME = "SHA256SUMS"
ZIPPED_FOLDERS = tuple(spec.bundle_dir for spec in FORMATS.values() if spec.bundle_dir in ("android", "ios"))
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: equal folders give byte-identical zips
SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")  # sha256sum's text (" ") and binary ("*") markers


def write_sha256sums(bundle: Path) -> Path:
    """`<sha256>  <path>` for every bundle file (mlpackage internals one by one), sorted, POSIX paths."""
    bundle = Path(bundle)
    text = "".join(f"{file_sha256(bundle / rel)}  {rel}\n" for rel in bundle_files(bundle) if rel != SUMS_NAME)
    return write_text_atomic(bundle / SUMS_NAME, text)


def zip_platform_folders(bundle: Path) -> list[Path]:
    """`android.zip` / `ios.zip` beside their folders, each holding `<folder>/...`: what an app developer
    downloads. Sorted entries, fixed timestamps and permissions, so the same folder always gives the same bytes
    (and the same line in SHA256SUMS)."""
    bundle = Path(bundle)
    written = []
    for folder in ZIPPED_FOLDERS:
        if not (bundle / folder).is_dir():
            continue
        dest = bundle / f"{folder}.zip"
        write_atomic(dest, lambda f, folder=folder: _write_zip(f, bundle / folder, folder))
        written.append(dest)
    return written


def bundle_files(root: Path) -> list[str]:
    """Every file under `root` as a sorted POSIX relative path, hidden files left out: Finder's .DS_Store and
    editors' droppings are not bundle content."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in Path(root).rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _write_zip(f, source: Path, folder: str) -> None:
    with zipfile.ZipFile(f, "w") as zf:
        for rel in bundle_files(source):
            info = zipfile.ZipInfo(f"{folder}/{rel}", date_time=ZIP_TIME)
            info.create_system = 3  # Unix, so the permission bits below mean the same on every OS
            info.external_attr = 0o100644 << 16
            zf.writestr(info, (source / rel).read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
