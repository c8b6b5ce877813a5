"""The operating system saying no: a read-only or full disk, a file where a folder should be, a permission. Each is
one line naming the path and the fix (exit 2), the previous bundle stays as it was and nothing half-written is
left behind.

Disk-full is tested two ways: ENOSPC injected into single writes (unit tests, everywhere), and real builds on a
size-limited tmpfs (`mount -t tmpfs -o size=...`, which needs root: skipped with the reason elsewhere).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import quick_build_args, write_pattern_dataset

from imgpipe.pipeline.bundle.lock import BUILD_LOCK, lock_build
from imgpipe.pipeline.core.errors import ExportError, FileSystemError, filesystem_error
from imgpipe.pipeline.core.files import prepare_folder, write_atomic, write_bytes_atomic


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A size-limited (or read-only) filesystem at `path`, or a skip saying why there cannot be one."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


@contextmanager
def read_only_folder(path: Path):
    """A folder nobody can create files in: chmod for a normal user, a read-only tmpfs for root."""
    if os.name == "posix" and os.geteuid() != 0:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with tmpfs(path, "1m", read_only=True):
            yield path


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("imgpipe:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files_and_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- turning refusals into one line ---------------------------------------------------------------------------


def test_os_errors_become_one_line_naming_the_path_and_the_fix():
    full = filesystem_error(OSError(errno.ENOSPC, "No space left on device", "/data/out/keras/model.keras"))
    assert (
        str(full)
        == "/data/out/keras/model.keras: no space left on that disk; free some space or choose a folder on another disk"
    )
    assert isinstance(full, FileSystemError) and full.exit_code == 2
    assert "read-only" in str(filesystem_error(OSError(errno.EROFS, "Read-only file system", "/ro/out")))
    assert "permission denied" in str(filesystem_error(PermissionError(errno.EACCES, "Permission denied", "/x")))
    assert filesystem_error(OSError(errno.ENOENT, "No such file or directory", "/x")) is None, "a bug keeps its trace"
    assert filesystem_error(ValueError("unrelated")) is None


def test_a_converters_error_is_looked_through_to_the_full_disk_under_it():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/.staging/work/saved_model.pb")
        except OSError as e:
            raise ExportError(f"TFLite fp32 conversion failed: {e}") from None
    except ExportError as e:
        assert str(filesystem_error(e)).startswith("/out/.staging/work/saved_model.pb: no space left")

    class ResourceExhaustedError(Exception):  # TensorFlow's own type, with the system's words in it
        pass

    tf_error = ResourceExhaustedError("/out/logs/events.out.tfevents; No space left on device")
    line = str(filesystem_error(tf_error, where=lambda code: "/out"))
    assert line.startswith("/out: no space left on that disk") and "events.out.tfevents" in line


def test_a_write_that_fails_names_its_file_and_leaves_no_temporary(tmp_path):
    dest = write_bytes_atomic(tmp_path / "manifest.json", b"old")

    def fill_the_disk(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        write_atomic(dest, fill_the_disk)
    assert e.value.filename == str(dest)
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_full_disk_at_any_feature_write_leaves_no_truncated_cache_entry(tmp_path, monkeypatch):
    """ENOSPC injected into the k-th cache write, for every k: the entries written before are whole, the rest
    absent, and a rerun computes exactly the missing ones."""
    from imgpipe.pipeline.core.preprocessing import Preprocessing
    from imgpipe.pipeline.data.photos import Photos
    from imgpipe.pipeline.training import features as features_module

    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    photos = Photos.from_array(images, np.zeros(5), [f"{i:02d}" + "ab" * 31 for i in range(5)])
    monkeypatch.setattr(features_module, "compiled", lambda extractor: lambda x: x.reshape(len(x), -1)[:, :4])

    real_save = np.save
    for k in range(len(images)):
        folder = tmp_path / f"k{k}"
        writes = []

        def failing_save(f, array, k=k, writes=writes):
            writes.append(1)
            if len(writes) > k:
                f.write(b"\x93NUMPY partial")
                raise OSError(errno.ENOSPC, "No space left on device")
            real_save(f, array)

        monkeypatch.setattr(features_module.np, "save", failing_save)
        with pytest.raises(OSError) as e:
            features_module.cached_features(None, photos, folder, Preprocessing(8))
        assert e.value.errno == errno.ENOSPC and str(folder) in e.value.filename
        monkeypatch.setattr(features_module.np, "save", real_save)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        assert len(files) == k and all(p.suffix == ".npy" for p in files), "no temporary or truncated file"
        for p in files:
            assert np.load(p).shape == (4,)
        assert features_module.cached_features(None, photos, folder, Preprocessing(8)).computed == len(images) - k


# --- paths checked before any work ----------------------------------------------------------------------------


def test_an_output_that_is_a_file_or_inside_a_file_is_refused(tmp_path):
    (tmp_path / "report.txt").write_text("x")
    with pytest.raises(FileSystemError, match=r"report.txt: is a file, not a folder; --out takes a folder"):
        prepare_folder(tmp_path / "report.txt", "--out", "the build folder")
    with pytest.raises(FileSystemError, match=r"report.txt: is a file, so .*report.txt/a/b cannot be a folder"):
        prepare_folder(tmp_path / "report.txt" / "a" / "b", "--out", "the build folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileSystemError, match="broken symbolic link"):
        prepare_folder(tmp_path / "dangling", "--cache-dir", "the cache")


def test_an_output_on_a_read_only_filesystem_is_refused(tmp_path):
    with read_only_folder(tmp_path / "ro") as ro:
        with pytest.raises(FileSystemError) as e:
            prepare_folder(ro / "out", "--out", "the build folder")
        message = str(e.value)
        assert message.startswith(str(ro / "out")) and message.endswith("(--out)")
        assert "read-only" in message or "permission denied" in message
        assert not (ro / "out").exists()


def test_an_existing_output_that_became_read_only_is_refused(tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        (disk / "out" / "bundle").mkdir(parents=True)
        (disk / "out" / "bundle" / "manifest.json").write_text("{}")
        remount_read_only(disk)
        with pytest.raises(FileSystemError, match=f"^{disk / 'out'}: that filesystem is read-only"):
            prepare_folder(disk / "out", "--out", "the build folder")


def test_an_unreadable_config_file_is_one_line(tmp_path, monkeypatch):
    from imgpipe.pipeline.core.errors import ConfigError
    from imgpipe.pipeline.settings import load_config_file

    config = tmp_path / "imgpipe.toml"
    config.write_text("[train]\nepochs = 2\n")
    real_open = open

    def denied(path, *args, **kwargs):
        if Path(path) == config:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(ConfigError, match=f"^--config {config}: permission denied"):
        load_config_file(config)


def test_an_unreadable_dataset_file_stops_the_scan_naming_it(tmp_path, monkeypatch):
    from imgpipe.pipeline.data.dataset import scan_dataset

    data = write_pattern_dataset(tmp_path / "data", n_per_class=2, seed=0)
    locked = sorted(data.rglob("*.png"))[0]
    real_read = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(PermissionError) as e:
        scan_dataset(data)
    assert str(filesystem_error(e.value)).startswith(f"{locked}: permission denied")


def test_the_lock_file_is_the_only_trace_of_a_refused_second_build(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = lock_build(out, wait=False)
    try:
        assert (out / BUILD_LOCK).exists()
    finally:
        holder.release()
    assert list(out.iterdir()) == []


# --- through the command line ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_bad_output_and_cache_paths_are_refused_before_any_work(tmp_path, capsys):
    from imgpipe.pipeline.commands.cli import main

    data = write_pattern_dataset(tmp_path / "data", n_per_class=3, seed=1)
    (tmp_path / "a-file").write_text("x")
    cases = {
        "--out is a file": (["--out", str(tmp_path / "a-file")], "a-file: is a file, not a folder; --out"),
        "--out inside a file": (["--out", str(tmp_path / "a-file" / "out")], "a-file: is a file, so"),
        "--cache-dir is a file": (["--cache-dir", str(tmp_path / "a-file")], "is a file, not a folder; --cache-dir"),
        "--out inside the dataset": (["--out", str(data / "build")], "inside the dataset folder"),
    }
    for name, (extra, expected) in cases.items():
        started = time.perf_counter()
        code = main([*quick_build_args(data, tmp_path / "out", tmp_path / "cache"), *extra])
        line = one_line(capsys.readouterr().err)
        assert code == 2 and expected in line, (name, line)
        assert time.perf_counter() - started < 20, f"{name}: refused only after some work"
    assert not (tmp_path / "out").exists() and not (data / "build").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_a_second_build_into_a_held_out_exits_2_at_once(tmp_path, capsys):
    from imgpipe.pipeline.commands.cli import main

    data = write_pattern_dataset(tmp_path / "data", n_per_class=3, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    holder = lock_build(out, wait=False)
    try:
        started = time.perf_counter()
        code = main(quick_build_args(data, out, tmp_path / "cache"))
        line = one_line(capsys.readouterr().err)
    finally:
        holder.release()
    assert code == 2 and time.perf_counter() - started < 20
    assert f"{out}: another imgpipe build is writing to this folder (pid {os.getpid()} on " in line
    assert "--wait" in line


@pytest.mark.slow
@pytest.mark.e2e
def test_a_full_disk_during_a_build_keeps_the_previous_bundle(cli_build, tmp_path, capsys):
    """A real ENOSPC: OUT on a tmpfs with room for the previous build and 2 MB more."""
    from imgpipe.pipeline.commands.cli import main

    previous = cli_build[1]
    used = sum(p.stat().st_size for p in previous.rglob("*") if p.is_file())
    with tmpfs(tmp_path / "disk", f"{used // 1024 + 2048}k") as disk:
        out = Path(shutil.copytree(previous, disk / "out"))
        before = files_and_bytes(out)
        data = write_pattern_dataset(tmp_path / "data", n_per_class=3, seed=1)
        code = main(quick_build_args(data, out, tmp_path / "cache", "--targets", "tflite"))
        line = one_line(capsys.readouterr().err)
        assert code == 2 and "no space left on that disk" in line and str(out) in line, line
        assert files_and_bytes(out) == before, "the previous bundle and reports are exactly as they were"
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".imgpipe-publish.lock"], (
            "no staging folder, temporary file or lock is left"
        )


@pytest.mark.slow
@pytest.mark.e2e
def test_a_full_cache_disk_leaves_no_truncated_entry(tiny_backbone_weights, tmp_path, capsys):
    from imgpipe.pipeline.commands.cli import main

    data = write_pattern_dataset(tmp_path / "data", n_per_class=12, seed=3)
    with tmpfs(tmp_path / "cache", "48k") as cache:
        args = quick_build_args(data, tmp_path / "out", cache, "--targets", "tflite")
        code = main([*args, "--weights", str(tiny_backbone_weights)])
        line = one_line(capsys.readouterr().err)
        assert code == 2 and "no space left on that disk" in line and str(cache) in line, line
        entries = [p for p in cache.rglob("*") if p.is_file()]
        assert entries and all(p.suffix in (".npy", ".json") for p in entries), "no temporary file is left"
        for p in entries:
            np.load(p) if p.suffix == ".npy" else json.loads(p.read_text())  # every entry that exists is whole
    assert not (tmp_path / "out").exists(), "a failed first build leaves no output folder"


def test_a_weights_file_you_may_not_read_says_so(tmp_path, monkeypatch):
    from imgpipe.pipeline.core.errors import WeightsError
    from imgpipe.pipeline.training import weights

    path = tmp_path / "mobilenet_v2_0.5_no_top.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setattr(weights.os, "access", lambda p, mode: False)  # root may read anything: pretend
    with pytest.raises(WeightsError, match=f"^--weights {path}: permission denied"):
        weights.weight_shapes(path)


@pytest.mark.parametrize("make, words", [(lambda p: p.write_text("x"), "is a file"), (lambda p: None, "not found")])
def test_a_dataset_that_is_not_a_folder_is_said_before_the_weights_are_fetched(tmp_path, capsys, make, words):
    from imgpipe.pipeline.commands.cli import main

    dataset = tmp_path / "photos"
    make(dataset)
    code = main(["build", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--weights", "imagenet"])
    line = one_line(capsys.readouterr().err)
    assert (
        code == 2
        and line == f"imgpipe: error: {dataset}: {words}; pass a folder with one sub-folder of images per class"
    )
