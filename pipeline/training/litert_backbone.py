"""The frozen backbone run by LiteRT (XNNPACK) to compute features of many photos.

Measured side by side on 2 cores (V2-0.5, 224 px): Keras' eager call 11.6 ms per photo, the same model traced into
one TensorFlow graph 6.1 ms, LiteRT with XNNPACK on one thread 2.0 ms, features within 2.4e-5 of Keras'. Converting
the backbone takes about a second (a traced function as the converter's trackable object; the Keras model in its
place makes TensorFlow save and reload a SavedModel first: 13 s, the same bytes out), so it is done when a few
hundred photos need features, or when an earlier build already converted this backbone (the file is cached beside
its features). Two threads even on 2 cores, where the decoding of the next photos shares them: the features
stage of 370 pets photos and one augmented view each took 2.24 s instead of 2.57 s (1.40 s instead of 1.51 s
without views; medians of 3, alternated).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..core.files import write_atomic
from ..core.tf_runtime import load_tensorflow

# Photos whose features pay for the conversion (0.7-0.9 s for MobileNetV2-0.5). The graph has a start-up cost of
# its own (tracing), so on real photos (2 cores, features stage of a first build, conversion included) LiteRT was
# already faster at 200 photos: 1.66 s against 1.95 s (medians of 3), and 2.57 s against 3.21 s at 370 photos.
WORTH_CONVERTING = 200
FILE = "backbone.tflite"
TOLERANCE = 1e-4  # largest difference from Keras' features allowed (measured: 2.4e-5 on V2-0.5)


def wanted(folder: Path, missing: int) -> bool:
    return missing >= WORTH_CONVERTING or (folder / FILE).is_file()


def litert_backbone(extractor, folder: Path):
    """(predict function for float batches, seconds spent converting: 0 when cached)."""
    from ai_edge_litert.interpreter import Interpreter

    path = folder / FILE
    start = time.perf_counter()
    if not path.is_file():
        blob = _convert(extractor)
        write_atomic(path, lambda f: f.write(blob), durable=False)
    seconds = time.perf_counter() - start
    interpreter = Interpreter(model_path=str(path), num_threads=max(2, (os.cpu_count() or 2) // 2))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(batch: np.ndarray) -> np.ndarray:
        results = []
        for image in batch:  # batch 1 is XNNPACK's fastest here (2.0 ms vs 3.3 ms per photo at 32)
            interpreter.set_tensor(inp, image[None].astype(np.float32, copy=False))
            interpreter.invoke()
            results.append(interpreter.get_tensor(out)[0].copy())
        return np.stack(results)

    return run, seconds


def _convert(extractor) -> bytes:
    tf, _ = load_tensorflow()
    size = extractor.input_shape[1]
    function = tf.function(lambda x: extractor(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], function).convert()
