"""The COFF symbol table and its string table, as found in object files and (rarely, from
MinGW-style linkers) in PE images.

One reader serves both: :func:`string_table` and :func:`iter_symbols` walk the 18-byte
(20-byte for /bigobj) records, skip auxiliary records and resolve long names.  In
``strict`` mode (object files, which pehp relies on) a name outside the string table or
auxiliary records running past the table are errors; otherwise (a PE image's table,
which the loader ignores) such a name reads as empty and the walk just stops.
:func:`parse_object_symbols` adds what objects keep in auxiliary records (weak
externals, COMDAT sections).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pehotpatch.errors import FormatError

if TYPE_CHECKING:  # only a type here: PE images read their symbols without the object reader
    from .coff_sections import CoffSection

IMAGE_SYM_UNDEFINED = 0
IMAGE_SYM_ABSOLUTE = -1
IMAGE_SYM_DEBUG = -2
IMAGE_SYM_CLASS_EXTERNAL = 2
IMAGE_SYM_CLASS_STATIC = 3
IMAGE_SYM_CLASS_FILE = 103
IMAGE_SYM_CLASS_WEAK_EXTERNAL = 105
IMAGE_SYM_DTYPE_FUNCTION = 0x20

IMAGE_COMDAT_SELECT_ASSOCIATIVE = 5

SYMBOL = struct.Struct("<8sIhHBB")
SYMBOL_BIG = struct.Struct("<8sIiHBB")
_U32 = struct.Struct("<I")
_WEAK_AUX = struct.Struct("<II")
_SECTION_AUX = struct.Struct("<IHHIHBxH")

# (table index, file offset, name, value, section number, type, storage class, aux count)
SymbolRecord = tuple[int, int, str, int, int, int, int, int]


@dataclass(slots=True)
class CoffSymbol:
    """One symbol table entry (auxiliary records are not symbols of their own)."""

    index: int
    name: str
    value: int
    section_number: int  # 0 undefined, -1 absolute, -2 debug, else 1-based section
    type: int
    storage_class: int
    aux_count: int
    weak_default: int | None = None  # weak external: index of the default symbol
    weak_characteristics: int | None = None
    rva: int | None = None  # in a PE image: value + the section's RVA, for symbols in a section

    @property
    def is_external(self) -> bool:
        return self.storage_class == IMAGE_SYM_CLASS_EXTERNAL

    @property
    def is_weak_external(self) -> bool:
        return self.storage_class == IMAGE_SYM_CLASS_WEAK_EXTERNAL

    @property
    def is_function(self) -> bool:
        """The first derived type is "function" (winnt.h ``ISFCN``)."""
        return (self.type & 0x30) == IMAGE_SYM_DTYPE_FUNCTION

def record_size(big: bool) -> int:
    return SYMBOL_BIG.size if big else SYMBOL.size


def string_table(data: bytes, table: int, count: int, big: bool, path: str | None, *,
                 strict: bool) -> bytes:
    """The string table after ``count`` symbols at ``table`` (its u32 size counts itself);
    empty when there is none.  In strict mode a size running past the file is an error."""
    st = table + count * record_size(big)
    if st + 4 > len(data):
        return b""
    size = _U32.unpack_from(data, st)[0]
    if 4 <= size <= len(data) - st:
        return data[st : st + size]
    if strict and size != 0:
        raise FormatError(f"string table size {size} runs past the end of the file", path)
    return b""


def iter_symbols(data: bytes, table: int, count: int, big: bool, strtab: bytes,
                 path: str | None, *, strict: bool) -> Iterator[SymbolRecord]:
    """Every symbol of the ``count`` records at ``table`` (the caller has checked that they
    lie inside ``data``), skipping auxiliary records."""
    rec = SYMBOL_BIG if big else SYMBOL
    size = rec.size
    unpack = rec.unpack_from
    nstr = len(strtab)
    i = 0
    while i < count:
        pos = table + i * size
        raw_name, value, secnum, typ, sclass, naux = unpack(data, pos)
        if strict and i + naux >= count:
            raise FormatError(f"symbol {i}: {naux} aux records run past the symbol table", path)
        if raw_name[:4] == b"\0\0\0\0":
            off = _U32.unpack_from(raw_name, 4)[0]
            if strict:
                if off < 4 or off >= nstr:
                    raise FormatError(f"symbol {i}: name offset {off} outside the string table", path)
                nul = strtab.find(b"\0", off, nstr)
                if nul < 0:
                    raise FormatError(f"symbol name: name at offset {off:#x} is not NUL-terminated", path)
                name = strtab[off:nul].decode("utf-8", "replace")
            else:
                end = strtab.find(b"\0", off) if off < nstr else -1
                name = strtab[off:end].decode("utf-8", "replace") if end >= 0 else ""
        else:
            name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        yield i, pos, name, value, secnum, typ, sclass, naux
        i += 1 + naux


def parse_object_symbols(data: bytes, table: int, count: int, big: bool, strtab: bytes,
                         sections: list[CoffSection], path: str | None) -> list[CoffSymbol]:
    """An object file's symbols, strictly read.  Their auxiliary records give the weak
    externals' defaults and the COMDAT sections' selection, checksum, associated section
    and leader (the next symbol defined in the section), which are set on ``sections``."""
    size = record_size(big)
    out: list[CoffSymbol] = []
    pending_comdat: dict[int, CoffSection] = {}
    nsec = len(sections)
    for i, pos, name, value, secnum, typ, sclass, naux in iter_symbols(
        data, table, count, big, strtab, path, strict=True
    ):
        weak_default = weak_chars = None
        if naux:
            aux = pos + size
            if sclass == IMAGE_SYM_CLASS_WEAK_EXTERNAL or (
                sclass == IMAGE_SYM_CLASS_EXTERNAL and secnum == 0 and value == 0
            ):
                weak_default, weak_chars = _WEAK_AUX.unpack_from(data, aux)
                if sclass != IMAGE_SYM_CLASS_WEAK_EXTERNAL:
                    weak_default = weak_chars = None
                elif weak_default >= count:
                    raise FormatError(
                        f"weak external {name!r}: default symbol {weak_default} does not exist",
                        path,
                    )
            elif (
                sclass == IMAGE_SYM_CLASS_STATIC and value == 0 and typ == 0 and 0 < secnum <= nsec
            ):
                _length, _nrel, _nln, checksum, number, selection, number_hi = (
                    _SECTION_AUX.unpack_from(data, aux)
                )
                sec = sections[secnum - 1]
                if sec.is_comdat and sec.comdat_selection is None:
                    sec.comdat_selection = selection
                    sec.checksum = checksum
                    if selection == IMAGE_COMDAT_SELECT_ASSOCIATIVE:
                        sec.comdat_associated = number | ((number_hi << 16) if big else 0)
                    else:  # the next symbol defined in the section is its COMDAT leader
                        pending_comdat[secnum] = sec
        elif secnum in pending_comdat and sclass != IMAGE_SYM_CLASS_FILE:
            pending_comdat.pop(secnum).comdat_symbol = name
        if naux and secnum in pending_comdat and sclass != IMAGE_SYM_CLASS_STATIC:
            pending_comdat.pop(secnum).comdat_symbol = name
        out.append(CoffSymbol(i, name, value, secnum, typ, sclass, naux, weak_default, weak_chars))
    return out
