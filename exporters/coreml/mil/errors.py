"""Typed, one-line errors: verification, `imgpipe predict` and `evaluate` print them as the whole explanation."""

from __future__ import annotations

from pathlib import Path

from ....pipeline.core.errors import ArtifactError


class ProgramError(ArtifactError):
    """The package cannot be read or executed; the message names the package and says why in one line."""

    def __init__(self, package: Path | str, reason: str):
        self.package = str(package)
        self.reason = " ".join(reason.split())
        super().__init__(f"{self.package}: {self.reason}")


class UnsupportedOpError(ProgramError):
    """Raised instead of approximating an op: a guessed op would make the measured accuracy meaningless."""

    def __init__(self, package: Path | str, op_type: str, supported: list[str]):
        self.op_type = op_type
        self.supported = list(supported)
        super().__init__(
            package, f"cannot run {op_type} on Linux (imgpipe's Core ML executor supports: {', '.join(supported)})"
        )
