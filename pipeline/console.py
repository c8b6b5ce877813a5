"""Where progress and warnings go."""

import sys


def to_stderr(message: str) -> None:
    """Progress and warnings go to stderr so that stdout holds only results (--json stays parseable)."""
    print(message, file=sys.stderr, flush=True)
