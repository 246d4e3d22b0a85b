"""The one error path shared by every command.

Every failure a user can cause (a missing file, a truncated PE, a corrupt PDB, an
unwritable output) is raised as a :class:`PehpError`.  The CLI prints it as one line
naming the file and the problem and exits with code 2; the traceback is shown only
with ``--debug``.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2


class PehpError(Exception):
    """A user-facing failure.  ``str()`` gives the one-line message."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        super().__init__(message, self.path)  # both survive pickling across processes

    def __str__(self) -> str:
        if self.path:
            return f"{self.path}: {self.message}"
        return self.message


class InputError(PehpError):
    """An input file is missing, unreadable, malformed or of the wrong kind."""


class FormatError(InputError):
    """A structure inside an input file is malformed (bad size, offset out of range...)."""


class UsageError(PehpError):
    """Inconsistent or missing command-line arguments."""


class OutputError(PehpError):
    """An output could not be written; nothing was left behind."""


def read_input_text(path: str | os.PathLike[str], what: str) -> str:
    """Read a small UTF-8 text input (functions file, waivers), failing as one line."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError("no such file", p) from None
    except IsADirectoryError:
        raise InputError(f"is a directory, not a {what}", p) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", p) from None
    if b"\0" in raw:
        raise InputError(f"not a text file ({what} expected)", p)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"not UTF-8 text ({what} expected)", p) from None
