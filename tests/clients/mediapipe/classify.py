"""Classify images with MediaPipe Tasks' ImageClassifier, the client Android apps run a bundle's model.tflite with.

Runs inside the venv made by make_env.sh (mediapipe==0.10.21), not the project's own:

    python classify.py MODEL.tflite INPUT [INPUT ...]

An INPUT is an image file, decoded by MediaPipe itself (`mp.Image.create_from_file`: stb_image, EXIF orientation
ignored), or a `.npy` file holding decoded (H, W, 3) uint8 RGB pixels, so a test can hand MediaPipe exactly the
pixels imgpipe decoded and compare resize, normalization and inference alone. MediaPipe takes the labels and the
normalization from the model's metadata and resizes the image itself.
Prints one JSON line per input: {"input": PATH, "scores": {label: score, ...}} with every category of the model.
"""

import json
import sys
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python.core.base_options import BaseOptions
from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions


def load(path: Path) -> mp.Image:
    if path.suffix == ".npy":
        return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(np.load(path)))
    image = mp.Image.create_from_file(str(path))
    if image.channels == 1:  # MediaPipe would build a 1-channel tensor and fail; Android Bitmaps are RGB
        gray = image.numpy_view().reshape(image.height, image.width, 1)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(np.repeat(gray, 3, axis=2)))
    return image


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: classify.py MODEL.tflite INPUT [INPUT ...]")
    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_path=argv[0]), max_results=-1)
    with ImageClassifier.create_from_options(options) as classifier:
        for arg in argv[1:]:
            categories = classifier.classify(load(Path(arg))).classifications[0].categories
            scores = {c.category_name or str(c.index): c.score for c in categories}
            print(json.dumps({"input": arg, "scores": scores}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
