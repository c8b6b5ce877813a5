"""Stopping a build: SIGINT (Ctrl-C) and SIGTERM (`kill`, a CI timeout, `docker stop`) end it the same way, and
neither can stop a publish half-way.

The command line calls `stop_on_sigterm`, so SIGTERM raises `Terminated` where SIGINT raises KeyboardInterrupt:
the staging folder is removed on the way out and the CLI exits 143 (130 for SIGINT) saying nothing was published.
`signals_held` wraps the few milliseconds of a publish: a signal that arrives meanwhile is delivered when it ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt, so no `except Exception` swallows it)."""


def stop_on_sigterm() -> None:
    """SIGTERM raises `Terminated` in the main thread instead of killing the process without cleanup."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def signals_held() -> Iterator[None]:
    """Run the block to its end; SIGINT/SIGTERM arriving meanwhile are re-raised (to whatever handled them before)
    once it has ended. Only the main thread receives signals, so elsewhere this holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in HELD}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if arrived:
            signal.raise_signal(arrived[0])
