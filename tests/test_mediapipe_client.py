"""The Android client computes what verification measured: MediaPipe Tasks' ImageClassifier, run in its own venv
(tests/clients/mediapipe/make_env.sh; MediaPipe pins numpy<2 and protobuf<5), against imgpipe's runner.

The venv lives under the imgpipe cache (IMGPIPE_MEDIAPIPE_VENV overrides) and is made on first use; where it
cannot be made (no registry access, no wheel for the platform) the tests are skipped with make_env.sh's reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOWERS, needs_shared

from imgpipe.pipeline.config import default_cache_dir
from imgpipe.pipeline.core.preprocessing import decode_rgb, load_image
from imgpipe.pipeline.core.resize import resize_like_mediapipe

pytestmark = pytest.mark.slow
CLIENT = Path(__file__).resolve().parent / "clients" / "mediapipe"
VENV = Path(os.environ.get("IMGPIPE_MEDIAPIPE_VENV", default_cache_dir() / "clients" / "mediapipe-0.10.21"))
MIN_AGREEMENT = 0.995  # the bar for "the app sees what verification saw"
# MediaPipe decodes JPEGs with its own decoder; the int8 model turns those small pixel differences into flips of
# near-tie photos (top-2 margins 0.04-0.18): 0-4 of the 500 flowers photos, measured across heads and widths
# (MobileNetV2-0.35: Adam head 2, solved head 4; 0.5: 1 and 0). Fed imgpipe's decoded pixels, int8 still agrees
# >= MIN_AGREEMENT.
MIN_AGREEMENT_QUANTIZED_OWN_DECODER = 0.99


@pytest.fixture(scope="session")
def mediapipe_python() -> Path:
    made = subprocess.run([str(CLIENT / "make_env.sh"), str(VENV)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no MediaPipe Tasks environment: {made.stderr.strip() or made.stdout.strip()}")
    return VENV / "bin" / "python"


def mediapipe_scores(python: Path, model: Path, inputs: list[Path]) -> list[dict[str, float]]:
    run = subprocess.run(
        [str(python), str(CLIENT / "classify.py"), str(model), *map(str, inputs)],
        capture_output=True,
        text=True,
        env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return [json.loads(line)["scores"] for line in run.stdout.splitlines()]


def identity_model(path: Path, size: int) -> Path:
    """A uint8-input TFLite whose "scores" are its input pixels: MediaPipe's input tensor, read back."""
    from imgpipe.pipeline.core.tf_runtime import load_tensorflow

    tf, _ = load_tensorflow()

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8)])
    def identity(x):
        return tf.reshape(tf.cast(x, tf.float32), [1, -1])

    converter = tf.lite.TFLiteConverter.from_concrete_functions([identity.get_concrete_function()], identity)
    path.write_bytes(converter.convert())
    return path


@pytest.mark.parametrize("size", [96, 128, 224])
def test_imgpipes_resize_is_mediapipes_input_tensor_bit_for_bit(mediapipe_python, tmp_path, size):
    """Up- and downscaling, odd shapes, and at 128 the halfway source points OpenCV's rounding decides."""
    rng = np.random.default_rng(size)
    inputs, images = [], []
    for i, (h, w) in enumerate([(37, 500), (333, 1000), (512, 384), (160, 90)]):
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        inputs.append(tmp_path / f"{i}.npy")
        np.save(inputs[-1], images[-1])
    model = identity_model(tmp_path / f"identity_{size}.tflite", size)
    for image, scores in zip(images, mediapipe_scores(mediapipe_python, model, inputs)):
        tensor = np.zeros(size * size * 3, np.float32)
        for index, value in scores.items():
            tensor[int(index)] = value
        assert np.array_equal(tensor.reshape(size, size, 3), resize_like_mediapipe(image, size))


@needs_shared
def test_mediapipe_agrees_with_verification_on_real_photos(mediapipe_python, flowers_build, tmp_path):
    """The flowers build's Android models in MediaPipe Tasks against imgpipe's runner, on every flowers photo:
    with MediaPipe's own JPEG decoder (what the Python client does), and fed imgpipe's decoded pixels (so
    resize, normalization and inference are compared alone, to the last digit for the float model)."""
    from imgpipe.exporters.registry import open_runner
    from imgpipe.pipeline.core.preprocessing import Preprocessing

    manifest, root = flowers_build
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    photos = sorted(FLOWERS.rglob("*.jpg"))
    same_decode = photos[:: max(1, len(photos) // 50)]
    arrays = []
    for i, photo in enumerate(same_decode):
        arrays.append(tmp_path / f"{i}.npy")
        np.save(arrays[-1], decode_rgb(photo))
    pixels = np.stack([load_image(p, pre.image_size) for p in photos])
    for entry in manifest["artifacts"]:
        if entry["format"] != "tflite":
            continue
        model = root / "out" / "bundle" / entry["path"]
        ours = open_runner("tflite", model, pre).predict(pixels)
        labels = manifest["labels"]
        for inputs, expected, exact in ((photos, ours, False), (arrays, ours[:: max(1, len(photos) // 50)], True)):
            theirs = np.array(
                [[s[label] for label in labels] for s in mediapipe_scores(mediapipe_python, model, inputs)]
            )
            agreement = float(np.mean(theirs.argmax(1) == expected.argmax(1)))
            quantized_own_decoder = not exact and entry["variant"] != "fp32"
            bar = MIN_AGREEMENT_QUANTIZED_OWN_DECODER if quantized_own_decoder else MIN_AGREEMENT
            assert agreement >= bar, (entry["path"], exact, agreement)
            if exact and entry["variant"] == "fp32":
                assert np.abs(theirs - expected).max() <= 1e-4
