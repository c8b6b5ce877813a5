"""What imgpipe shows on a terminal, and where: progress bars, one line per finished stage and warnings go to
stderr; tables, results and `--json` go to stdout, so pipes and JSON stay clean.

Every module logs through `logging.getLogger(__name__)` (all below the `imgpipe` logger) and long loops wrap
themselves in `progress_bar`. A library user sees only warnings (Python's default); the command line runs inside
`command_console`, which shows imgpipe's lines and draws bars when stderr is a terminal.

Other libraries talk a lot, much of it from C++ straight to file descriptors 1 and 2 (TensorFlow's and absl's
start-up lines, the TFLite converter's `fully_quantize: 0 ...`, LiteRT's XNNPACK line), the rest through Python
logging, warnings and tqdm bars (coremltools). None of it is the user's business unless asked for, so a command
sends descriptors 1 and 2 into a capture file and writes its own output through duplicates of the originals.
`-v` adds imgpipe's debug lines and what each converter said (`native_output`); `-vv` captures nothing and shows
other libraries' Python logging too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ROOT_LOGGER = "imgpipe"
log = logging.getLogger(__name__)
REPLAYED_LINES = 30  # of other libraries' output, shown when a command fails unexpectedly


class _ConsoleHandler(logging.Handler):
    """Log records printed by a rich Console, which keeps them above any live progress bar."""

    def __init__(self, console, level: int, prefix_names: bool = False):
        super().__init__(level)
        self.console = console
        self.prefix_names = prefix_names

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            if self.prefix_names and not record.name.startswith(ROOT_LOGGER):
                text = f"[{record.name}] {text}"
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # a broken terminal must not crash a build
            self.handleError(record)


class _Capture:
    """File descriptors 1 and 2 pointed at one temporary file, with text streams to where they pointed before."""

    def __init__(self):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self.file = tempfile.TemporaryFile(prefix="imgpipe-output-")
        self.saved: dict[int, int] = {}
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                self.saved[fd] = os.dup(fd)
        self.out = self._user_stream(sys.stdout, 1)
        self.err = self._user_stream(sys.stderr, 2)
        for fd in self.saved:
            os.dup2(self.file.fileno(), fd)

    def _user_stream(self, stream, fd: int):
        """A stream to the user's terminal or pipe that survives the redirect: a new one on a duplicate of `fd`
        when `stream` writes to it, else `stream` itself (pytest's capture, a notebook's)."""
        try:
            same = stream.fileno() == fd
        except (AttributeError, OSError, ValueError):
            same = False
        if not same or fd not in self.saved:
            return stream
        encoding = getattr(stream, "encoding", None) or "utf-8"
        return open(os.dup(self.saved[fd]), "w", encoding=encoding, errors="replace", buffering=1)

    def position(self) -> int:
        _flush_native()
        return os.fstat(self.file.fileno()).st_size

    def read(self, start: int, end: int | None = None) -> str:
        end = self.position() if end is None else end
        data = os.pread(self.file.fileno(), max(0, end - start), start)
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        _flush_native()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        for stream in (self.out, self.err):
            if stream not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.close()
        self.file.close()


def _flush_native() -> None:
    """C stdio buffers what native code printed to a file; flush it before reading or restoring descriptors."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


_capture: _Capture | None = None
_streams: tuple | None = None  # (out, err) of the running command


def user_streams():
    """(stdout, stderr) as the user sees them, even while other libraries' output is captured."""
    return _streams or (sys.stdout, sys.stderr)


def echo(text: str = "", *, err: bool = False) -> None:
    """A result line (stdout), or with err=True a message line (stderr), reaching the user in every mode."""
    out, error = user_streams()
    print(text, file=error if err else out, flush=True)


@contextmanager
def command_console(verbose: int = 0) -> Iterator[None]:
    """The command line's console: imgpipe's lines on stderr, other libraries' output captured unless -vv.

    An unexpected exception shows the last lines the other libraries printed (they may say what went wrong);
    errors imgpipe explains itself (ImgpipeError) do not.
    """
    global _capture, _streams
    if verbose < 2:
        os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' bars; read when tqdm is first imported
    root, ours = logging.getLogger(), logging.getLogger(ROOT_LOGGER)
    saved_root, saved_ours = (list(root.handlers), root.level), (ours.level, ours.propagate)
    capture = None
    try:
        capture = _Capture() if verbose < 2 else None
    except OSError:  # no usable descriptors (a closed stdout): run uncaptured rather than not at all
        capture = None
    _capture, _streams = capture, (capture.out, capture.err) if capture else None
    logging.captureWarnings(True)  # Python warnings from libraries become log records: shown with -vv only
    if verbose >= 2:
        root.handlers = [h for h in root.handlers if not isinstance(h, _ConsoleHandler)]
        root.setLevel(logging.INFO)
    setup_console(verbose)
    if verbose >= 2:
        root.addHandler(_ConsoleHandler(_console(), logging.INFO, prefix_names=True))
    try:
        yield
    except BaseException as e:
        if capture is not None and not _explained(e):
            _replay_tail(capture)
        raise
    finally:
        _remove_console_handlers()
        root.handlers, root.level = saved_root
        ours.level, ours.propagate = saved_ours
        logging.captureWarnings(False)
        _capture, _streams = None, None
        if capture is not None:
            capture.close()


def _explained(e: BaseException) -> bool:
    from .errors import ImgpipeError

    return isinstance(e, (ImgpipeError, KeyboardInterrupt, SystemExit))


def _replay_tail(capture: _Capture) -> None:
    lines = [line for line in capture.read(0).splitlines() if line.strip()][-REPLAYED_LINES:]
    if lines:
        echo("imgpipe: the last lines other libraries printed:\n  " + "\n  ".join(lines), err=True)


@contextmanager
def native_output(what: str) -> Iterator[None]:
    """Attribute what native code (a converter) prints during the block to `what`, as debug lines (-v)."""
    if _capture is None or not log.isEnabledFor(logging.DEBUG):
        yield
        return
    start = _capture.position()
    try:
        yield
    finally:
        lines = [line.rstrip() for line in _capture.read(start).replace("\r", "\n").splitlines() if line.strip()]
        if lines:
            log.debug(f"{what} printed:\n  " + "\n  ".join(lines))


def setup_console(verbose: int = 0) -> None:
    """imgpipe's INFO lines (DEBUG with -v) on stderr; other libraries' records only with -vv."""
    from rich.console import Console

    _remove_console_handlers()
    logger = logging.getLogger(ROOT_LOGGER)
    logger.addHandler(_ConsoleHandler(Console(file=user_streams()[1]), logging.DEBUG if verbose else logging.INFO))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _remove_console_handlers() -> None:
    logger = logging.getLogger(ROOT_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)


def _console():
    """The console the command line set up, if any: bars must share it so log lines print above them."""
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(handler, _ConsoleHandler):
            return handler.console
    return None


def is_interactive() -> bool:
    console = _console()
    return console is not None and console.is_terminal


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
    # No stdout/stderr redirection: other libraries' prints must stay in the capture, not appear above the bar.
    with Progress(*columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
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
    log.info(f"{name}: {format_seconds(seconds)}")


def format_seconds(seconds: float) -> str:
    """`0.4 s`, `12.3 s`, `1 min 05 s`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"
