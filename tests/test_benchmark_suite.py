"""What the benchmark counts as imgpipe's training time, the number compared with the tutorial recipe's."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from imgpipe.benchmarks.suite import summarise_held_out, train_seconds
from imgpipe.pipeline.verify.metrics import exact_mcnemar_p


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


def _split(draw, tested, right, fine_tuned_right, baseline_right, seconds, only=(0, 0)):
    return {
        "draw": draw,
        "test_images": tested,
        "keras_right": right,
        "fine_tuned_right": fine_tuned_right,
        "only_keras_right": only[0],
        "only_fine_tuned_right": only[1],
        "baseline_right": baseline_right,
        "train_seconds": seconds,
        "fine_tuned_train_seconds": 100 * seconds,
        "baseline_train_seconds": 25.0,
    }


def test_held_out_splits_pool_photos_right_over_photos_tested_and_take_median_seconds():
    splits = [
        _split(0, 57, 48, 52, 32, 0.5, only=(1, 5)),
        _split(1, 60, 56, 54, 34, 0.4, only=(3, 1)),
        _split(2, 50, 37, 37, 28, 2.0, only=(2, 2)),
    ]
    held = summarise_held_out(splits, "photographer")
    assert (held["only_keras_right"], held["only_fine_tuned_right"]) == (6, 8)
    assert held["mcnemar_p"] == pytest.approx(binomtest(6, 14, 0.5).pvalue, rel=1e-12)
    assert held["test_images"] == 167
    assert held["keras_accuracy"] == 141 / 167  # not the mean of the three accuracies (0.843)
    assert held["fine_tuned_accuracy"] == 143 / 167
    assert held["baseline_accuracy"] == 94 / 167
    assert (held["train_seconds"], held["fine_tuned_train_seconds"]) == (0.5, 50.0)
    assert held["splits"] == splits


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
        "held_out": summarise_held_out(
            [_split(0, 50, 44, 43, 28, 0.6, only=(2, 1)), _split(1, 50, 44, 43, 28, 0.8, only=(1, 0))],
            "photographer",
        ),
    }
    suite = {"profile": "quick", "machine": {"cpu": "x", "cores": 2, "python": "3.11"}, "created": "now"}
    text = render_markdown(suite | {"notices": [], "runs": [run]})
    assert "2 splits of the groups" in text and "100 photos tested in all" in text
    held = parsed_tables(text)[-1]
    assert held[0] == ["test split", "imgpipe", "imgpipe `--fine-tune-epochs 10`", "tutorial recipe"]
    assert held[1] == ["random (per photo)", "90.7%", "not built", "64.8%"]
    assert held[2] == ["held-out groups, 2 splits pooled", "88.0% (88/100)", "86.0% (86/100)", "56.0% (56/100)"]
    assert held[3][1:] == ["44/50 · 44/50", "43/50 · 43/50", "28/50 · 28/50"]
    assert held[4][1:] == ["3", "1 (exact McNemar p = 0.62)", ""]
    assert held[5][1:] == ["0.7", "70.0", "25.0"]


def test_the_exact_mcnemar_p_is_the_two_sided_binomial_test_of_the_photos_only_one_got_right():
    for only in ((0, 1), (0, 6), (1, 5), (5, 1), (3, 3), (10, 0), (40, 25)):
        assert exact_mcnemar_p(*only) == pytest.approx(binomtest(only[0], sum(only), 0.5).pvalue, rel=1e-12)
    # thousands of photos changed (a big test split): still the same number
    assert exact_mcnemar_p(4000, 4300) == pytest.approx(binomtest(4000, 8300, 0.5).pvalue, rel=1e-9)
    assert exact_mcnemar_p(0, 0) == 1.0  # nothing to tell them apart
