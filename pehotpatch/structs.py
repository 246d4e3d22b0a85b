"""The declaration layer: one description per binary structure.

A :class:`Struct` lists its fields (name, offset, width, meaning, where the meaning comes
from).  The same declaration decodes bytes (:meth:`Struct.decode`), encodes them
(:meth:`Struct.encode`, :meth:`Struct.pack_into`), tells the fuzzer where the fields
are (:meth:`Struct.fields_within`) and feeds the format documentation.  Every field is an
unsigned little-endian integer of 1, 2, 4 or 8 bytes; larger members (a GUID, a hash)
are declared as the bytes they are via :class:`Blob`.

Decoding is strict about bounds and lenient about content: a field that does not fit in
the bytes given is simply absent from the result (versioned structures such as the load
config grow over time, and their own ``Size`` says how much is there).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

_FORMATS: Final = {1: "B", 2: "H", 4: "I", 8: "Q"}

SOURCE_HEADER: Final = "hdr"  # the Windows SDK headers (winnt.h)
SOURCE_LOADER: Final = "os"  # the Windows loader's observed behaviour
SOURCE_SPEC: Final = "spec"  # the PE/COFF specification
SOURCE_PEHP: Final = "pehp"  # nothing public: pehp's own choice, documented in docs/FORMAT.md


@dataclass(frozen=True, slots=True)
class Field:
    """One unsigned little-endian integer field."""

    name: str
    offset: int
    width: int
    meaning: str = ""
    source: str = SOURCE_HEADER

    @property
    def end(self) -> int:
        return self.offset + self.width

    @property
    def format(self) -> str:
        return "<" + _FORMATS[self.width]

    @property
    def max(self) -> int:
        return (1 << (8 * self.width)) - 1


@dataclass(frozen=True, slots=True)
class Blob:
    """A run of bytes inside a structure (a GUID, a hash, a name)."""

    name: str
    offset: int
    width: int
    meaning: str = ""
    source: str = SOURCE_HEADER

    @property
    def end(self) -> int:
        return self.offset + self.width


class StructError(ValueError):
    """An encode request that the declaration cannot hold (unknown field, value too wide)."""


@dataclass(frozen=True)
class Struct:
    """A fixed-layout structure of ``size`` bytes made of :class:`Field` and :class:`Blob`."""

    name: str
    size: int
    fields: tuple[Field, ...]
    blobs: tuple[Blob, ...] = ()
    meaning: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        members: list[Field | Blob] = [*self.fields, *self.blobs]
        for f in members:
            if f.name in seen:
                raise StructError(f"{self.name}: field {f.name} declared twice")
            seen.add(f.name)
            if f.end > self.size:
                raise StructError(f"{self.name}.{f.name} ends at {f.end:#x}, past the size {self.size:#x}")
        for f in self.fields:
            if f.width not in _FORMATS:
                raise StructError(f"{self.name}.{f.name}: width {f.width} is not 1, 2, 4 or 8")

    # ---- lookup ----------------------------------------------------------------------
    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    def offset(self, name: str) -> int:
        return self.field(name).offset

    def fields_within(self, size: int) -> Iterator[Field]:
        """The fields wholly inside the first ``size`` bytes, in offset order."""
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.end <= size:
                yield f

    # ---- decode ----------------------------------------------------------------------
    def decode(self, data: bytes | bytearray | memoryview, offset: int = 0, *,
               limit: int | None = None) -> dict[str, int]:
        """Every field that lies inside ``data[offset:offset + limit]`` (``limit``
        defaults to the structure's size), by name."""
        avail = max(0, len(data) - offset)
        lim = self.size if limit is None else min(limit, self.size)
        lim = min(lim, avail)
        out: dict[str, int] = {}
        for f in self.fields:
            if f.end <= lim:
                out[f.name] = struct.unpack_from(f.format, data, offset + f.offset)[0]
        return out

    def read(self, data: bytes | bytearray | memoryview, name: str, offset: int = 0) -> int | None:
        """One field at ``offset``, or None when it lies outside ``data``."""
        f = self.field(name)
        if offset < 0 or offset + f.end > len(data):
            return None
        return int(struct.unpack_from(f.format, data, offset + f.offset)[0])

    def blob(self, data: bytes | bytearray | memoryview, name: str, offset: int = 0) -> bytes:
        for b in self.blobs:
            if b.name == name:
                return bytes(data[offset + b.offset: offset + b.end])
        raise KeyError(f"{self.name} has no blob {name}")

    # ---- encode ----------------------------------------------------------------------
    def encode(self, values: Mapping[str, int], *, size: int | None = None,
               blobs: Mapping[str, bytes] | None = None) -> bytes:
        """The structure's bytes (``size`` bytes, default its full size); fields not
        given are zero.  Unknown names and values that do not fit are refused."""
        n = self.size if size is None else size
        buf = bytearray(n)
        self.pack_into(buf, 0, values, blobs=blobs)
        return bytes(buf)

    def pack_into(self, buf: bytearray, offset: int, values: Mapping[str, int], *,
                  blobs: Mapping[str, bytes] | None = None) -> None:
        """Write the given fields into ``buf`` at ``offset``; other bytes are untouched."""
        by_name = {f.name: f for f in self.fields}
        for name, value in values.items():
            f = by_name.get(name)
            if f is None:
                raise StructError(f"{self.name} has no field {name}")
            if not 0 <= value <= f.max:
                raise StructError(f"{self.name}.{name} = {value:#x} does not fit in {f.width} bytes")
            if offset + f.end > len(buf):
                raise StructError(f"{self.name}.{name} does not fit in the {len(buf) - offset} bytes given")
            struct.pack_into(f.format, buf, offset + f.offset, value)
        for name, raw in (blobs or {}).items():
            b = next((b for b in self.blobs if b.name == name), None)
            if b is None:
                raise StructError(f"{self.name} has no blob {name}")
            if len(raw) != b.width:
                raise StructError(f"{self.name}.{name} takes {b.width} bytes, not {len(raw)}")
            buf[offset + b.offset: offset + b.end] = raw


def declare(name: str, size: int, *members: tuple[str, int, int, str] | tuple[str, int, int, str, str],
            meaning: str = "") -> Struct:
    """A :class:`Struct` from ``(name, offset, width, meaning[, source])`` rows."""
    fields = []
    for row in members:
        fname, off, width, text = row[:4]
        src = row[4] if len(row) > 4 else SOURCE_HEADER  # type: ignore[misc]
        fields.append(Field(fname, off, width, text, src))
    return Struct(name, size, tuple(fields), meaning=meaning)
