"""predict, inspect, SHA256SUMS, platform zips and integration READMEs, on the bundle the shared build published.

Tests that damage a bundle work on a copy.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_LABELS, TINY_SIZE
from PIL import Image

from imgpipe.exporters import tflite
from imgpipe.pipeline.bundle.checksums import SUMS_NAME, write_sha256sums, zip_platform_folders
from imgpipe.pipeline.bundle.inspect import format_inspection, inspect_bundle
from imgpipe.pipeline.commands.predict import format_predictions, predict
from imgpipe.pipeline.core.errors import ArtifactError, ImageError, ImgpipeError

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
MLPACKAGE = "ios/TinyPatterns.mlpackage"
PHOTOS_PER_CLASS = 4
WEIGHTS = f"{MLPACKAGE}/Data/com.apple.CoreML/weights/weight.bin"


@pytest.fixture(scope="module")
def published(cli_build, tmp_path_factory):
    """(the shared build's bundle, its TFLite model stripped of metadata)."""
    bundle = cli_build[1] / "bundle"
    return bundle, _without_metadata(
        bundle / "android" / "model.tflite", tmp_path_factory.mktemp("plain") / "model.tflite"
    )


def _without_metadata(source: Path, dest: Path) -> Path:
    """The model as imgpipe wrote it before TFLite metadata (e.g. older bundles): no labels, no normalization."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.ModelT.InitFromPackedBuf(source.read_bytes(), 0)
    model.metadata = None
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dest.write_bytes(bytes(builder.Output()))
    assert tflite.read_embedded(dest).preprocessing is None
    return dest


@pytest.fixture()
def bundle(published, tmp_path):
    """A private copy to damage."""
    return Path(shutil.copytree(published[0], tmp_path / "bundle"))


@pytest.fixture(scope="module")
def photos(tiny_images, tmp_path_factory):
    """Four JPEGs per class, in a nested folder, plus a broken .jpg and a non-image file beside them. Four, not
    one: the tiny shared build's model is not sure of every photo, and three photos could all get the same label,
    which would make comparing the formats' labels meaningless."""
    folder = tmp_path_factory.mktemp("photos")
    images, labels = tiny_images
    (folder / "nested").mkdir()
    for cls in range(len(TINY_LABELS)):
        for k, index in enumerate(np.flatnonzero(labels == cls)[:PHOTOS_PER_CLASS]):
            Image.fromarray(images[index]).save(folder / "nested" / f"{TINY_LABELS[cls]}_{k}.jpg", quality=95)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def jpegs(photos: Path) -> list[Path]:
    return sorted((photos / "nested").glob("*.jpg"))


def top1(results: list[dict]) -> list[str]:
    return [r["top_k"][0]["label"] for r in results]


# --- predict ---------------------------------------------------------------------------------------------------


def test_tflite_onnx_and_bundle_predict_the_same_labels(published, photos):
    bundle, _ = published
    by_tflite = predict(bundle / "android" / "model.tflite", jpegs(photos))
    by_onnx = predict(bundle / "onnx" / "model.onnx", jpegs(photos))
    by_bundle = predict(bundle, jpegs(photos), top_k=2)
    assert top1(by_tflite) == top1(by_onnx) == top1(by_bundle)
    assert len(set(top1(by_tflite))) > 1, "a constant prediction would make the comparison meaningless"
    assert by_bundle[0]["artifact"] == "android/model.tflite" and by_bundle[0]["format"] == "tflite"
    assert by_onnx[0]["artifact"] == str(bundle / "onnx" / "model.onnx")
    assert [len(r["top_k"]) for r in by_bundle] == [2] * len(jpegs(photos))
    scores = [p["score"] for p in by_tflite[0]["top_k"]]
    assert scores == sorted(scores, reverse=True) and {p["label"] for p in by_tflite[0]["top_k"]} == set(TINY_LABELS)
    table = format_predictions(by_bundle)
    assert "android/model.tflite (tflite)" in table and str(jpegs(photos)[0]) in table


def test_tflite_without_metadata_needs_its_bundle_manifest(published, photos, tmp_path):
    bundle, plain = published
    inside = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    shutil.copy(plain, inside / "android" / "model.tflite")
    assert top1(predict(inside / "android" / "model.tflite", jpegs(photos))) == top1(predict(bundle, jpegs(photos)))
    alone = Path(shutil.copy(plain, tmp_path / "model.tflite"))  # outside any bundle
    with pytest.raises(ArtifactError, match=f"^{re.escape(str(alone))}: no labels and preprocessing embedded"):
        predict(alone, jpegs(photos))


def test_folder_prediction_skips_and_reports_unreadable_files(published, photos):
    warnings = []
    results = predict(published[0], [photos], warn=warnings.append)
    assert [r["image"] for r in results] == [str(p) for p in jpegs(photos)]  # notes.txt is not an image type
    assert len(warnings) == 1 and str(photos / "broken.jpg") in warnings[0]


def test_an_unreadable_file_named_explicitly_is_an_error(published, photos):
    with pytest.raises(ImageError, match=f"^{re.escape(str(photos / 'broken.jpg'))}: cannot read as an image"):
        predict(published[0], [jpegs(photos)[0], photos / "broken.jpg"])
    with pytest.raises(ImgpipeError, match="no such file"):
        predict(published[0], [photos / "missing.jpg"])


def test_core_ml_predicts_the_same_labels_as_tflite(published, photos):
    """`imgpipe predict` on the .mlpackage: Core ML on macOS, imgpipe's executor elsewhere."""
    bundle, _ = published
    by_coreml = predict(bundle / MLPACKAGE, jpegs(photos))
    assert by_coreml[0]["format"] == "coreml"
    assert top1(by_coreml) == top1(predict(bundle / "android" / "model.tflite", jpegs(photos)))


# --- inspect, SHA256SUMS, zips -------------------------------------------------------------------------------


def test_inspect_passes_on_a_fresh_bundle(published):
    result = inspect_bundle(published[0])
    assert result.ok and result.error() is None, result.problems
    assert [a["checksum_ok"] for a in result.artifacts] == [True] * 4
    assert result.labels == TINY_LABELS and result.model["name"] == "TinyPatterns"
    text = format_inspection(result)
    assert "OK" in text and "android.zip" in text and "SHA256SUMS" in text and "96x96" in text
    assert json.loads(json.dumps(result.to_dict()))["ok"] is True


@pytest.mark.parametrize("rel", ["onnx/model.onnx", "android/labels.txt", WEIGHTS, "ios.zip"])
def test_one_altered_byte_is_reported_on_exactly_that_file(bundle, rel):
    path = bundle / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = inspect_bundle(bundle)
    assert [p.path for p in result.problems] == [rel]
    assert "altered" in result.problems[0].issue
    assert str(result.error()).splitlines()[0].startswith(f"{bundle / rel}: altered")


def test_a_deleted_file_is_reported(bundle, published):
    (bundle / "android" / "labels.txt").unlink()
    (bundle / "notes.md").write_text("added later")
    result = inspect_bundle(bundle)
    assert [(p.path, p.issue.split(" ")[0]) for p in result.problems] == [
        ("android/labels.txt", "missing"),
        ("notes.md", "not"),
    ]
    (bundle / SUMS_NAME).unlink()  # now only the manifest (and the zips against their folders) can tell
    (bundle / "notes.md").unlink()
    shutil.copy(published[0] / "android" / "labels.txt", bundle / "android" / "labels.txt")
    (bundle / "onnx" / "model.onnx").unlink()
    result = inspect_bundle(bundle)
    assert [(p.path, p.found_by) for p in result.problems] == [("onnx/model.onnx", "manifest.json")]
    assert str(result.error()).startswith(f"{bundle / 'onnx/model.onnx'}: missing")


def test_sha256sums_lists_every_file_sorted_and_round_trips(bundle):
    lines = (bundle / SUMS_NAME).read_text().splitlines()
    listed = [line.split("  ", 1)[1] for line in lines]
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert listed == sorted(listed) == [f for f in files if f != SUMS_NAME]
    assert WEIGHTS in listed and "android.zip" in listed and "android/README.md" in listed
    for line in lines:
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest
    before = (bundle / SUMS_NAME).read_bytes()
    assert write_sha256sums(bundle).read_bytes() == before
    if shutil.which("sha256sum"):  # the format is the coreutils one, so users can check without imgpipe
        subprocess.run(["sha256sum", "--check", "--quiet", SUMS_NAME], cwd=bundle, check=True)


def test_platform_zips_are_deterministic_and_hold_their_folder(bundle):
    first = {p.name: p.read_bytes() for p in zip_platform_folders(bundle)}
    for p in (bundle / "android").iterdir():
        p.touch()  # new mtimes must not change the archives
    second = {p.name: p.read_bytes() for p in zip_platform_folders(bundle)}
    assert first == second and set(first) == {"android.zip", "ios.zip"}
    with zipfile.ZipFile(bundle / "ios.zip") as zf:
        names = zf.namelist()
        assert names == sorted(names) and f"{WEIGHTS}" in names
        assert zf.read(WEIGHTS) == (bundle / WEIGHTS).read_bytes()
    with zipfile.ZipFile(bundle / "android.zip") as zf:
        assert zf.namelist() == [
            "android/README.md",
            "android/labels.txt",
            "android/model.tflite",
            "android/model_int8.tflite",
        ]


# --- integration READMEs ---------------------------------------------------------------------------------------


def test_readmes_use_this_builds_names_labels_and_size(published):
    bundle, _ = published
    android = (bundle / "android" / "README.md").read_text()
    ios = (bundle / "ios" / "README.md").read_text()
    onnx_readme = (bundle / "onnx" / "README.md").read_text()
    for text in (android, ios, onnx_readme):
        assert all(f"`{label}`" in text for label in TINY_LABELS) and f"{TINY_SIZE}x{TINY_SIZE}" in text
    assert 'setModelAssetPath("model.tflite")' in android and "com.google.mediapipe:tasks-vision" in android
    assert "carries its labels and this normalization in its TFLite metadata" in android
    assert "TinyPatterns(configuration: MLModelConfiguration())" in ios and ".scaleFill" in ios
    assert "TinyPatterns.mlpackage" in ios and "VNClassificationObservation" in ios
    assert '"image"' in onnx_readme and 'InferenceSession("model.onnx"' in onnx_readme


def test_onnx_readme_snippet_runs_and_agrees_with_predict(published, photos, monkeypatch):
    bundle, _ = published
    text = (bundle / "onnx" / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(bundle / "onnx")
    namespace = {}
    exec(compile(code, "onnx/README.md", "exec"), namespace)  # noqa: S102 - our own generated snippet
    expected = predict(bundle / "onnx" / "model.onnx", jpegs(photos))
    for path, result in zip(jpegs(photos), expected):
        got = namespace["classify"](path)
        assert got[0][0] == result["top_k"][0]["label"]
        assert np.isclose(got[0][1], result["top_k"][0]["score"], atol=1e-5)
