"""A content-addressed cache of results that are a pure function of file bytes.

A release pipeline runs ``check``, then ``emit-final``, then ``verify`` on the same base
and intermediate, and each of them normalises every function of both images (most of
their time on an image without a PDB).  The normalised code of an image depends only on
the image's bytes, the extents of its functions and pehp's own code, so it is kept here
under a key made of exactly those, and the next run reads it back instead.

* Where: ``$PEHP_CACHE_DIR``, else ``$XDG_CACHE_HOME/pehp``, else ``~/.cache/pehp``.
  ``PEHP_NO_CACHE=1`` turns the cache off (nothing read, nothing written).
* Keys: a BLAKE2b digest of the entry's kind, pehp's version, a digest of the source of
  every module of the package and capstone's version (any change to pehp or its
  disassembler invalidates every entry), and the caller's own key parts (the image's
  SHA-256, machine, image base and function extents).
* Entries are ``marshal`` data of plain tuples behind a BLAKE2b checksum, written to a
  temporary file and renamed into place (a reader never sees a partial entry).  An entry
  whose checksum fails (a damaged byte) or that does not read back as the expected shape
  is ignored and rewritten.  The cache is an optimisation only:
  any error reading or writing it is ignored, and the result is the one computing gives.
* Size: after a write, at most once per :data:`PRUNE_EVERY_S` (a marker file's age says
  when), the oldest entries (by last use) are removed while the directory holds more
  than :data:`MAX_BYTES`.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

MAX_BYTES = 1 << 30  # 1 GiB
PRUNE_EVERY_S = 600.0
_PRUNED = ".pruned"
_CHECK = 16  # bytes of BLAKE2b over the entry, in front of it
_SUFFIX = ".entry"


def directory() -> Path | None:
    """The cache directory, or None when the cache is off."""
    if os.environ.get("PEHP_NO_CACHE", "") not in ("", "0"):
        return None
    explicit = os.environ.get("PEHP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "pehp"
    home = os.environ.get("HOME")
    return Path(home) / ".cache" / "pehp" if home else None


@lru_cache(maxsize=1)
def code_fingerprint() -> bytes:
    """A digest of pehp's own source and capstone's version: the entries of another
    build of either are never used."""
    import capstone

    from pehotpatch.version import __version__

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{__version__}\0{capstone.__version__}\0".encode())
    pkg = Path(__file__).resolve().parent
    for p in sorted(pkg.rglob("*.py")):
        h.update(str(p.relative_to(pkg)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.digest()


def key(kind: str, *parts: bytes) -> str:
    """The entry name for ``kind`` and the caller's key ``parts``."""
    h = hashlib.blake2b(digest_size=20)
    h.update(kind.encode() + b"\0" + code_fingerprint())
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return f"{kind}-{h.hexdigest()}"


def file_digest(path: str | os.PathLike[str] | None) -> bytes:
    """The SHA-256 of the file at ``path`` (empty for None or an unreadable file)."""
    if path is None:
        return b""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:
        return b""
    return h.digest()


def get(name: str) -> Any | None:
    """The value stored under ``name``, or None (off, absent or unreadable)."""
    d = directory()
    if d is None:
        return None
    p = d / (name + _SUFFIX)
    try:
        raw = p.read_bytes()
        data = raw[_CHECK:]
        if len(raw) < _CHECK or raw[:_CHECK] != hashlib.blake2b(data, digest_size=_CHECK).digest():
            return None  # damaged: a changed byte would otherwise pass for a value
        value = marshal.loads(data)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    try:
        os.utime(p)  # last use, for pruning
    except OSError:
        pass
    return value


def put(name: str, value: Any) -> None:
    """Store ``value`` (plain tuples, lists, dicts, numbers, bytes, str) under ``name``;
    errors are ignored."""
    d = directory()
    if d is None:
        return
    try:
        data = marshal.dumps(value)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(hashlib.blake2b(data, digest_size=_CHECK).digest())
                fh.write(data)
            os.replace(tmp, d / (name + _SUFFIX))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _prune(d)
    except (OSError, ValueError):
        return


def _prune(d: Path) -> None:
    marker = d / _PRUNED
    try:
        if time.time() - marker.stat().st_mtime < PRUNE_EVERY_S:
            return  # listing a large cache after every write would cost more than it saves
    except OSError:
        pass
    try:
        marker.touch()
    except OSError:
        return
    entries = []
    total = 0
    for p in d.glob("*" + _SUFFIX):
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, p))
        total += st.st_size
    if total <= MAX_BYTES:
        return
    for _, size, p in sorted(entries):
        if total <= MAX_BYTES:
            break
        try:
            p.unlink()
            total -= size
        except OSError:
            pass
