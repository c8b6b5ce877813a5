"""README.md of the bundle's ios/ folder: a Swift snippet with Vision's VNCoreMLRequest.

Vision crops the centre of a photo unless told `.scaleFill`; imgpipe trains on whole photos, so the snippet sets it.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..readme_text import MAX_RESULTS, deployment, file_name, other_variants, summary, title


def render_readme(manifest: dict, main: dict, others: list[dict]) -> str:
    file = file_name(main)
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
            f"# iOS: {title(manifest)}",
            "",
            summary(manifest, main) + (f" Needs {deployment(target)} or later." if target else ""),
            "",
            "The model normalizes pixels itself (image input scale/bias), so Vision hands it the photo as is.",
            "",
            f"1. Drag `{file}` into your Xcode project (target membership on).",
            "2. Classify:",
            "",
            "```swift",
            swift,
            "```",
            "",
            _how_measured(main, unmeasured),
            *other_variants(others, "the generated class is named after the file"),
            "",
        ]
    )


def _how_measured(main: dict, unmeasured: str | None) -> str:
    if unmeasured:
        return (
            f"Its accuracy was not measured when the bundle was built: {unmeasured}. "
            "`imgpipe evaluate` on a Mac measures it with Core ML itself."
        )
    accuracy = (main.get("metrics") or {}).get("accuracy")
    return (
        f"Verified when the bundle was built by running this package's own program ({main.get('runtime')}): "
        f"test accuracy {accuracy:.1%}. On a device, Vision resizes the photo with its own filter (its `.scaleFill` "
        "stretches the whole image, as imgpipe does, but the interpolation is Apple's), so scores can differ "
        "slightly from the verified ones."
    )
