"""The `imgpipe` command line. User errors become one line on stderr and a non-zero exit; `--debug` keeps
tracebacks."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from imgpipe import __version__
from imgpipe.console import to_stderr
from imgpipe.errors import ImgpipeError

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ImgpipeError as e:
        if args.debug:
            raise
        print(f"imgpipe: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("imgpipe: interrupted; nothing was published", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    from imgpipe.dataset import SplitFractions
    from imgpipe.exporters.registry import FORMATS
    from imgpipe.gates import GATE_FAILURE_EXIT_CODE
    from imgpipe.model import ARCHITECTURES

    parser = argparse.ArgumentParser(
        prog="imgpipe",
        description="Train a MobileNet image classifier from class folders, export it to TFLite, Core ML and "
        "ONNX, verify every artifact with its own runtime and publish a mobile-ready bundle.",
    )
    parser.add_argument("--version", action="version", version=f"imgpipe {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "build",
        parents=[common],
        help="train, export, verify and publish a bundle",
        description="Train, export, verify and publish. Without --dataset, builds the small "
        "embedded dataset the project generates itself (no data or network needed).",
    )
    b.add_argument(
        "--dataset",
        type=Path,
        help="folder with one sub-folder of images per class (default: the embedded generated dataset)",
    )
    b.add_argument("--out", type=Path, help="build folder (default: imgpipe-build)")
    b.add_argument("--config", type=Path, help="TOML file with build settings (command-line options win)")
    b.add_argument(
        "--targets",
        nargs="+",
        choices=list(FORMATS),
        metavar="FORMAT",
        help=f"formats to export, each with its default variant: {', '.join(FORMATS)} (default: all)",
    )
    b.add_argument(
        "--variants",
        nargs="+",
        metavar="FORMAT:V[,V]",
        help="variants per format: "
        + "; ".join(f"{n}: {','.join(f.variants)}" for n, f in FORMATS.items())
        + " (e.g. tflite:fp32,int8 onnx:fp32,int8 coreml:fp16,palettize)",
    )
    b.add_argument(
        "--optimize",
        nargs="+",
        metavar="OPT",
        help="model-level optimizations: prune, qat; their models are exported too",
    )
    b.add_argument("--sparsity", type=float, help="pruning target sparsity (default 0.5)")
    b.add_argument("--prune-epochs", type=int, help="pruning fine-tune epochs (default 4)")
    b.add_argument("--qat-epochs", type=int, help="quantization-aware fine-tune epochs (default 2)")
    b.add_argument(
        "--io-type",
        choices=["float", "int8", "uint8"],
        help="TFLite int8 input/output type (default float; MediaPipe needs float or uint8)",
    )
    b.add_argument("--palette-bits", type=int, choices=[4, 6, 8], help="Core ML palettization bits (default 6)")
    g = b.add_argument_group("release gates (every artifact; the config file can set them per format/variant)")
    g.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="FRACTION",
        help="largest accuracy loss vs the float Keras model, 0.01 = 1 point (default 0.05)",
    )
    g.add_argument("--min-accuracy", type=float, metavar="FRACTION", help="lowest test accuracy, e.g. 0.9")
    g.add_argument("--max-bytes", type=int, help="largest artifact size in bytes")
    g.add_argument("--max-latency-ms", type=float, help="largest single-image p50 latency on this CPU")
    g.add_argument(
        "--allow-failures",
        action="store_true",
        help=f"exit 0 even when an artifact fails a gate (it is still left out); otherwise exit "
        f"{GATE_FAILURE_EXIT_CODE}",
    )
    b.add_argument("--arch", choices=ARCHITECTURES, help="backbone (default: mobilenet_v2)")
    b.add_argument("--alpha", type=float, help="width multiplier (default: 1.0; embedded dataset 0.35)")
    b.add_argument("--image-size", type=int, help="input size in pixels, 96-224 (default: 224; embedded 96)")
    b.add_argument(
        "--weights",
        help="imagenet (Keras download and cache), PATH to a Keras no-top .h5, or none "
        "(default: imagenet; embedded dataset: none)",
    )
    b.add_argument("--epochs", type=int, help="head epochs (or all-layer epochs with --weights none)")
    b.add_argument("--fine-tune-epochs", type=int, help="epochs fine-tuning the top layers on images (default 0)")
    b.add_argument("--fine-tune-layers", type=int, help="how many top layers to fine-tune (default 30)")
    b.add_argument("--batch-size", type=int)
    b.add_argument("--learning-rate", type=float)
    b.add_argument("--no-augment", action="store_true", help="no flip/rotation/zoom/brightness augmentation")
    b.add_argument(
        "--split",
        nargs=3,
        type=float,
        metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions (default: %s)" % " ".join(str(v) for v in vars(SplitFractions()).values()),
    )
    b.add_argument("--seed", type=int, help="random seed (default 0)")
    b.add_argument("--name", help="model name inside the artifacts and the Core ML file name (default ImageClassifier)")
    b.add_argument("--cache-dir", type=Path, help="bottleneck cache (default: ~/.cache/imgpipe/bottlenecks)")
    b.set_defaults(handler=_cmd_build)

    p = sub.add_parser("predict", parents=[common], help="top-k labels for images from any artifact or a bundle")
    p.add_argument(
        "model", type=Path, metavar="MODEL_OR_BUNDLE", help=".tflite, .onnx, .mlpackage (macOS) or a bundle folder"
    )
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_cmd_predict)

    i = sub.add_parser("inspect", parents=[common], help="summarise a bundle and verify every checksum")
    i.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(handler=_cmd_inspect)

    bench = sub.add_parser("bench", parents=[common], help="run the benchmark suite (same as python -m benchmarks)")
    bench.add_argument("--profile", choices=["quick", "full"], default="quick")
    bench.add_argument("--results", type=Path, help="folder for the JSON and Markdown (default benchmarks/results)")
    bench.set_defaults(handler=_cmd_bench)

    e = sub.add_parser("evaluate", parents=[common], help="run every artifact of a bundle on another labelled folder")
    e.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle) with manifest.json")
    e.add_argument("--dataset", type=Path, required=True, help="folder with one sub-folder per class")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(handler=_cmd_evaluate)
    return parser


def _cmd_build(args) -> int:
    from imgpipe.build import run_build
    from imgpipe.gates import GATE_FAILURE_EXIT_CODE

    config = build_config_from_args(args)
    manifest = run_build(config)
    if manifest["rejected"] and not config.allow_failures:
        print(
            f"imgpipe: {len(manifest['rejected'])} artifact(s) failed a release gate and were not published "
            f"(see {config.out / 'report.md'}); pass --allow-failures to exit 0",
            file=sys.stderr,
        )
        return GATE_FAILURE_EXIT_CODE
    return 0


def build_config_from_args(args):
    """Defaults (the embedded-dataset ones when no dataset is named), then the --config file, then options."""
    from imgpipe.config import EMBEDDED_BACKBONE, EMBEDDED_TRAINING, BuildConfig, parse_variant_specs
    from imgpipe.config_file import apply_config_file, load_config_file
    from imgpipe.dataset import SplitFractions
    from imgpipe.synthetic import embedded_dataset

    file_data = load_config_file(args.config) if args.config else {}
    config = BuildConfig(out=Path("imgpipe-build"))
    if args.dataset is None and "dataset" not in file_data:
        config.dataset = embedded_dataset(config.cache_dir.parent)
        config.backbone, config.train = EMBEDDED_BACKBONE, EMBEDDED_TRAINING
    if file_data:
        apply_config_file(config, file_data, args.config)
    config.backbone = replace(
        config.backbone, **_given(args, arch="arch", alpha="alpha", image_size="image_size", weights="weights")
    )
    config.train = replace(
        config.train,
        **_given(
            args,
            epochs="epochs",
            fine_tune_epochs="fine_tune_epochs",
            fine_tune_layers="fine_tune_layers",
            batch_size="batch_size",
            learning_rate="learning_rate",
            seed="seed",
        ),
    )
    config.export = replace(config.export, **_given(args, io_type="io_type", palette_bits="palette_bits"))
    config.prune = replace(config.prune, **_given(args, target_sparsity="sparsity", epochs="prune_epochs"))
    config.qat = replace(config.qat, **_given(args, epochs="qat_epochs"))
    config.metadata = replace(config.metadata, **_given(args, name="name"))
    if args.no_augment:
        config.train = replace(config.train, augment=False)
    if args.split:
        config.split = SplitFractions(*args.split)
    for attr in ("dataset", "out", "cache_dir"):
        if getattr(args, attr) is not None:
            setattr(config, attr, getattr(args, attr))
    if args.variants:
        config.variant_choices = parse_variant_specs(args.variants)
    if args.targets:
        config.targets = list(dict.fromkeys(args.targets))
    config.targets = list(dict.fromkeys(config.targets + list(config.variant_choices)))
    if args.optimize:
        config.optimize = list(dict.fromkeys(args.optimize))
    config.gates.command_line = _given(
        args,
        max_accuracy_drop="max_accuracy_drop",
        min_accuracy="min_accuracy",
        max_bytes="max_bytes",
        max_latency_ms="max_latency_ms",
    )
    config.allow_failures = config.allow_failures or args.allow_failures
    return config


def _given(args, **names) -> dict:
    """Only the options the user actually passed, so defaults stay in the dataclasses."""
    return {field: getattr(args, attr) for field, attr in names.items() if getattr(args, attr) is not None}


def _cmd_predict(args) -> int:
    import json

    from imgpipe.predict import format_predictions, predict

    results = predict(args.model, args.images, top_k=args.top_k, warn=to_stderr)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results))
    return 0


def _cmd_inspect(args) -> int:
    import json

    from imgpipe.inspect_bundle import format_inspection, inspect_bundle

    result = inspect_bundle(args.bundle)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_inspection(result))
    error = result.error()
    if error is not None:
        raise error
    return 0


def _cmd_bench(args) -> int:
    from imgpipe.benchmarks.__main__ import main as bench_main

    return bench_main(["--profile", args.profile] + (["--results", str(args.results)] if args.results else []))


def _cmd_evaluate(args) -> int:
    from imgpipe.evaluate import evaluate_bundle, print_evaluation

    result = evaluate_bundle(args.bundle, args.dataset, progress=to_stderr)
    print_evaluation(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
