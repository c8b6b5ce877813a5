"""What `inspect`, `predict` and `evaluate` do with things that are not a bundle, or a bundle someone altered: one
line each, and memory that stays flat whatever an archive claims to hold. A small fake bundle stands in for a
real one (no model is run here)."""

from __future__ import annotations

import hashlib
import json
import re
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from imgpipe.pipeline.bundle.checksums import write_sha256sums, zip_platform_folders
from imgpipe.pipeline.bundle.inspect import inspect_bundle
from imgpipe.pipeline.bundle.manifest import read_manifest
from imgpipe.pipeline.commands.cli import main
from imgpipe.pipeline.core.errors import BundleError

MODEL = bytes(range(256)) * 64  # 16 kB standing in for android/model.tflite


def fake_bundle(root: Path) -> Path:
    bundle = root / "bundle"
    (bundle / "android").mkdir(parents=True)
    (bundle / "android" / "model.tflite").write_bytes(MODEL)
    (bundle / "android" / "labels.txt").write_text("cat\ndog\n")
    manifest = {
        "schema_version": 2,
        "model": {"name": "Pets", "version": "1"},
        "labels": ["cat", "dog"],
        "preprocessing": {"image_size": 96, "mean": [127.5] * 3, "std": [127.5] * 3},
        "artifacts": [
            {
                "format": "tflite",
                "variant": "fp32",
                "source": "float",
                "path": "android/model.tflite",
                "sha256": hashlib.sha256(MODEL).hexdigest(),
                "bytes": len(MODEL),
                "metrics": {"accuracy": 0.9},
            }
        ],
        "rejected": [],
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    zip_platform_folders(bundle)
    write_sha256sums(bundle)
    return bundle


def altered(bundle: Path, change) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


def test_the_fake_bundle_inspects_clean(tmp_path):
    assert inspect_bundle(fake_bundle(tmp_path)).ok


@pytest.mark.parametrize(
    "given, expected",
    [
        ("bundle/android.zip", "a zip archive"),
        ("bundle/android/model.tflite", "a TFLite model"),
        ("bundle/android/labels.txt", "a file, not a bundle"),
        ("bundle/android", "no manifest.json"),
        ("nowhere", "no manifest.json"),
    ],
)
def test_inspect_answers_anything_that_is_not_a_bundle_in_one_line(tmp_path, capsys, given, expected):
    fake_bundle(tmp_path)
    code, err = run(capsys, "inspect", tmp_path / given)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


def test_a_manifest_given_instead_of_its_folder_is_its_bundle(tmp_path, capsys):
    bundle = fake_bundle(tmp_path)
    assert run(capsys, "inspect", bundle / "manifest.json")[0] == 0


@pytest.mark.parametrize(
    "content, expected",
    [
        (bytes(range(256)), "not a text file"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "schema_version None"),
        (json.dumps({"schema_version": 2}).encode(), "'labels' is not a list"),
    ],
)
def test_a_manifest_that_is_not_imgpipes_is_one_line(tmp_path, capsys, content, expected):
    bundle = fake_bundle(tmp_path)
    (bundle / "manifest.json").write_bytes(content)
    for command in (["inspect", bundle], ["predict", bundle, bundle / "android" / "labels.txt"]):
        code, err = run(capsys, *command)
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda m: m.update(labels="cat"), "'labels' is not a list"),
        (lambda m: m["preprocessing"].update(image_size="96"), "image_size' is not a positive whole number"),
        (lambda m: m["preprocessing"].update(std=[0, 1, 1]), "std' holds a zero"),
        (lambda m: m.update(artifacts={"path": "x"}), "'artifacts' is not a list of objects"),
        (lambda m: m["artifacts"][0].update(path=5), "'artifacts[0].path' is not a string"),
        (lambda m: m["artifacts"][0].update(metrics={"accuracy": "high"}), "metrics.accuracy' is not a number"),
        (lambda m: m["artifacts"][0].update(gates={"passed": "yes"}), "gates' is not a gate result"),
    ],
)
def test_a_manifest_with_wrong_types_is_one_line_naming_the_field(tmp_path, change, expected):
    bundle = altered(fake_bundle(tmp_path), change)
    with pytest.raises(BundleError, match=re.escape(expected)):
        read_manifest(bundle)


@pytest.mark.parametrize("path", ["../elsewhere.tflite", "/etc/passwd", "android/../../x.tflite"])
def test_manifest_paths_outside_the_bundle_are_refused_by_predict(tmp_path, capsys, path):
    bundle = altered(fake_bundle(tmp_path), lambda m: m["artifacts"][0].update(path=path))
    (tmp_path / "elsewhere.tflite").write_bytes(MODEL)
    (tmp_path / "photo.png").write_bytes(b"")
    code, err = run(capsys, "predict", bundle, tmp_path / "photo.png")
    assert code == 2 and "outside the bundle" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("path", ["../elsewhere.tflite", "/etc/hostname"])
def test_inspect_does_not_read_manifest_paths_outside_the_bundle(tmp_path, monkeypatch, path):
    bundle = altered(fake_bundle(tmp_path), lambda m: m["artifacts"][0].update(path=path))
    (tmp_path / "elsewhere.tflite").write_bytes(MODEL)
    from imgpipe.pipeline.bundle import inspect as inspect_module

    read = []
    real_tree_sha256 = inspect_module.tree_sha256
    monkeypatch.setattr(inspect_module, "tree_sha256", lambda p: read.append(p) or real_tree_sha256(p))
    result = inspect_bundle(bundle)
    assert (path, "outside the bundle (listed in manifest.json), not read") in [
        (p.path, p.issue) for p in result.problems
    ]
    assert read == [], "nothing outside the bundle was read"


def test_a_link_out_of_the_bundle_is_reported_not_followed(tmp_path):
    bundle = fake_bundle(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the bundle's")
    (bundle / "android" / "labels.txt").unlink()
    (bundle / "android" / "labels.txt").symlink_to(secret)
    result = inspect_bundle(bundle)
    assert [(p.path, p.issue) for p in result.problems][0] == (
        "android/labels.txt",
        "a link to a file outside the bundle",
    )


def test_an_unknown_format_in_the_manifest_is_skipped_by_predict(tmp_path, capsys):
    """A newer imgpipe's format: predict picks among the formats it knows (here none is left, which it says)."""
    bundle = altered(fake_bundle(tmp_path), lambda m: m["artifacts"][0].update(format="future"))
    (tmp_path / "photo.png").write_bytes(b"")
    code, err = run(capsys, "predict", bundle, tmp_path / "photo.png")
    assert code == 2 and "no artifact in this bundle can predict" in err, err


def test_a_zip_bomb_in_a_bundle_is_not_decompressed(tmp_path):
    """android.zip replaced by one whose model claims 64 MB of zeros (64 kB compressed): inspect reports the
    zip without inflating it, and never holds more than a chunk of a member in memory."""
    bundle = fake_bundle(tmp_path)
    with zipfile.ZipFile(bundle / "android.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("android/model.tflite", "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(bytes(1 << 20))
        zf.writestr("android/labels.txt", "cat\ndog\n")
    write_sha256sums(bundle)  # as if the sums were regenerated too: only the zip's content can tell
    tracemalloc.start()
    result = inspect_bundle(bundle)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [p.path for p in result.problems] == ["android.zip"] and "differs" in result.problems[0].issue
    assert peak < 8 << 20, f"inspect held {peak:,} bytes"


def test_a_member_as_large_as_the_file_is_hashed_in_chunks(tmp_path):
    """When sizes agree the member is read, a megabyte at a time, and compared by hash."""
    bundle = fake_bundle(tmp_path)
    big = bytes(32 << 20)
    (bundle / "android" / "model.tflite").write_bytes(big)
    altered(bundle, lambda m: m["artifacts"][0].update(sha256=hashlib.sha256(big).hexdigest(), bytes=len(big)))
    zip_platform_folders(bundle)
    write_sha256sums(bundle)
    tracemalloc.start()
    result = inspect_bundle(bundle)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.ok, result.problems
    assert peak < 8 << 20, f"inspect held {peak:,} bytes for a 32 MB member"


@pytest.mark.parametrize("k", ["0", "-2"])
def test_predict_top_k_below_one_is_refused_before_loading_anything(tmp_path, capsys, k):
    code, err = run(capsys, "predict", tmp_path / "missing-bundle", tmp_path / "x.png", "--top-k", k)
    assert code == 2 and err == f"imgpipe: error: --top-k {k}: must be at least 1"
