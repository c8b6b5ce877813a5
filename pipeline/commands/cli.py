"""The `imgpipe` command line. User errors, and the operating system's refusals (a full disk, a permission), become
one line on stderr naming the path and the fix, and exit 2; `--debug` keeps tracebacks. Ctrl-C exits 130 and
SIGTERM 143. Progress and warnings go to stderr, tables and `--json` to stdout."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from ..core.console import setup_console
from ..core.errors import ImgpipeError, filesystem_error
from ..core.signals import Terminated, stop_on_sigterm
from ..core.version import __version__

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    setup_console(args.verbose)
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    try:
        return args.handler(args)
    except Exception as e:
        error = e if isinstance(e, ImgpipeError) else filesystem_error(e)
        if error is None or args.debug:
            raise
        print(f"imgpipe: error: {error}", file=sys.stderr)
        return error.exit_code
    except (KeyboardInterrupt, Terminated) as e:
        if args.debug:
            raise
        what = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        notes = getattr(e, "__notes__", None)
        if notes:  # the signal came during a publish, which was completed first
            print(f"imgpipe: {what}; {notes[0]}", file=sys.stderr)
        else:
            print(f"imgpipe: {what}" + ("; nothing was published" if args.command == "build" else ""), file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def build_parser() -> argparse.ArgumentParser:
    from .build_options import add_build_options

    parser = argparse.ArgumentParser(
        prog="imgpipe",
        description="Train a MobileNet image classifier from class folders, export it to TFLite, Core ML and "
        "ONNX, verify every artifact with its own runtime and publish a mobile-ready bundle.",
    )
    parser.add_argument("--version", action="version", version=f"imgpipe {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv: other libraries too)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "build",
        parents=[common],
        help="train, export, verify and publish a bundle",
        description="Train, export, verify and publish. Without --dataset, builds the small embedded dataset the "
        "project generates itself (no data or network needed).",
    )
    add_build_options(b)
    b.set_defaults(handler=_cmd_build)

    e = sub.add_parser("evaluate", parents=[common], help="run every artifact of a bundle on another labelled folder")
    e.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle) with manifest.json")
    e.add_argument("--dataset", type=Path, required=True, help="folder with one sub-folder per class")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", parents=[common], help="top-k labels for images from any artifact or a bundle")
    p.add_argument("model", type=Path, metavar="MODEL_OR_BUNDLE", help=".tflite, .onnx, .mlpackage or a bundle folder")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--top-k", type=int, default=3, help="labels per image (default: 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_cmd_predict)

    i = sub.add_parser("inspect", parents=[common], help="summarise a bundle and verify every checksum")
    i.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(handler=_cmd_inspect)

    bench = sub.add_parser("bench", parents=[common], help="run the benchmark suite (python -m imgpipe.benchmarks)")
    bench.add_argument("--profile", choices=["quick", "full"], default="quick", help="(default: quick)")
    bench.add_argument("--results", type=Path, help="folder for the JSON and Markdown (default: benchmarks/results)")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _cmd_build(args) -> int:
    from ..bundle.lock import refuse_if_held
    from ..plan import plan_artifacts
    from ..settings import make_config
    from .build_options import given_options

    # What can be refused is refused before TensorFlow loads (seconds): bad options, and an OUT another build holds.
    config = make_config(given_options(args), args.config)
    config.validate()
    plan_artifacts(config)
    if not config.wait:
        refuse_if_held(config.out)

    from ..api import build
    from ..reports.table import artifact_rows, format_table, unavailable_notes
    from ..verify.gates import GATE_FAILURE_EXIT_CODE

    result = build(config=args.config, **given_options(args))
    entries = result.manifest["artifacts"] + result.manifest["rejected"]
    print(format_table(artifact_rows(entries, result.manifest["reference"]["metrics"])))
    for note in unavailable_notes(entries):
        print(note)
    print(f"\nbundle: {result.bundle}\nreport: {result.report} (and report.md)")
    if result.rejected and not result.manifest["config"]["allow_failures"]:
        print(
            f"imgpipe: {len(result.rejected)} artifact(s) failed a release gate and were not published "
            f"(see {result.out / 'report.md'}); pass --allow-failures to exit 0",
            file=sys.stderr,
        )
        return GATE_FAILURE_EXIT_CODE
    return 0


def _cmd_predict(args) -> int:
    from .predict import format_predictions, predict

    results = predict(args.model, args.images, top_k=args.top_k)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results))
    return 0


def _cmd_inspect(args) -> int:
    from ..bundle.inspect import format_inspection, inspect_bundle

    result = inspect_bundle(args.bundle)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_inspection(result))
    error = result.error()
    if error is not None:
        raise error
    return 0


def _cmd_bench(args) -> int:
    from ...benchmarks.__main__ import main as bench_main

    return bench_main(["--profile", args.profile] + (["--results", str(args.results)] if args.results else []))


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate_bundle, print_evaluation

    print_evaluation(evaluate_bundle(args.bundle, args.dataset), as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
