"""What the benchmark counts as imgpipe's training time, the number compared with the tutorial recipe's."""

from __future__ import annotations

from imgpipe.benchmarks.suite import train_seconds


def test_training_time_counts_every_stage_from_photos_to_model_and_nothing_after():
    stages = {
        "scan": 0.5,
        "features": 2.0,
        "augmented features": 1.5,  # the training photos' views read back (computed for a few): training's cost
        "train": 1.0,
        "train.train_head": 0.9,  # a part of "train", already counted in it
        "features.litert_conversion": 0.8,  # a part of "features"
        "calibrate": 0.1,
        "export tflite:fp32": 3.0,
    }
    assert train_seconds(stages) == 5.0
