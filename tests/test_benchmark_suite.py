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


def test_held_out_table_puts_the_default_beside_the_fine_tuned_build_and_the_tutorial():
    from test_reports import parsed_tables

    from imgpipe.benchmarks.markdown import render_markdown

    run = {
        "case": "flowers",
        "images": 500,
        "classes": 5,
        "backbone": {"arch": "mobilenet_v2", "alpha": 0.5, "image_size": 224, "weights": "/w/v2_0.5.h5"},
        "keras_accuracy": 0.907,
        "total_seconds": 30.0,
        "artifacts": [],
        "stages": {"scan": 0.5, "features": 3.0, "train": 0.5},
        "baseline": {"epochs": 10, "train_seconds": 25.0, "accuracy": 0.648},
        "versus_baseline": {"train_time_ratio": 0.16, "accuracy_ratio": 1.4},
        "held_out": {
            "groups": "photographer",
            "test_images": 57,
            "keras_accuracy": 0.88,
            "train_seconds": 0.6,
            "fine_tune_epochs": 10,
            "fine_tuned_accuracy": 0.86,
            "fine_tuned_train_seconds": 80.0,
            "baseline_accuracy": 0.56,
            "baseline_train_seconds": 24.0,
        },
    }
    suite = {"profile": "quick", "machine": {"cpu": "x", "cores": 2, "python": "3.11"}, "created": "now"}
    text = render_markdown(suite | {"notices": [], "runs": [run]})
    held = parsed_tables(text)[-1]
    assert held[0] == ["test split", "imgpipe", "imgpipe `--fine-tune-epochs 10`", "tutorial recipe"]
    assert held[2] == ["held-out groups", "88.0%", "86.0%", "56.0%"]
    assert held[3][1:] == ["0.6", "80.0", "24.0"]
