"""`python -m imgpipe.benchmarks [--profile quick|full]` (also `imgpipe bench`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..pipeline.core.console import command_console, echo, setup_console
from .markdown import render_markdown, render_scale_markdown
from .previous import PreviousNotFound, previous_command
from .scale import run_scale
from .suite import PROFILES, RESULTS_DIR, cases_from_environment, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgpipe bench", description=__doc__)
    parser.add_argument("--profile", choices=[*PROFILES, "scale"], default="quick")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder for the JSON and Markdown")
    args = parser.parse_args(argv)
    setup_console()
    args.results.mkdir(parents=True, exist_ok=True)
    if args.profile == "scale":
        markdown = render_scale_markdown(run_scale(args.results))
        return _publish(markdown, args.results)
    try:
        previous = previous_command()
    except PreviousNotFound as e:
        echo(f"imgpipe bench: {e}", err=True)
        return 2
    cases, notices = cases_from_environment()
    for notice in notices:
        echo(f"imgpipe bench: {notice}", err=True)
    suite = run_suite(args.profile, cases, notices, args.results, previous)
    return _publish(render_markdown(suite), args.results)


def _publish(markdown: str, results: Path) -> int:
    """report.md, stdout, and the CI job summary when there is one."""
    (results / "report.md").write_text(markdown)
    echo(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(markdown)
    return 0


if __name__ == "__main__":
    with command_console():  # other libraries' output (converter bars, TensorFlow's C++ lines) stays out of CI logs
        code = main()
    sys.exit(code)
