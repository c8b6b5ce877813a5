"""The `imgpipe` command line. User errors, and the operating system's refusals (a full disk, a permission), become
one line on stderr naming the path and the fix, and exit 2; `--debug` keeps tracebacks. Ctrl-C exits 130 and
SIGTERM 143. Progress and log lines go to stderr, tables and `--json` to stdout, in every command; other
libraries' output is captured unless `-vv` (see `core.console`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from ..core.console import command_console, echo
from ..core.errors import ImgpipeError, filesystem_error
from ..core.signals import Terminated, stop_on_sigterm
from ..core.version import __version__

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away
EXIT_TERMINATED = 143  # 128 + SIGTERM
log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    try:
        with command_console(args.verbose):
            return args.handler(args)
    except BrokenPipeError:  # `imgpipe history --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return EXIT_BROKEN_PIPE
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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after every option that has a default and does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from ..history.store import HISTORY_HELP
    from .build_options import add_build_options

    parser = argparse.ArgumentParser(
        prog="imgpipe",
        description="Train a MobileNet image classifier from class folders, export it to TFLite, Core ML and "
        "ONNX, verify every artifact with its own runtime and publish a mobile-ready bundle.",
    )
    parser.add_argument("--version", action="version", version=f"imgpipe {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks")
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more detail: -v imgpipe's debug lines and what each converter printed, -vv every library's output",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, formatter_class=_HelpFormatter, **kwargs)

    b = command(
        "build",
        "train, export, verify and publish a bundle",
        description="Train, export, verify and publish. Without --dataset, builds the small embedded dataset the "
        "project generates itself (no data or network needed) with a quick recipe (about a minute on 2 cores).",
    )
    add_build_options(b)
    b.add_argument("--json", action="store_true", help="print the build's result as JSON instead of the table")
    b.set_defaults(handler=_cmd_build)

    x = command(
        "export",
        "re-export a finished build to other formats or variants without training",
        description="Export the model of a finished build again: new --targets or --variants replace the build's "
        "formats, any other option changes what it says. Training, and every artifact whose inputs are unchanged, "
        "come from the stage cache; each artifact is verified on the build's test photos, so the dataset must "
        "still be there. Writes into BUILD unless --out is given.",
    )
    x.add_argument("build_folder", type=Path, metavar="BUILD", help="the folder a build wrote (its --out)")
    add_build_options(x)
    x.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    x.set_defaults(handler=_cmd_export)

    e = command("evaluate", "run every artifact of a bundle on another labelled folder")
    e.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle) with manifest.json")
    e.add_argument("--dataset", type=Path, required=True, help="folder with one sub-folder per class")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(handler=_cmd_evaluate)

    p = command("predict", "top-k labels for images from any artifact or a bundle")
    p.add_argument("model", type=Path, metavar="MODEL_OR_BUNDLE", help=".tflite, .onnx, .mlpackage or a bundle folder")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--top-k", type=int, default=3, help="labels per image")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_cmd_predict)

    i = command("inspect", "summarise a bundle and verify every checksum")
    i.add_argument("bundle", type=Path, help="bundle folder (OUT/bundle)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(handler=_cmd_inspect)

    c = command(
        "compare",
        "differences between two builds: accuracy, size, latency, which test photos changed prediction",
        description="Compare two builds per artifact. A and B are build ids from `imgpipe history`, build folders "
        "(OUT), bundle folders (OUT/bundle) or manifest.json files.",
    )
    c.add_argument("a", metavar="A", help="the earlier build: id, build or bundle folder, or manifest.json")
    c.add_argument("b", metavar="B", help="the later build, the same kinds")
    c.add_argument("--history", type=Path, metavar="FILE", help=HISTORY_HELP)
    c.add_argument("--photos", type=int, default=20, metavar="N", help="changed test photos to list (0: none)")
    c.add_argument("--json", action="store_true", help="print JSON instead of tables")
    c.set_defaults(handler=_cmd_compare)

    h = command("history", "list recorded builds, newest first")
    h.add_argument("--history", type=Path, metavar="FILE", help=HISTORY_HELP)
    h.add_argument("--limit", type=int, default=20, metavar="N", help="builds to list (0: all)")
    h.add_argument("--json", action="store_true", help="print JSON instead of a table")
    h.set_defaults(handler=_cmd_history)

    bench = command("bench", "run the benchmark suite (python -m imgpipe.benchmarks)")
    bench.add_argument("--profile", choices=["quick", "full"], default="quick", help="which builds to time")
    bench.add_argument("--results", type=Path, help="folder for the JSON and Markdown (default: benchmarks/results)")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _cmd_build(args) -> int:
    from ..settings import make_config
    from .build_options import given_options

    def run():
        from ..api import build

        return build(config=args.config, **given_options(args))

    return _run_build(args, make_config(given_options(args), args.config), run)


def _cmd_export(args) -> int:
    from ..settings import export_config
    from .build_options import given_options

    def run():
        from ..api import export

        return export(args.build_folder, config=args.config, **given_options(args))

    return _run_build(args, export_config(args.build_folder, given_options(args), args.config), run)


def _run_build(args, config, run) -> int:
    """Check `config` before TensorFlow loads, then `run()` the build and print its result."""
    from ..bundle.lock import refuse_if_held
    from ..plan import plan_artifacts

    # What can be refused is refused before TensorFlow loads (seconds): bad options, and an OUT another build holds.
    config.validate()
    plan_artifacts(config)
    if not config.wait:
        refuse_if_held(config.out)

    from ..history.compare import format_versus
    from ..reports.summary import build_summary, format_summary
    from ..reports.table import artifact_rows, format_table, unavailable_notes
    from ..verify.gates import GATE_FAILURE_EXIT_CODE

    result = run()
    manifest = result.manifest
    summary = build_summary(manifest, result.out, result.seconds)
    versus = format_versus(result.versus) if result.versus else []
    if result.build_id is not None:
        versus.append(f"History: build #{result.build_id} (imgpipe history; imgpipe compare A B)")
    if args.json:
        echo(json.dumps(_build_json(result, summary), indent=2))
        for line in format_summary(summary) + versus:
            echo(line, err=True)
    else:
        entries = manifest["artifacts"] + manifest["rejected"]
        echo(format_table(artifact_rows(entries, manifest["reference"]["metrics"])))
        for note in unavailable_notes(entries):
            echo(note)
        echo()
        for line in format_summary(summary) + versus:
            echo(line)
    if result.rejected and not manifest["config"]["allow_failures"]:
        echo(
            f"imgpipe: {len(result.rejected)} artifact(s) failed a release gate and were not published "
            f"(see {result.out / 'report.md'}); pass --allow-failures to exit 0",
            err=True,
        )
        return GATE_FAILURE_EXIT_CODE
    return 0


def _build_json(result, summary: dict) -> dict:
    return {
        "out": str(result.out),
        "bundle": str(result.bundle),
        "report": str(result.report),
        "seconds": round(result.seconds, 1),
        "build_id": result.build_id,
        "recommended": summary["platforms"],
        "versus_last_build": result.versus,
        "reference": result.manifest["reference"],
        "artifacts": result.manifest["artifacts"],
        "rejected": result.manifest["rejected"],
        "timings": result.manifest["timings"],
    }


def _cmd_predict(args) -> int:
    from .predict import format_predictions, predict

    results = predict(args.model, args.images, top_k=args.top_k)
    echo(json.dumps(results, indent=2) if args.json else format_predictions(results))
    return 0


def _cmd_inspect(args) -> int:
    from ..bundle.inspect import format_inspection, inspect_bundle

    result = inspect_bundle(args.bundle)
    echo(json.dumps(result.to_dict(), indent=2) if args.json else format_inspection(result))
    error = result.error()
    if error is not None:
        raise error
    return 0


def _cmd_compare(args) -> int:
    from ..history.compare import compare_builds, format_comparison
    from ..history.store import History

    with History.open(args.history, create=False) as history:
        diff = compare_builds(history.resolve(args.a), history.resolve(args.b))
    echo(json.dumps(diff, indent=2) if args.json else format_comparison(diff, photos=args.photos))
    return 0


def _cmd_history(args) -> int:
    from ..history.listing import format_history
    from ..history.store import History

    with History.open(args.history, create=False) as history:
        builds = history.builds(limit=args.limit or None)
        where = history.path
    echo(
        json.dumps({"history": str(where), "builds": builds}, indent=2) if args.json else format_history(builds, where)
    )
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
