"""Writing outputs without ever losing anything.

An output goes to a temporary file in the target directory, is checked by the caller's
``validate`` callback, and is renamed into place only then.  An existing file is
replaced only with ``overwrite=True``; a path equal to an input is refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pehotpatch.errors import OutputError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically; raise :class:`OutputError` on any failure."""
    dest = Path(path)
    for inp in inputs:
        ip = Path(inp)
        if _same_file(dest, ip) or dest.resolve() == ip.resolve():
            raise OutputError("refusing to write the output over an input file", dest)
    if dest.is_dir():
        raise OutputError("output path is a directory", dest)
    if dest.exists() and not overwrite:
        raise OutputError("output exists; pass --overwrite to replace it", dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("output directory does not exist", dest)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if validate is not None:
            validate(Path(tmp_name))
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
        tmp_name = None
    except OutputError:
        raise
    except PermissionError:
        raise OutputError("permission denied", dest) from None
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", dest) from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return dest
