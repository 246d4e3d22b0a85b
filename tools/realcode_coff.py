"""A small reader of x64 COFF objects for the real-code ground truth.

Reads what the ground truth needs and nothing more: section headers and raw data,
relocations, the symbol table (with the section-definition auxiliary records that
tie associative COMDAT sections, such as jump tables, to their function) and the
``.drectve`` text.  Kept apart from pehotpatch on purpose: the ground truth must not
share code with the differ it measures.

Regular COFF only (clang-cl writes /bigobj only past 65279 sections).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

AMD64 = 0x8664
SCN_CNT_CODE = 0x20
SCN_CNT_UNINITIALIZED = 0x80
SCN_LNK_COMDAT = 0x1000
SCN_MEM_WRITE = 0x80000000
CLASS_EXTERNAL = 2
CLASS_STATIC = 3
COMDAT_ASSOCIATIVE = 5

# IMAGE_REL_AMD64_*: how many bytes of the section each relocation type covers
RELOC_SIZE = {0x1: 8, 0x2: 4, 0x3: 4, 0x4: 4, 0x5: 4, 0x6: 4, 0x7: 4, 0x8: 4, 0x9: 4,
              0xA: 2, 0xB: 4}


@dataclass
class Reloc:
    offset: int
    symbol: int  # symbol table index
    type: int

    @property
    def size(self) -> int:
        return RELOC_SIZE.get(self.type, 4)


@dataclass
class Section:
    number: int  # 1-based, as symbols refer to it
    name: str
    flags: int
    size: int
    data: bytes  # empty for uninitialised data
    relocs: list[Reloc]
    selection: int = 0  # COMDAT selection (from the section symbol's aux record)
    associated: int = 0  # the section an associative COMDAT belongs to

    @property
    def is_code(self) -> bool:
        return bool(self.flags & SCN_CNT_CODE)

    @property
    def writable(self) -> bool:
        return bool(self.flags & SCN_MEM_WRITE)


@dataclass
class Symbol:
    index: int
    name: str
    value: int
    section: int  # 0 undefined, <0 absolute/debug
    type: int
    storage: int

    @property
    def is_function(self) -> bool:
        return (self.type >> 4) == 2  # DTYPE_FUNCTION

    @property
    def is_section_symbol(self) -> bool:
        return self.storage == CLASS_STATIC and self.value == 0 and self.name.startswith(".")


@dataclass
class CoffFile:
    path: Path
    sections: dict[int, Section]
    symbols: dict[int, Symbol]
    by_section: dict[int, list[Symbol]] = field(default_factory=dict)  # named symbols, by value

    def directives(self) -> str:
        return " ".join(s.data.decode("latin-1") for s in self.sections.values() if s.name == ".drectve")


def _name(raw: bytes, strtab: bytes) -> str:
    if raw[:4] == b"\0\0\0\0":
        off = struct.unpack_from("<I", raw, 4)[0]
        end = strtab.find(b"\0", off)
        return strtab[off:end].decode("latin-1")
    return raw.rstrip(b"\0").decode("latin-1")


def read_coff(path: Path) -> CoffFile:
    """Sections, relocations and symbols of one x64 object file."""
    blob = path.read_bytes()
    if len(blob) < 20:
        raise ValueError(f"{path}: not a COFF object")
    machine, nsec, _, symoff, nsym, optsize, _ = struct.unpack_from("<HHIIIHH", blob, 0)
    if machine != AMD64:
        raise ValueError(f"{path}: machine {machine:#x}, expected x64 COFF")
    strtab_at = symoff + 18 * nsym
    strtab = blob[strtab_at:]
    sections: dict[int, Section] = {}
    for i in range(nsec):
        h = 20 + optsize + 40 * i
        raw_name = blob[h:h + 8]
        if raw_name.startswith(b"/"):
            off = int(raw_name[1:].rstrip(b"\0").decode())
            name = strtab[off:strtab.find(b"\0", off)].decode("latin-1")
        else:
            name = raw_name.rstrip(b"\0").decode("latin-1")
        _, _, size, dptr, rptr, _, nrel, _, flags = struct.unpack_from("<IIIIIIHHI", blob, h + 8)
        data = b"" if flags & SCN_CNT_UNINITIALIZED else blob[dptr:dptr + size]
        relocs = [Reloc(*struct.unpack_from("<IIH", blob, rptr + 10 * k)) for k in range(nrel)]
        sections[i + 1] = Section(i + 1, name, flags, size, data, relocs)
    symbols: dict[int, Symbol] = {}
    i = 0
    while i < nsym:
        at = symoff + 18 * i
        raw = blob[at:at + 8]
        value, secnum, typ, storage, naux = struct.unpack_from("<IhHBB", blob, at + 8)
        sym = Symbol(i, _name(raw, strtab), value, secnum, typ, storage)
        symbols[i] = sym
        if sym.is_section_symbol and naux and secnum in sections:
            aux = at + 18
            _, _, _, _, number, selection = struct.unpack_from("<IHHIHB", blob, aux)
            sec = sections[secnum]
            if sec.flags & SCN_LNK_COMDAT:
                sec.selection = selection
                sec.associated = number if selection == COMDAT_ASSOCIATIVE else 0
        i += 1 + naux
    by_section: dict[int, list[Symbol]] = {}
    for s in symbols.values():
        if s.section > 0 and not s.is_section_symbol and s.storage in (CLASS_EXTERNAL, CLASS_STATIC):
            by_section.setdefault(s.section, []).append(s)
    for syms in by_section.values():
        syms.sort(key=lambda s: (s.value, s.index))
    return CoffFile(path, sections, symbols, by_section)
