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


MAX_TEXT_INPUT = 64 * 1024**2


def read_capped(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The whole file at ``path``, opened read-only, refused when it holds more than
    ``limit`` bytes (checked with fstat before reading, and while reading for pipes).

    ``OSError`` propagates so each reader keeps its own wording for missing files."""
    p = os.fspath(path)
    with open(p, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size > limit:
            raise InputError(f"{what} of {st.st_size} bytes is larger than the limit "
                             f"({_size_text(limit)})", p)
        chunks = []
        total = 0
        while True:
            chunk = fh.read(min(1 << 24, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InputError(f"{what} is larger than the limit ({_size_text(limit)})", p)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _size_text(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def read_input_text(path: str | os.PathLike[str], what: str) -> str:
    """Read a small UTF-8 text input (functions file, waivers), failing as one line."""
    p = os.fspath(path)
    try:
        raw = read_capped(p, MAX_TEXT_INPUT, what)
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


class Rejected(PehpError):
    """The gate rejects the pair (or the plan cannot express it): nothing was written.
    ``detail`` carries the check result or the plan that says why."""

    exit_code = EXIT_REJECTED

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None, detail: object = None):
        super().__init__(message, path)
        self.detail = detail
