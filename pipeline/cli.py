"""The `imgpipe` command line. User errors become one line on stderr and a non-zero exit; `--debug` keeps
tracebacks."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from imgpipe import __version__
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
    from imgpipe.model import ARCHITECTURES

    parser = argparse.ArgumentParser(
        prog="imgpipe",
        description="Train a MobileNet image classifier from class folders, export it to TFLite, Core ML and "
                    "ONNX, verify every artifact with its own runtime and publish a mobile-ready bundle.")
    parser.add_argument("--version", action="version", version=f"imgpipe {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("build", parents=[common], help="train, export, verify and publish a bundle",
                       description="Train, export, verify and publish. Without --dataset, builds the small "
                                   "embedded dataset the project generates itself (no data or network needed).")
    b.add_argument("--dataset", type=Path, help="folder with one sub-folder of images per class "
                                                "(default: the embedded generated dataset)")
    b.add_argument("--out", type=Path, default=Path("imgpipe-build"), help="build folder (default: %(default)s)")
    b.add_argument("--targets", nargs="+", default=["tflite", "coreml", "onnx"], choices=list(FORMATS),
                   metavar="FORMAT", help=f"formats to export: {', '.join(FORMATS)} (default: all)")
    b.add_argument("--arch", choices=ARCHITECTURES, help="backbone (default: mobilenet_v2)")
    b.add_argument("--alpha", type=float, help="width multiplier (default: 1.0; embedded dataset 0.35)")
    b.add_argument("--image-size", type=int, help="input size in pixels, 96-224 (default: 224; embedded 96)")
    b.add_argument("--weights", help="imagenet (Keras download and cache), PATH to a Keras no-top .h5, or none "
                                     "(default: imagenet; embedded dataset: none)")
    b.add_argument("--epochs", type=int, help="head epochs (or all-layer epochs with --weights none)")
    b.add_argument("--fine-tune-epochs", type=int, help="epochs fine-tuning the top layers on images (default 0)")
    b.add_argument("--fine-tune-layers", type=int, help="how many top layers to fine-tune (default 30)")
    b.add_argument("--batch-size", type=int)
    b.add_argument("--learning-rate", type=float)
    b.add_argument("--no-augment", action="store_true", help="no flip/rotation/zoom/brightness augmentation")
    b.add_argument("--split", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions (default: %s)" % " ".join(str(v) for v in vars(SplitFractions()).values()))
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--name", default="ImageClassifier", help="model name inside the artifacts")
    b.add_argument("--cache-dir", type=Path, help="bottleneck cache (default: ~/.cache/imgpipe/bottlenecks)")
    b.set_defaults(handler=_cmd_build)

    e = sub.add_parser("evaluate", parents=[common], help="run every artifact of a bundle on another labelled folder")
    e.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle) with manifest.json")
    e.add_argument("--dataset", type=Path, required=True, help="folder with one sub-folder per class")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(handler=_cmd_evaluate)
    return parser


def _cmd_build(args) -> int:
    from imgpipe.build import run_build

    run_build(build_config_from_args(args))
    return 0


def build_config_from_args(args):
    from imgpipe.config import EMBEDDED_BACKBONE, EMBEDDED_TRAINING, BuildConfig
    from imgpipe.dataset import SplitFractions
    from imgpipe.exporters.base import ModelMetadata
    from imgpipe.model import BackboneSpec
    from imgpipe.synthetic import embedded_dataset
    from imgpipe.train import TrainConfig

    config = BuildConfig(out=args.out)
    if args.dataset is None:
        config.dataset = embedded_dataset(config.cache_dir.parent)
        config.backbone, config.train = EMBEDDED_BACKBONE, EMBEDDED_TRAINING
    else:
        config.dataset = args.dataset
    config.backbone = replace(config.backbone, **_given(args, arch="arch", alpha="alpha",
                                                        image_size="image_size", weights="weights"))
    config.train = replace(config.train, seed=args.seed, **_given(
        args, epochs="epochs", fine_tune_epochs="fine_tune_epochs", fine_tune_layers="fine_tune_layers",
        batch_size="batch_size", learning_rate="learning_rate"))
    if args.no_augment:
        config.train = replace(config.train, augment=False)
    if args.split:
        config.split = SplitFractions(*args.split)
    if args.cache_dir:
        config.cache_dir = args.cache_dir
    config.targets = list(dict.fromkeys(args.targets))
    config.metadata = ModelMetadata(name=args.name)
    return config


def _given(args, **names) -> dict:
    """Only the options the user actually passed, so defaults stay in the dataclasses."""
    return {field: getattr(args, attr) for field, attr in names.items() if getattr(args, attr) is not None}


def _cmd_evaluate(args) -> int:
    from imgpipe.evaluate import evaluate_bundle, print_evaluation

    result = evaluate_bundle(args.bundle, args.dataset)
    print_evaluation(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
