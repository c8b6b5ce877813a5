"""What the benchmark counts as imgpipe's training time, the number compared with the tutorial recipe's."""

from __future__ import annotations

import sys

import pytest
from scipy.stats import binomtest

from imgpipe.benchmarks.previous import PreviousNotFound, previous_command, previous_on_split, split_shares
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
    assert "older imgpipe" not in text  # no IMGPIPE_BENCH_PREVIOUS, no table for it


def _with_previous(split: dict, right: int, fine_tuned_right: int, only: tuple[int, int]) -> dict:
    return split | {
        "previous_right": right,
        "previous_fine_tuned_right": fine_tuned_right,
        "only_keras_right_vs_previous": only[0],
        "only_previous_fine_tuned_right": only[1],
    }


def test_an_older_imgpipes_builds_are_pooled_and_tabled_beside_this_default():
    from test_reports import parsed_tables

    from imgpipe.benchmarks.markdown import _held_out_lines

    splits = [
        _with_previous(_split(0, 60, 56, 56, 40, 0.5), 59, 57, only=(1, 2)),
        _with_previous(_split(1, 40, 38, 39, 30, 0.5), 40, 36, only=(3, 1)),
    ]
    held = summarise_held_out(splits, "breed") | {"previous": "/old/bin/imgpipe"}
    assert held["previous_accuracy"] == 0.99 and held["previous_fine_tuned_accuracy"] == 0.93
    assert (held["only_keras_right_vs_previous"], held["only_previous_fine_tuned_right"]) == (4, 3)
    assert held["previous_mcnemar_p"] == exact_mcnemar_p(4, 3)
    run = {"keras_accuracy": 0.95, "baseline": {"accuracy": 0.7}, "held_out": held}
    text = "\n".join(_held_out_lines(run))
    assert "older imgpipe (`/old/bin/imgpipe`)" in text
    table = parsed_tables(text)[-1]
    assert table[0][1:] == ["imgpipe", "older imgpipe", "older imgpipe `--fine-tune-epochs 10`"]
    assert table[1][1:] == ["94.0% (94/100)", "99.0% (99/100)", "93.0% (93/100)"]
    assert table[2][1:] == ["56/60 · 38/40", "59/60 · 40/40", "57/60 · 36/40"]
    assert table[3][1:] == ["4", "", f"3 (exact McNemar p = {exact_mcnemar_p(4, 3):.2f})"]


def test_the_older_imgpipe_comes_from_the_environment_and_must_be_an_executable(tmp_path):
    assert previous_command({}) is None
    with pytest.raises(PreviousNotFound, match="IMGPIPE_BENCH_PREVIOUS=.*missing.*not an executable"):
        previous_command({"IMGPIPE_BENCH_PREVIOUS": str(tmp_path / "missing")})
    assert previous_command({"IMGPIPE_BENCH_PREVIOUS": sys.executable}) == [sys.executable]


def test_the_older_imgpipe_gets_this_builds_share_of_train_in_a_split_that_adds_up_to_one():
    from imgpipe.pipeline.config import SplitFractions

    for seen in range(1, 400):  # 270 of 320 once gave 0.8438 0.1363 0.02, which imgpipe refused
        for train in range(1, seen + 1):
            shares = split_shares(train, seen)
            SplitFractions(*map(float, shares)).check()  # imgpipe's own rule; raises when they do not add up
            assert float(shares[2]) > 0 and abs(float(shares[0]) - min(train / seen, 0.98)) < 1e-4


@pytest.mark.slow
def test_an_older_imgpipe_trains_on_the_splits_train_and_val_photos_and_labels_its_test_photos(
    tiny_backbone_weights, tmp_path
):
    """This imgpipe stands in for the older one: what the benchmark hands it and what it reads back."""
    from conftest import TINY_SIZE, write_pattern_dataset

    from imgpipe.pipeline.config import BackboneSpec

    data = write_pattern_dataset(tmp_path / "data", n_per_class=20, seed=1)
    photos = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.*"))
    splits = [
        {"path": p, "label": p.split("/")[0], "split": "test" if i % 4 == 0 else "val" if i % 7 == 0 else "train"}
        for i, p in enumerate(photos)
    ]
    other = tmp_path / "imgpipe"
    other.write_text(f'#!/bin/sh\nexec {sys.executable} -m imgpipe.pipeline.commands.cli "$@"\n')
    other.chmod(0o755)
    backbone = BackboneSpec("mobilenet_v2", 0.35, TINY_SIZE, str(tiny_backbone_weights))
    work = tmp_path / "previous"

    wrong = previous_on_split([str(other)], data, splits, backbone, 1, work)

    tested = {s["path"] for s in splits if s["split"] == "test"}
    given = {p.relative_to(work / "train+val").as_posix() for p in (work / "train+val").rglob("*.*")}
    assert given == set(photos) - tested  # every train and val photo, no test photo
    assert set(wrong) == {"previous", "previous_fine_tuned"}
    assert all(w <= tested for w in wrong.values())
    assert min(len(tested) - len(w) for w in wrong.values()) > len(tested) / 3  # better than chance on 3 classes
    assert not (work / "previous").exists() and not (work / "previous_fine_tuned").exists()  # builds removed


def test_the_exact_mcnemar_p_is_the_two_sided_binomial_test_of_the_photos_only_one_got_right():
    for only in ((0, 1), (0, 6), (1, 5), (5, 1), (3, 3), (10, 0), (40, 25)):
        assert exact_mcnemar_p(*only) == pytest.approx(binomtest(only[0], sum(only), 0.5).pvalue, rel=1e-12)
    # thousands of photos changed (a big test split): still the same number
    assert exact_mcnemar_p(4000, 4300) == pytest.approx(binomtest(4000, 8300, 0.5).pvalue, rel=1e-9)
    assert exact_mcnemar_p(0, 0) == 1.0  # nothing to tell them apart
