"""The committed sample models still give their golden outputs with every runner, and their bundle verifies.

A change in an exporter's runner or in the preprocessing that alters what an app would see fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imgpipe.exporters.registry import open_runner
from imgpipe.pipeline.bundle.inspect import inspect_bundle
from imgpipe.pipeline.bundle.manifest import read_manifest
from imgpipe.pipeline.core.files import tree_bytes
from imgpipe.pipeline.core.preprocessing import Preprocessing, load_image

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
BUNDLE = SAMPLES / "bundle"
GOLDEN = json.loads((SAMPLES / "golden.json").read_text())
MANIFEST = read_manifest(BUNDLE)
# Float runtimes reproduce to rounding; an int8 kernel may round differently on another CPU generation.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-3, "int8": 0.02}


def _pixels():
    pre = Preprocessing.from_dict(MANIFEST["preprocessing"])
    return pre, np.stack([load_image(SAMPLES / "images" / name, pre.image_size) for name in GOLDEN["images"]])


@pytest.mark.parametrize("entry", MANIFEST["artifacts"], ids=lambda e: e["path"])
def test_every_sample_artifact_is_under_one_megabyte(entry):
    assert tree_bytes(BUNDLE / entry["path"]) < 1_000_000


@pytest.mark.parametrize("path", sorted(GOLDEN["outputs"]))
def test_runners_reproduce_the_golden_top_k(path):
    entry = next(e for e in MANIFEST["artifacts"] if e["path"] == path)
    pre, pixels = _pixels()
    probs = open_runner(entry["format"], BUNDLE / path, pre).predict(pixels)
    for name, row in zip(GOLDEN["images"], probs):
        golden = GOLDEN["outputs"][path][name]
        assert MANIFEST["labels"][int(np.argmax(row))] == golden[0]["label"], name
        for item in golden:
            score = row[MANIFEST["labels"].index(item["label"])]
            assert score == pytest.approx(item["score"], abs=TOLERANCE[entry["variant"]]), (name, item)


def test_core_ml_sample_is_structurally_sound_here_and_runs_on_macos():
    entry = next(e for e in MANIFEST["artifacts"] if e["format"] == "coreml")
    pre, pixels = _pixels()
    runner = open_runner("coreml", BUNDLE / entry["path"], pre)
    assert runner.structural_checks() and all(runner.structural_checks().values())
    if runner.can_predict:  # macOS: Core ML must give the same labels as the float TFLite goldens
        labels = [MANIFEST["labels"][i] for i in runner.predict(pixels).argmax(1)]
        assert labels == [GOLDEN["outputs"]["android/model.tflite"][n][0]["label"] for n in GOLDEN["images"]]


def test_sample_bundle_checksums_verify():
    result = inspect_bundle(BUNDLE)
    assert result.ok, result.problems
