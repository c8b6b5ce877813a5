"""README.md of the bundle's android/ folder: a Kotlin snippet with MediaPipe Tasks' ImageClassifier
(com.google.mediapipe:tasks-vision), which reads the labels and normalization from the model's metadata."""

from __future__ import annotations

from ..readme_text import MAX_RESULTS, file_name, other_variants, summary, title


def render_readme(manifest: dict, main: dict, others: list[dict]) -> str:
    file = file_name(main)
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
            f"# Android: {title(manifest)}",
            "",
            summary(manifest, main),
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
            *other_variants(others, "the same code with the other file name"),
            "",
        ]
    )
