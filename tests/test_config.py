"""Settings: every number has a declared range checked before work starts, the config file and the options
(command line and Python API) fill the same dataclasses, and the build plan comes from the format table."""

from __future__ import annotations

import pytest

from imgpipe.exporters.registry import FORMATS
from imgpipe.pipeline.commands.build_options import given_options
from imgpipe.pipeline.commands.cli import build_parser
from imgpipe.pipeline.config import ALPHAS, BuildConfig
from imgpipe.pipeline.core.errors import ConfigError
from imgpipe.pipeline.plan import plan_artifacts
from imgpipe.pipeline.settings import apply_config_file, make_config, option_names


def config_from(*argv: str, config_file=None) -> BuildConfig:
    args = build_parser().parse_args(["build", "--dataset", "data", *argv])
    return make_config(given_options(args), config_file)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--epochs", "0"], "--epochs ([train] epochs) = 0: must be >= 1"),
        (["--batch-size", "0"], "--batch-size ([train] batch_size) = 0: must be >= 1"),
        (["--alpha", "7"], "alpha must be one of 0.35, 0.5, 0.75, 1, 1.3, 1.4"),
        (["--alpha", "0"], "--alpha ([backbone] alpha) = 0.0: must be > 0"),
        (["--image-size", "64"], "must be >= 96 and <= 224"),
        (["--learning-rate", "-1"], "must be > 0 and <= 1"),
        (["--sparsity", "1"], "must be > 0 and < 1"),
        (["--max-accuracy-drop", "2"], "must be >= 0 and <= 1"),
        (["--max-bytes", "0"], "must be >= 1"),
        (["--fine-tune-epochs", "-1"], "must be >= 0"),
        (["--split", "0.5", "0.1", "0.1"], "add up to 1"),
    ],
)
def test_every_number_is_checked_against_its_declared_range(argv, fragment):
    with pytest.raises(ConfigError) as error:
        config_from(*argv).validate()
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_config_file_values_are_checked_like_options(tmp_path):
    path = tmp_path / "imgpipe.toml"
    for table, fragment in [
        ({"train": {"epochs": 0}}, "must be >= 1"),
        ({"train": {"epochs": "ten"}}, "expected int"),
        ({"train": {"augment": 1}}, "expected bool"),
        ({"latency": {"runs": 0}}, "[latency] runs = 0: must be >= 1"),
        ({"gates": {"max_bytes": -5}}, "must be >= 1"),
        ({"gates": {"tflite:int8": {"max_accuracy_drop": 3}}}, "must be >= 0 and <= 1"),
        ({"train": {"epoch": 1}}, "unknown setting(s) epoch"),
        ({"gates": {"max_byte": 1}}, "unknown setting(s) max_byte"),
        ({"colour": "red"}, "unknown setting 'colour'"),
    ]:
        with pytest.raises(ConfigError) as error:
            apply_config_file(BuildConfig(), table, path).validate()
        assert fragment in str(error.value), table


def test_config_file_then_options_win(tmp_path):
    path = tmp_path / "imgpipe.toml"
    path.write_text(
        'dataset = "photos"\nout = "build"\n[train]\nepochs = 3\nbatch_size = 8\n'
        '[gates]\nmax_accuracy_drop = 0.02\n[gates."tflite:int8"]\nmax_bytes = 100\n'
    )
    config = config_from("--epochs", "5", "--max-latency-ms", "4", config_file=path)
    assert (config.train.epochs, config.train.batch_size) == (5, 8)
    assert config.out == (tmp_path / "build").resolve(), "paths in the file are relative to the file"
    assert config.gates.limits_for("tflite", "int8").max_bytes == 100
    assert config.gates.limits_for("onnx", "fp32").max_accuracy_drop == 0.02
    assert config.gates.limits_for("onnx", "fp32").max_latency_ms == 4


def test_every_option_has_help_and_is_on_the_command_line():
    help_text = build_parser()._subparsers._group_actions[0].choices["build"].format_help()
    for name, (_, field) in option_names().items():
        assert field.metadata["help"], name
        assert f"--{name.replace('_', '-')}" in help_text, name


def test_python_api_options_are_the_command_line_options():
    config = make_config({"dataset": "photos", "epochs": 7, "max_bytes": 10, "variants": ["tflite:int8"]})
    assert config.train.epochs == 7 and config.gates.command_line == {"max_bytes": 10}
    assert config.variants == {"tflite": ["int8"]}
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        make_config({"epoch": 7})


def test_without_a_dataset_the_embedded_defaults_apply():
    config = make_config({})
    assert config.dataset is None and config.backbone.weights == "none" and config.backbone.image_size == 96


def test_alpha_choices_follow_the_architecture():
    config = config_from("--arch", "mobilenet_v3_small", "--alpha", "0.5")
    with pytest.raises(ConfigError, match="mobilenet_v3_small has no width multiplier 0.5"):
        config.validate()
    assert 0.5 in ALPHAS["mobilenet_v2"]


def test_plan_defaults_to_each_formats_default_variant():
    plan = plan_artifacts(config_from())
    assert [(p.source, p.format, p.variant) for p in plan] == [
        ("float", name, spec.default_variant) for name, spec in FORMATS.items()
    ]


def test_plan_adds_optimized_sources_where_the_table_allows_them():
    plan = plan_artifacts(config_from("--variants", "tflite:fp32,int8", "onnx:int8", "--optimize", "prune", "qat"))
    names = [p.name for p in plan]
    assert "tflite:int8 (qat)" in names and "onnx:int8 (qat)" not in names and "tflite:fp32 (qat)" not in names
    assert {"tflite:fp32 (prune)", "tflite:int8 (prune)", "onnx:int8 (prune)"} <= set(names)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--variants", "tflite:int4"], "valid tflite variants: fp32, fp16, dynamic, int8"),
        (["--variants", "tflite"], "expected FORMAT:VARIANT"),
        (["--targets", "onnx", "--optimize", "qat"], "add that target"),
    ],
)
def test_plan_errors_name_the_valid_choices(argv, fragment):
    with pytest.raises(ConfigError, match=fragment):
        plan_artifacts(config_from(*argv))


def test_format_options_come_from_the_table():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--palette-bits", "5"])
    config = make_config({"palette_bits": 5})
    with pytest.raises(ConfigError, match="valid: 4, 6, 8"):
        plan_artifacts(config)


def test_every_number_in_the_config_file_is_checked_against_its_range(tmp_path):
    """Not a sample: every declared range, each with a value below, above, nan and inf, names its key."""
    import dataclasses
    import math

    from imgpipe.pipeline.config import SECTIONS, GateLimits

    path = tmp_path / "imgpipe.toml"
    checked = 0
    for section in (*SECTIONS, "gates"):
        cls = GateLimits if section == "gates" else type(getattr(BuildConfig(), section))
        for f in dataclasses.fields(cls):
            rng = f.metadata.get("range")
            if rng is None:
                continue
            outside = [rng.low - 1 if rng.low is not None else None, rng.high + 1 if rng.high is not None else None]
            is_int = str(f.type).startswith("int")
            for value in [*(v for v in outside if v is not None), math.nan, math.inf]:
                value = int(value) if is_int and math.isfinite(value) else value
                with pytest.raises(ConfigError) as error:
                    apply_config_file(BuildConfig(), {section: {f.name: value}}, path).validate()
                assert f.name in str(error.value), (section, f.name, value)
                checked += 1
    assert checked > 40


@pytest.mark.parametrize(
    "table, fragment",
    [
        ({"allow_failures": "no"}, "allow_failures = 'no': expected true or false"),
        ({"wait": 1}, "wait = 1: expected true or false"),
        ({"out": 5}, "out = 5: expected a path"),
        ({"targets": "tflite"}, "targets = 'tflite': expected a list of format names"),
        ({"variants": {"tflite": "int8"}}, "expected a table such as"),
    ],
)
def test_top_level_config_values_have_types_too(tmp_path, table, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        apply_config_file(BuildConfig(), table, tmp_path / "imgpipe.toml")


def test_wait_is_an_option_with_help():
    args = build_parser().parse_args(["build", "--wait"])
    assert given_options(args)["wait"] is True
    build_help = build_parser()._subparsers._group_actions[0].choices["build"].format_help()
    assert "--wait" in build_help and "wait for it to finish instead of stopping" in " ".join(build_help.split())


def test_every_build_option_states_its_default():
    import re

    parser = build_parser()
    build = parser._subparsers._group_actions[0].choices["build"]
    for action in build._actions:
        if not action.option_strings or action.dest in ("help", "config", "debug", "verbose", "json", "split"):
            continue
        text = (action.help or "") % {"default": action.default} if "%(" in (action.help or "") else action.help
        assert re.search(r"\(default[: ]", text or ""), f"{action.option_strings[0]}: {action.help!r}"
    help_text = build.format_help()
    assert "--split" in help_text and "(default: 0.8 0.1 0.1)" in help_text


def test_commands_are_listed_in_the_order_a_user_meets_them():
    choices = list(build_parser()._subparsers._group_actions[0].choices)
    assert choices == ["build", "export", "evaluate", "predict", "inspect", "compare", "history", "bench"]


def test_alpha_has_one_default_in_help_and_behaviour():
    """No --alpha: the width the --weights file was made for, else 1.0 (ImageNet too)."""
    from imgpipe.pipeline.config import DEFAULT_ALPHA

    help_text = build_parser()._subparsers._group_actions[0].choices["build"].format_help()
    assert "the width the --weights file was made for, else 1.0" in " ".join(help_text.split())
    assert DEFAULT_ALPHA == 1.0
    assert config_from("--weights", "imagenet").backbone.alpha is None, "decided by resolve_backbone"


def test_imagenet_weights_take_width_1_and_say_so(monkeypatch, caplog):
    import logging

    from imgpipe.pipeline.config import BackboneSpec
    from imgpipe.pipeline.training import weights

    monkeypatch.setattr(weights, "_fetch_imagenet", lambda spec: None)  # no download in tests
    with caplog.at_level(logging.INFO, logger="imgpipe"):
        spec = weights.resolve_backbone(BackboneSpec(weights="imagenet"))
    assert spec.alpha == 1.0
    assert "backbone: mobilenet_v2 alpha 1.0, 224 px, ImageNet weights (alpha 1.0: the default width" in caplog.text


def test_weights_on_the_embedded_dataset_decide_their_own_width():
    args = build_parser().parse_args(["build", "--weights", "imagenet"])
    assert make_config(given_options(args)).backbone.alpha is None
    args = build_parser().parse_args(["build", "--weights", "imagenet", "--alpha", "0.5"])
    assert make_config(given_options(args)).backbone.alpha == 0.5


def test_default_pruning_epochs_stretch_to_enough_steps_on_a_small_split():
    from imgpipe.pipeline.optimize.prune import DEFAULT_EPOCHS, MIN_STEPS, pruning_epochs

    assert pruning_epochs(None, steps_per_epoch=1000) == DEFAULT_EPOCHS
    assert pruning_epochs(None, steps_per_epoch=13) == 8 and 8 * 13 >= MIN_STEPS > 7 * 13
    assert pruning_epochs(2, steps_per_epoch=13) == 2, "epochs the user asked for are kept"
