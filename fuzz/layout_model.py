"""The layout model: named integer fields in groups, byte regions, truncation points and
fixed-size tables of one seed file, which structure-aware mutators work from.

A :class:`Layout` lists named integer fields (file offset, width, values worth trying)
in groups ("pe.loadcfg", "pdb.tpi.records", ...), byte regions (section data, stream
blocks), interesting truncation points and fixed-size tables.  Structures that pehp
declares (:mod:`pehotpatch.structs`) are added from their declarations
(:meth:`Layout.add_decl`); the builders are :mod:`.layout_pe`, :mod:`.layout_pdb` and
:mod:`.layout_coff`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pehotpatch.structs import Struct

MAX_FIELDS_PER_GROUP = 4000


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    off: int
    size: int  # 1, 2, 4 or 8 bytes, little-endian
    hints: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Table:
    """``count`` entries of ``stride`` bytes at ``off`` (section headers, descriptors...)."""

    name: str
    off: int
    stride: int
    count: int


@dataclass(frozen=True, slots=True)
class TypeRef:
    """A field of type record ``owner`` holding the index of type ``target``."""

    field: Field
    owner: int
    target: int


@dataclass
class Layout:
    kind: str  # "pe", "pdb", "coff" or "raw"
    size: int
    groups: dict[str, list[Field]] = field(default_factory=dict)
    regions: list[tuple[str, int, int]] = field(default_factory=list)  # (name, offset, length)
    cuts: list[int] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    terminators: list[int] = field(default_factory=list)  # offsets of string-ending NULs
    type_refs: list[TypeRef] = field(default_factory=list)
    hints: tuple[int, ...] = ()  # values worth trying in any field of this file

    def add(self, group: str, name: str, off: int, size: int, hints: tuple[int, ...] = ()) -> None:
        if off < 0 or off + size > self.size:
            return
        fields = self.groups.setdefault(group, [])
        if len(fields) < MAX_FIELDS_PER_GROUP:
            fields.append(Field(name, off, size, hints))

    def add_struct(self, group: str, prefix: str, base: int, spec: list[tuple[str, int, int]],
                   hints: dict[str, tuple[int, ...]] | None = None) -> None:
        """Fields ``(name, offset, size)`` of one structure at file offset ``base``."""
        for name, off, size in spec:
            self.add(group, f"{prefix}.{name}", base + off, size, (hints or {}).get(name, ()))

    def add_decl(self, group: str, prefix: str, base: int, decl: Struct, size: int | None = None,
                 hints: dict[str, tuple[int, ...]] | None = None) -> None:
        """Every field of the declared structure ``decl`` at file offset ``base`` that lies
        within its first ``size`` bytes (default: all of it)."""
        for f in decl.fields_within(decl.size if size is None else size):
            name = f"{prefix}.{f.name}" if prefix else f.name
            self.add(group, name, base + f.offset, f.width, (hints or {}).get(f.name, ()))

    def finish(self) -> Layout:
        self.groups = {k: v for k, v in self.groups.items() if v}
        self.cuts = sorted({c for c in self.cuts if 0 <= c < self.size})
        self.regions = [r for r in self.regions if r[2] > 0 and r[1] + r[2] <= self.size]
        return self


def u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]

