"""What imgpipe shows on a terminal, and where: progress bars, one line per finished stage and warnings go to
stderr; tables, results and `--json` go to stdout, so pipes and JSON stay clean.

Every module logs through `logging.getLogger(__name__)` (all below the `imgpipe` logger) and long loops wrap
themselves in `progress_bar`. A library user sees only warnings (Python's default); the command line calls
`setup_console`, which shows imgpipe's lines and draws bars when stderr is a terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ROOT_LOGGER = "imgpipe"
log = logging.getLogger(__name__)


class _ConsoleHandler(logging.Handler):
    """Log records printed by a rich Console, which keeps them above any live progress bar."""

    def __init__(self, console, level: int):
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a broken terminal must not crash a build
            self.handleError(record)


def setup_console(verbose: int = 0) -> None:
    """imgpipe's INFO lines (DEBUG with -v) on stderr; other libraries' records only with -vv."""
    from rich.console import Console

    logger = logging.getLogger(ROOT_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_ConsoleHandler(Console(stderr=True), logging.DEBUG if verbose else logging.INFO))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = verbose >= 2


def _console():
    """The console the command line set up, if any: bars must share it so log lines print above them."""
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(handler, _ConsoleHandler):
            return handler.console
    return None


@contextmanager
def progress_bar(what: str, total: int | None, unit: str = "img") -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, note="")`; on a terminal a bar with count, rate, ETA and the latest note shows until the
    block ends."""
    console = _console()
    if console is None or not console.is_terminal or not total:
        yield lambda n=1, note="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=total, rate="", note="")
        start = time.perf_counter()
        done = 0

        def advance(n: int = 1, note: str = "") -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - start, 1e-9)
            speed = f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"
            bar.update(task, advance=n, rate=speed, note=note)

        yield advance


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a build stage into `timings` and say when it is done, so a long build shows where its time goes."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    timings[name] = round(seconds, 3)
    log.info(f"{name}: {seconds:.1f} s")
