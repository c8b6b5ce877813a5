"""Errors a user can cause. The CLI prints them as one line and exits with their `exit_code`.

Anything else is a bug and keeps its traceback.
"""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (converters attach pages of logs), or its type."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


class ImgpipeError(Exception):
    """A problem with the user's input or environment, with a message that names the file and the fix."""

    exit_code = 2


class DatasetError(ImgpipeError):
    """The dataset folder cannot be used as given."""


class WeightsError(ImgpipeError):
    """Backbone weights cannot be loaded."""


class ConfigError(ImgpipeError):
    """An option or config file value is invalid."""


class ExportError(ImgpipeError):
    """A converter refused the model."""


class BundleError(ImgpipeError):
    """A bundle on disk is missing, incomplete or altered."""


class ArtifactError(ImgpipeError):
    """An artifact file cannot be opened by its runtime."""


class ImageError(ImgpipeError):
    """An image given to `predict` cannot be read."""
