"""Writing outputs without ever losing anything.

An output goes to a temporary file in the target directory, is read back and checked
(the bytes are what was meant to be written, and ``validate`` re-parses them), and is
renamed into place only then.  An existing file is replaced only with
``overwrite=True``; without it the rename cannot clobber a file that appeared in the
meantime (it is a hard link, which fails on an existing name).  A destination that is an
input file, or lies inside an input directory, is refused.  On any failure, and on an
interrupt, the temporary file is removed: nothing partial is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pehotpatch.errors import OutputError

Validator = Callable[[bytes], None]
PathLike = str | os.PathLike[str]


def _is_within(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
        return True
    except ValueError:
        return False


def check_destination(path: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Refuse a destination that would lose something, before any work is done.

    Raises :class:`OutputError` when ``path`` is an input (also through a symlink, a
    hard link or another spelling), lies inside an input directory, is a directory,
    exists without ``overwrite``, or its directory is missing."""
    dest = Path(path)
    real = Path(os.path.realpath(dest))
    for inp in inputs:
        ip = Path(inp)
        ireal = Path(os.path.realpath(ip))
        if real == ireal or _same_file(dest, ip):
            raise OutputError("refusing to write the output over an input file", dest)
        if ip.is_dir() and _is_within(real, ireal):
            raise OutputError(f"refusing to write the output inside the input directory {ip}", dest)
    if dest.is_dir():
        raise OutputError("output path is a directory", dest)
    if os.path.lexists(dest) and not overwrite:
        raise OutputError("output exists; pass --overwrite to replace it", dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("output directory does not exist", dest)
    return dest


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(
    path: PathLike,
    data: bytes,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike] = (),
    validate: Validator | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically; raise :class:`OutputError` on any failure.

    ``validate`` receives the bytes read back from the temporary file and raises
    ``ValueError`` when they do not parse."""
    dest = check_destination(path, overwrite=overwrite, inputs=inputs)
    parent = dest.parent if str(dest.parent) else Path(".")
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with open(tmp_name, "rb") as fh:
            back = fh.read()
        if back != data:
            raise OutputError(f"read back {len(back)} of {len(data)} bytes written", dest)
        if validate is not None:
            try:
                validate(back)
            except ValueError as exc:
                raise OutputError(f"internal error: the output does not re-parse ({exc}); not written",
                                  dest) from None
        os.chmod(tmp_name, 0o644 & ~_umask())
        _publish(tmp_name, dest, overwrite)
        tmp_name = None
        _sync_directory(parent)
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


def _publish(tmp_name: str, dest: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp_name, dest)
        return
    try:
        os.link(tmp_name, dest)  # fails if dest appeared since the check: never clobbers
    except FileExistsError:
        raise OutputError("output exists; pass --overwrite to replace it", dest) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # no hard links on this file system: the check above is all there is
        if os.path.lexists(dest):
            raise OutputError("output exists; pass --overwrite to replace it", dest) from None
        os.replace(tmp_name, dest)
        return
    os.unlink(tmp_name)


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- validators: the written bytes must parse as what they claim to be ---------------------
def validate_text(data: bytes) -> None:
    data.decode("utf-8")  # UnicodeDecodeError is a ValueError


def validate_json(data: bytes) -> None:
    json.loads(data)


def validate_sarif(data: bytes) -> None:
    doc = json.loads(data)
    if not (isinstance(doc, dict) and doc.get("version") == "2.1.0" and isinstance(doc.get("runs"), list)):
        raise ValueError("not a SARIF 2.1.0 log (version or runs missing)")
