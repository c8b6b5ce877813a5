"""Same inputs, seed and cache, same bytes: the shared build is built again into another folder and every artifact,
zip and checksum must come out identical (what may differ, and why, is listed in README's "Failure behaviour").
And a bundle goes into apps: nothing in it may name the build machine's paths or user."""

from __future__ import annotations

import getpass
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import cli_build_args

from imgpipe.pipeline.commands.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Measured on the build machine, or when: these manifest fields (and SHA256SUMS's manifest.json line) differ.
VOLATILE_MANIFEST_FIELDS = {
    "created",
    "timings",
    "training.features_computed",  # the first build computed the features, the second read them from the cache
    "training.features_engine",  # ... so the second names no engine
    *(
        f"{where}[].metrics.{timing}"
        for where in ("artifacts", "rejected")
        for timing in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p10", "latency_cpu_ms_p50")
    ),
    "artifacts[].details.convert_seconds",
    "rejected[].details.convert_seconds",
}


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def differing_fields(a, b, path: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return {f for k in set(a) | set(b) for f in differing_fields(a.get(k), b.get(k), f"{path}.{k}".lstrip("."))}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and path in ("artifacts", "rejected"):
        return {f for x, y in zip(a, b) for f in differing_fields(x, y, f"{path}[]")}
    return set() if a == b else {path}


@pytest.fixture(scope="module")
def built_twice(cli_build, tiny_backbone_weights):
    """The shared build made again from the same photos, settings and feature cache, but with no stage cache, so
    training and every export really run a second time."""
    code, out, _ = cli_build
    root = out.parent.parent / f"{out.parent.name}-again"
    root.mkdir()
    (root / "data").symlink_to(out.parent / "data")
    (root / "imgpipe.toml").symlink_to(out.parent / "imgpipe.toml")
    shutil.copytree(out.parent / "cache", root / "cache", ignore=lambda folder, names: ["stages"])
    again = root / "out"
    assert main(cli_build_args(root, tiny_backbone_weights, again)) == code == 0
    return out, again


def test_the_same_inputs_seed_and_cache_give_the_same_artifact_bytes(built_twice):
    first, second = (files(folder / "bundle") for folder in built_twice)
    assert set(first) == set(second)
    allowed = {"manifest.json", "SHA256SUMS"}
    differ = {rel for rel in first if first[rel] != second[rel]}
    assert differ <= allowed, f"differ between identical builds: {sorted(differ - allowed)}"
    assert {"android/model.tflite", "android/model_int8.tflite", "onnx/model.onnx", "android.zip", "ios.zip"} <= set(
        first
    )
    sums = [{line.split("  ", 1)[1]: line for line in b["SHA256SUMS"].decode().splitlines()} for b in (first, second)]
    assert {rel for rel in sums[0] if sums[0][rel] != sums[1][rel]} <= allowed


def test_only_measured_manifest_fields_differ(built_twice):
    first, second = (json.loads((folder / "bundle" / "manifest.json").read_text()) for folder in built_twice)
    differ = differing_fields(first, second)
    unexpected = {f for f in differ if not any(f == v or f.startswith(v + ".") for v in VOLATILE_MANIFEST_FIELDS)}
    assert not unexpected, sorted(unexpected)
    assert first["training"]["deterministic"] is True


def test_the_keras_weights_are_the_same(built_twice):
    """Training itself is repeatable (the .keras file differs only by its save time in metadata.json)."""
    first, second = (zipfile.ZipFile(folder / "keras" / "model.keras") for folder in built_twice)
    assert first.read("model.weights.h5") == second.read("model.weights.h5")
    assert first.read("config.json") == second.read("config.json")


def test_nothing_in_the_bundle_names_this_machine(cli_build, tiny_backbone_weights, tmp_path_factory):
    """Every bundle file's bytes, zip members decompressed, searched for the paths of this build and the user."""
    _, out, data = cli_build
    private = {
        str(tmp_path_factory.getbasetemp()),
        str(out),
        str(data),
        str(tiny_backbone_weights.parent),
        str(Path.home()),
        f"/{getpass.getuser()}/",
    }
    bundle = out / "bundle"
    blobs = {rel: content for rel, content in files(bundle).items()}
    for rel in [rel for rel in blobs if rel.endswith(".zip")]:
        with zipfile.ZipFile(bundle / rel) as zf:
            blobs.update({f"{rel}!{name}": zf.read(name) for name in zf.namelist()})
    assert len(blobs) > 20
    for rel, content in blobs.items():
        for secret in private:
            assert secret.encode() not in content, f"{rel} carries {secret}"
