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


def resize(rgb, size={size}):
    \"\"\"The whole image stretched to size x size the way the model was trained: MediaPipe's resize (bilinear on
    8-bit pixels, source points in 1/32 pixel, no antialiasing; exact where size is not a multiple of 64).\"\"\"
    h, w, _ = rgb.shape
    y, fy = np.divmod(np.rint(np.arange(size) * h / size * 32).astype(np.int64), 32)
    x, fx = np.divmod(np.rint(np.arange(size) * w / size * 32).astype(np.int64), 32)
    y1, x1 = np.minimum(y + 1, h - 1), np.minimum(x + 1, w - 1)
    p, wx, wy = rgb.astype(np.int32), fx[None, :, None], fy[:, None, None]
    top = p[y][:, x] * (32 - wx) + p[y][:, x1] * wx
    bottom = p[y1][:, x] * (32 - wx) + p[y1][:, x1] * wx
    return ((top * (32 - wy) + bottom * wy + 512) >> 10).astype(np.uint8)


def classify(path, top_k={MAX_RESULTS}):
    \"\"\"Best labels first, with the preprocessing the model was trained with.\"\"\"
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", image.size, "black"), image).convert("RGB")
    x = (resize(np.asarray(image)).astype(np.float32) - MEAN) / STD
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
