"""The package's exceptions: one base for every error recgpt_tf raises on purpose.

Callers catch `RecGPTError` (the CLI does, and nothing wider), so an unexpected
error keeps its traceback. Each class also derives from the built-in its callers
would expect (`ValueError` for bad arguments and data, `FileNotFoundError` for a
missing run), so `except ValueError` around library calls keeps working.
Messages speak the Python API (argument names); the CLI translates them to flags.
"""

from __future__ import annotations

from pathlib import Path


class RecGPTError(Exception):
    """Base of every error the library raises on purpose (bad input, missing files, refused work)."""


class ConfigError(RecGPTError, ValueError):
    """An argument or configuration value is invalid.

    Attributes:
        argument: The argument's name in the Python API (e.g. "batching"); the CLI shows its flag.
        problem: What is wrong with it, e.g. "must be one of ...; got 'x'".
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument} {problem}")
        self.argument = argument
        self.problem = problem


class DataFormatError(RecGPTError, ValueError):
    """Input data is missing or malformed; the message names the file and line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class RunDirectoryError(RecGPTError, FileNotFoundError):
    """A run directory is missing or incomplete; the message names what is missing."""


class OutputConflictError(RecGPTError, FileExistsError):
    """An output holds, or is being written with, another job's results; the message says whose and how to go on."""


class IndexRecallError(RecGPTError, RuntimeError):
    """No search setting of an approximate index reached the recall target."""


class ExportError(RecGPTError, RuntimeError):
    """The export was refused or failed; nothing was published."""


def check_choice(argument: str, value, allowed) -> None:
    """Raises `ConfigError` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(argument, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
