"""imgpipe's version: read by pyproject.toml (dynamic version), the CLI and every artifact's metadata."""

__version__ = "0.2.0"
