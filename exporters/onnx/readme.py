"""README.md of the bundle's onnx/ folder: a Python snippet with onnxruntime and the training preprocessing."""

from __future__ import annotations

import json

from ...pipeline.core.preprocessing import INPUT_NAME
from ..readme_text import MAX_RESULTS, file_name, other_variants, summary, title


def render_readme(manifest: dict, main: dict, others: list[dict]) -> str:
    file = file_name(main)
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
            f"# ONNX: {title(manifest)}",
            "",
            summary(manifest, main),
            "",
            f"Input `{INPUT_NAME}`: float32 NHWC (batch, {size}, {size}, 3), already normalized; output: the class "
            "probabilities. Labels and preprocessing are also stored in the model's `metadata_props`.",
            "",
            "```python",
            python,
            "```",
            *other_variants(others, "the same code with the other file name"),
            "",
        ]
    )
