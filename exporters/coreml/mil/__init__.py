"""Run the ML Program inside a Core ML .mlpackage on Linux, to measure Core ML artifacts where Core ML is absent."""

from .errors import ProgramError, UnsupportedOpError
from .executor import MilExecutor, open_program

__all__ = ["MilExecutor", "ProgramError", "UnsupportedOpError", "open_program"]
