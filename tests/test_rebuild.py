"""Rebuilds redo only what changed: `imgpipe export` re-exports the shared build without training, and a build
with two more photos computes only their features. Both start from the shared CLI build's stage cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_build_args, run_cli_process

from imgpipe.pipeline.core.files import tree_sha256
from imgpipe.pipeline.data.dataset import read_split_file

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _manifest(out: Path) -> dict:
    return json.loads((out / "bundle" / "manifest.json").read_text())


def _run_saying_whether_tensorflow_loaded(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The command line in a fresh process that ends its stderr with "tensorflow imported: True/False"."""
    script = (
        "import sys; from imgpipe.pipeline.commands.cli import main; code = main(sys.argv[1:]); "
        "print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)"
    )
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=cwd)


def _copy_cache(cli_build_run, tmp_path) -> Path:
    """The shared build's cache, copied so this test's entries do not change what other tests see."""
    cache = tmp_path / "cache"
    shutil.copytree(cli_build_run.cache, cache)
    return cache


def test_export_takes_training_and_unchanged_artifacts_from_the_cache(cli_build_run, tmp_path):
    first = _manifest(cli_build_run.out)
    cache = _copy_cache(cli_build_run, tmp_path)
    out = tmp_path / "onnx-only"
    args = ["export", str(cli_build_run.out), "--variants", "onnx:fp32", "--out", str(out), "--cache-dir", str(cache)]
    code, _, stderr, _ = run_cli_process(args, tmp_path)
    assert code == 0, stderr
    manifest = _manifest(out)
    assert [(a["format"], a["variant"]) for a in manifest["artifacts"]] == [("onnx", "fp32")]
    assert manifest["stages"]["train"]["reused"] and manifest["stages"]["artifact onnx:fp32"]["reused"]
    assert manifest["stages"]["train"]["key"] == first["stages"]["train"]["key"]
    assert manifest["training"]["features_computed"] == 0
    onnx_first = next(a for a in first["artifacts"] if (a["format"], a["variant"]) == ("onnx", "fp32"))
    again = manifest["artifacts"][0]
    assert again["sha256"] == onnx_first["sha256"]
    assert again["metrics"]["accuracy"] == onnx_first["metrics"]["accuracy"]
    assert again["metrics"]["latency_ms_p50"] is not None  # measured again: it is this machine, now
    assert "train: reused" in stderr


def test_an_unchanged_rebuild_is_taken_whole_from_the_cache_without_tensorflow(
    cli_build_run, tiny_backbone_weights, tmp_path
):
    """The shared build's own command again, with a copy of its cache: nothing is computed, TensorFlow is not
    even imported, and the bundle is the same but for the manifest saying so (and the checksums of it)."""
    cache = _copy_cache(cli_build_run, tmp_path)
    out = tmp_path / "again"
    args = cli_build_args(cli_build_run.data.parent, tiny_backbone_weights, out)
    args[args.index("--cache-dir") + 1] = str(cache)
    proc = _run_saying_whether_tensorflow_loaded(args, tmp_path)
    assert proc.returncode == cli_build_run.code, proc.stderr
    assert "tensorflow imported: False" in proc.stderr and "unchanged" in proc.stderr
    first, again = _manifest(cli_build_run.out), _manifest(out)
    assert again["stages"]["build"]["reused"] and all(s["reused"] for s in again["stages"].values())
    assert set(again["stages"]) == set(first["stages"])
    assert again["artifacts"] == first["artifacts"] and again["rejected"] == first["rejected"]
    changed = {"manifest.json", "SHA256SUMS"}
    bundle, first_bundle = out / "bundle", cli_build_run.out / "bundle"
    files = sorted(p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(first_bundle) for p in first_bundle.rglob("*") if p.is_file())
    for name in files:
        if name.name not in changed:
            assert (bundle / name).read_bytes() == (first_bundle / name).read_bytes(), name
    sums = dict(line.split("  ", 1)[::-1] for line in (bundle / "SHA256SUMS").read_text().splitlines())
    assert sums["manifest.json"] == tree_sha256(bundle / "manifest.json")


def test_export_without_the_trained_model_in_the_cache_stops_with_one_line(cli_build_run, tmp_path):
    """A cache with no trained model at all is refused before TensorFlow loads."""
    args = ["export", str(cli_build_run.out), "--variants", "onnx:fp32", "--out", str(tmp_path / "x")]
    proc = _run_saying_whether_tensorflow_loaded([*args, "--cache-dir", str(tmp_path / "empty-cache")], tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("imgpipe: ")]
    assert len(lines) == 1 and "trained model is not in the cache" in lines[0], proc.stderr
    assert "tensorflow imported: False" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x" / "bundle").exists()


def test_export_of_a_folder_that_is_not_a_build_is_one_line(tmp_path):
    code, _, stderr, _ = run_cli_process(["export", str(tmp_path), "--targets", "onnx"], tmp_path)
    assert code == 2 and "build.json: not found" in stderr and "Traceback" not in stderr


def test_two_new_photos_cost_only_their_own_feature_computations_and_retrain_only_the_head(cli_build_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cli_build_run.data, data)
    label = sorted(p.name for p in data.iterdir())[0]
    originals = sorted((data / label).iterdir())[:2]
    for i, original in enumerate(originals):  # new files: the same pattern, mirrored
        from PIL import Image, ImageOps

        ImageOps.mirror(Image.open(original).convert("RGB")).save(data / label / f"new_{i}.png")
    cache = _copy_cache(cli_build_run, tmp_path)
    recorded = json.loads((cli_build_run.out / "build.json").read_text())
    args = ["build", "--dataset", str(data), "--out", str(tmp_path / "out"), "--cache-dir", str(cache)]
    args += ["--weights", recorded["backbone"]["weights"], "--image-size", str(recorded["backbone"]["image_size"])]
    args += ["--feature-views", str(recorded["train"]["feature_views"])]
    code, _, stderr, _ = run_cli_process([*args, "--variants", "tflite:fp32"], tmp_path)
    assert code == 0, stderr
    manifest = _manifest(tmp_path / "out")
    views = manifest["config"]["train"]["feature_views"]
    splits = read_split_file(tmp_path / "out" / "bundle" / "splits.json")
    new_in_train = sum(Path(r["path"]).name.startswith("new_") and r["split"] == "train" for r in splits)
    # each new photo's own features, and the views of those that train (or trained before near-duplicates moved them)
    assert 2 + new_in_train * views <= manifest["training"]["features_computed"] <= 2 * (1 + views)
    assert manifest["dataset"]["images"] == _manifest(cli_build_run.out)["dataset"]["images"] + 2
    assert not manifest["stages"]["train"]["reused"]
    assert tree_sha256(tmp_path / "out" / "bundle") != tree_sha256(cli_build_run.out / "bundle")
