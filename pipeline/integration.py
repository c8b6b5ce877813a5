"""README.md for each platform folder of a bundle, with code that uses this build's file names, labels and input
size, so an app developer can paste it as is.

API names follow MediaPipe Tasks' Java/Kotlin ImageClassifier (com.google.mediapipe:tasks-vision), Apple's Vision
(VNCoreMLRequest, VNClassificationObservation) and onnxruntime. MediaPipe's image preprocessing stretches the
whole image to the input size (it keeps the aspect ratio only when asked), which is imgpipe's contract; Vision
crops the centre unless told `.scaleFill`, so the Swift snippet sets it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from imgpipe.exporters.registry import FORMATS
from imgpipe.model import INPUT_NAME

README_NAME = "README.md"
MAX_RESULTS = 3


def write_platform_readmes(bundle: Path, manifest: dict) -> list[Path]:
    """One README.md beside each format's default artifact (android/, ios/, onnx/); run before zipping the
    platform folders so the zips carry them."""
    bundle = Path(bundle)
    written = []
    for fmt, render in (("tflite", _android), ("coreml", _ios), ("onnx", _onnx)):
        entries = [e for e in manifest["artifacts"] if e["format"] == fmt]
        if not entries:
            continue
        main = _default_entry(entries, FORMATS[fmt].default_variant)
        others = [e for e in entries if e is not main]
        path = (bundle / main["path"]).parent / README_NAME
        path.write_text(render(manifest, main, others), encoding="utf-8")
        written.append(path)
    return written


def _default_entry(entries: list[dict], default_variant: str) -> dict:
    """The float default variant (`model.tflite`, `<Name>.mlpackage`, `model.onnx`) when the build made it."""
    return next(
        (e for e in entries if e["variant"] == default_variant and e.get("source", "float") == "float"), entries[0]
    )


def _android(manifest: dict, main: dict, others: list[dict]) -> str:
    file = _name(main)
    size = manifest["preprocessing"]["image_size"]
    carries = (
        f"`{file}` carries its labels and this normalization in its TFLite metadata, which ImageClassifier "
        "reads (it refuses a float model without them); `labels.txt` lists the same labels for code that "
        "does not read metadata."
    )
    kotlin = f"""\
import android.content.Context
import android.graphics.Bitmap
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

// Labels, in output order: {", ".join(manifest["labels"])}
fun createClassifier(context: Context): ImageClassifier =
    ImageClassifier.createFromOptions(
        context,
        ImageClassifier.ImageClassifierOptions.builder()
            .setBaseOptions(BaseOptions.builder().setModelAssetPath("{file}").build())
            .setRunningMode(RunningMode.IMAGE)
            .setMaxResults({min(MAX_RESULTS, len(manifest["labels"]))})
            .build(),
    )

/** Best labels first. The whole bitmap is resized to {size}x{size} without cropping, as in training. */
fun ImageClassifier.topLabels(bitmap: Bitmap): List<Pair<String, Float>> {{
    // MediaPipe reads ARGB_8888 bitmaps only; copy() converts others (e.g. HARDWARE ones from ImageDecoder).
    val image = BitmapImageBuilder(bitmap.copy(Bitmap.Config.ARGB_8888, false)).build()
    return classify(image).classificationResult().classifications()[0].categories()
        .map {{ it.categoryName() to it.score() }}
}}"""
    return "\n".join(
        [
            f"# Android: {_title(manifest)}",
            "",
            _summary(manifest, main),
            "",
            carries,
            "",
            f"1. Copy `{file}` into `app/src/main/assets/`.",
            "2. Add MediaPipe Tasks to `app/build.gradle.kts` (any 0.10.x release reads this metadata):",
            "",
            "```kotlin",
            'dependencies { implementation("com.google.mediapipe:tasks-vision:0.10.14") }',
            "```",
            "",
            "3. Classify (call `close()` on the classifier when done):",
            "",
            "```kotlin",
            kotlin,
            "```",
            *_other_variants(others, "the same code with the other file name"),
            "",
        ]
    )


def _ios(manifest: dict, main: dict, others: list[dict]) -> str:
    file = _name(main)
    generated = PurePosixPath(file).stem
    size = manifest["preprocessing"]["image_size"]
    target = main.get("details", {}).get("minimum_deployment_target")
    swift = f"""\
import CoreML
import ImageIO
import Vision

// Labels, in output order: {", ".join(manifest["labels"])}
func makeClassificationRequest() throws -> VNCoreMLRequest {{
    // Xcode generates the class `{generated}` from {file}.
    let model = try {generated}(configuration: MLModelConfiguration()).model
    let request = VNCoreMLRequest(model: try VNCoreMLModel(for: model))
    // imgpipe trained on whole photos resized to {size}x{size} without cropping (aspect ratio not kept);
    // .scaleFill does the same. Vision's default, .centerCrop, would cut off edges the model learned from.
    request.imageCropAndScaleOption = .scaleFill
    return request
}}

/// Best labels first.
func classify(_ image: CGImage, orientation: CGImagePropertyOrientation = .up,
              with request: VNCoreMLRequest) throws -> [(label: String, confidence: Float)] {{
    try VNImageRequestHandler(cgImage: image, orientation: orientation).perform([request])
    let observations = request.results as? [VNClassificationObservation] ?? []
    return observations.sorted {{ $0.confidence > $1.confidence }}
        .prefix({MAX_RESULTS})
        .map {{ (label: $0.identifier, confidence: $0.confidence) }}
}}"""
    unmeasured = main.get("metrics_unavailable_reason")
    return "\n".join(
        [
            f"# iOS: {_title(manifest)}",
            "",
            _summary(manifest, main) + (f" Needs {_deployment(target)} or later." if target else ""),
            "",
            "The model normalizes pixels itself (image input scale/bias), so Vision hands it the photo as is.",
            "",
            f"1. Drag `{file}` into your Xcode project (target membership on).",
            "2. Classify:",
            "",
            "```swift",
            swift,
            "```",
            *(
                [
                    "",
                    f"Its accuracy was not measured when the bundle was built: {unmeasured}. "
                    "Run `imgpipe evaluate` on a Mac for it.",
                ]
                if unmeasured
                else []
            ),
            *_other_variants(others, "the generated class is named after the file"),
            "",
        ]
    )


def _onnx(manifest: dict, main: dict, others: list[dict]) -> str:
    file = _name(main)
    p = manifest["preprocessing"]
    size = p["image_size"]
    python = f"""\
import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])
labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])  # {json.dumps(manifest["labels"])}
MEAN = np.array({list(p["mean"])}, dtype=np.float32)  # also in the metadata's "preprocessing"
STD = np.array({list(p["std"])}, dtype=np.float32)


def classify(path, top_k={MAX_RESULTS}):
    \"\"\"Best labels first, with the preprocessing the model was trained with.\"\"\"
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("RGB")
    image = image.resize(({size}, {size}), Image.BILINEAR)  # the whole image, no crop
    x = (np.asarray(image, dtype=np.float32) - MEAN) / STD
    (probs,) = session.run(None, {{"{INPUT_NAME}": x[None]}})  # NHWC float32; the batch size is free
    best = np.argsort(-probs[0])[:top_k]
    return [(labels[i], float(probs[0][i])) for i in best]"""
    return "\n".join(
        [
            f"# ONNX: {_title(manifest)}",
            "",
            _summary(manifest, main),
            "",
            f"Input `{INPUT_NAME}`: float32 NHWC (batch, {size}, {size}, 3), already normalized; output: the class "
            "probabilities. Labels and preprocessing are also stored in the model's `metadata_props`.",
            "",
            "```python",
            python,
            "```",
            *_other_variants(others, "the same code with the other file name"),
            "",
        ]
    )


def _summary(manifest: dict, entry: dict) -> str:
    p = manifest["preprocessing"]
    labels = manifest["labels"]
    return (
        f"`{_name(entry)}` ({entry['variant']}, {_mb(entry.get('bytes'))}) classifies a photo into "
        f"{len(labels)} labels: {', '.join(f'`{label}`' for label in labels)}. Input: RGB "
        f"{p['image_size']}x{p['image_size']}, the whole image resized (no crop), then "
        f"(pixel - {_same(p['mean'])}) / {_same(p['std'])}."
    )


def _other_variants(others: list[dict], how: str) -> list[str]:
    if not others:
        return []
    lines = ["", f"Other variants in this folder ({how}):", ""]
    for e in others:
        accuracy = (e.get("metrics") or {}).get("accuracy")
        measured = f", test accuracy {accuracy:.1%}" if accuracy is not None else ""
        source = "" if e.get("source", "float") == "float" else f" from the {e['source']} model"
        lines.append(f"- `{_name(e)}`: {e['variant']}{source}, {_mb(e.get('bytes'))}{measured}")
    return lines


def _title(manifest: dict) -> str:
    model = manifest.get("model", {})
    return f"{model.get('name', 'image classifier')} {model.get('version', '')}".rstrip()


def _name(entry: dict) -> str:
    return PurePosixPath(entry["path"]).name


def _mb(n) -> str:
    return "size unknown" if n is None else f"{n / 1e6:.2f} MB"


def _deployment(target: str) -> str:
    """coremltools' target names ("iOS15") as Apple writes them ("iOS 15")."""
    return target.replace("iOS", "iOS ").replace("macOS", "macOS ")


def _same(values: list[float]):
    return values[0] if len(set(values)) == 1 else list(values)
