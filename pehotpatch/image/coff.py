"""COFF object files (``.obj``), regular and /bigobj: sections, relocations, the symbol
table and the CodeView debug information in ``.debug$S`` / ``.debug$T``.

Object files are where the S_HOTPATCHFUNC records survive when lld-link drops them from
the PDB, so :attr:`CoffObject.hotpatch_functions` is the authoritative list of functions
compiled for secure hot-patching.  In an object the CodeView records carry no addresses:
their segment:offset fields are filled by relocations, which are resolved here to a
section number and an offset inside that section.

This module reads the file header and puts the object together; the section table is
read by :mod:`.coff_sections`, the symbol table by :mod:`.coff_symtab` (shared with PE
images) and the debug information by :mod:`.coff_codeview`.
"""

from __future__ import annotations

import gc
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pehotpatch.errors import FormatError, InputError, read_capped

from .codeview.symbols import CompileSym
from .codeview.types import TypeTable
from .coff_codeview import ObjDataSymbol, ObjProcedure, ObjThunk, read_codeview
from .coff_sections import SECTION_HEADER_SIZE, CoffSection, parse_sections
from .coff_symtab import CoffSymbol, parse_object_symbols, record_size, string_table

IMAGE_FILE_MACHINE_I386 = 0x014C
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_ARM64 = 0xAA64
IMAGE_FILE_MACHINE_ARMNT = 0x01C4
IMAGE_FILE_MACHINE_ARM64EC = 0xA641
IMAGE_FILE_MACHINE_ARM64X = 0xA64E

BIGOBJ_CLASS_ID = bytes.fromhex("c7a1bad1eebaa94baf20faf66aa4dcb8")
MAX_OBJECT_SIZE = 2 * 1024**3
MAX_SECTIONS = 1 << 20
MAX_SYMBOLS = 1 << 26

_FILE_HEADER = struct.Struct("<HHIIIHH")
_BIGOBJ_HEADER = struct.Struct("<HHHHI16sIIIIIII")


@dataclass(slots=True)
class CoffObject:
    path: str
    machine: int
    is_bigobj: bool
    timestamp: int
    characteristics: int
    sections: list[CoffSection]
    symbols: list[CoffSymbol]  # in table order; aux records are not listed
    procedures: list[ObjProcedure]
    globals_: list[ObjDataSymbol]
    hotpatch_functions: set[str]  # names as S_HOTPATCHFUNC records them (decorated for C++)
    compile_flags: CompileSym | None
    inline_sites: dict[str, set[str]]
    thunks: list[ObjThunk]
    types: TypeTable | None  # None without .debug$T or when the types live in a type server
    type_server: str | None = None  # LF_TYPESERVER2 / LF_PRECOMP name when types are external
    objname: str | None = None
    debug_string_tables: list[bytes] = field(default_factory=list)  # 0xF3 subsections
    # procedure names (as in the PDB: undecorated, qualified) of the hot-patch functions
    hotpatch_procedures: set[str] = field(default_factory=set)
    _by_index: dict[int, CoffSymbol] | None = field(default=None, repr=False)

    def symbol(self, index: int) -> CoffSymbol | None:
        """Symbol at table index ``index`` (aux records have none)."""
        if self._by_index is None:
            self._by_index = {s.index: s for s in self.symbols}
        return self._by_index.get(index)

    def section(self, number: int) -> CoffSection | None:
        if 1 <= number <= len(self.sections):
            return self.sections[number - 1]
        return None

    def sections_named(self, name: str) -> list[CoffSection]:
        return [s for s in self.sections if s.name == name]

    @property
    def weak_externals(self) -> list[CoffSymbol]:
        return [s for s in self.symbols if s.is_weak_external]


def load_object(path: str | os.PathLike[str]) -> CoffObject:
    """Read a COFF object file.  Raises InputError / FormatError on bad input."""
    spath = os.fspath(path)
    try:
        data = read_capped(spath, MAX_OBJECT_SIZE, "object file")
    except OSError as e:
        raise InputError(f"cannot read object file: {e.strerror or e}", spath) from None
    was_enabled = gc.isenabled()
    gc.disable()  # many small acyclic objects: the cyclic GC only slows loading down
    try:
        return parse_object(data, spath)
    finally:
        if was_enabled:
            gc.enable()


def load_objects(directory: str | os.PathLike[str]) -> list[CoffObject]:
    """Every ``*.obj`` file directly inside ``directory``, sorted by file name."""
    d = Path(directory)
    try:
        entries = sorted(p for p in d.iterdir() if p.suffix.lower() == ".obj" and p.is_file())
    except OSError as e:
        raise InputError(f"cannot list object directory: {e.strerror or e}", os.fspath(d)) from None
    return [load_object(p) for p in entries]


def parse_object(data: bytes, path: str | None = None) -> CoffObject:
    n = len(data)
    if data[:4] == b"BC\xc0\xde" or data[:4] == b"\xde\xc0\x17\x0b":
        raise InputError("LLVM bitcode (LTO) object, not a COFF object", path)
    if n < _FILE_HEADER.size:
        raise InputError(f"file of {n} bytes is too small for a COFF object", path)
    sig1, sig2 = struct.unpack_from("<HH", data, 0)
    if sig1 == 0 and sig2 == 0xFFFF:
        if n < _BIGOBJ_HEADER.size:
            raise FormatError("bigobj header truncated", path)
        (
            _s1,
            _s2,
            version,
            machine,
            timestamp,
            class_id,
            _sod,
            _flags,
            _mds,
            _mdo,
            nsections,
            symtab,
            nsyms,
        ) = _BIGOBJ_HEADER.unpack_from(data, 0)
        if version < 2 or class_id != BIGOBJ_CLASS_ID:
            raise InputError("import library member or anonymous object, not a COFF object", path)
        big = True
        characteristics = 0
        section_table = _BIGOBJ_HEADER.size
    else:
        machine, nsections, timestamp, symtab, nsyms, opt_size, characteristics = (
            _FILE_HEADER.unpack_from(data, 0)
        )
        big = False
        section_table = _FILE_HEADER.size + opt_size
        if machine not in _KNOWN_MACHINES:
            raise InputError(f"not a COFF object file (machine {machine:#06x} unknown)", path)
    if nsections > MAX_SECTIONS or section_table + nsections * SECTION_HEADER_SIZE > n:
        raise FormatError(f"{nsections} section headers run past the end of the file", path)
    if nsyms > MAX_SYMBOLS or (nsyms and (symtab == 0 or symtab + nsyms * record_size(big) > n)):
        raise FormatError(
            f"symbol table ({nsyms} entries at {symtab:#x}) runs past the end of the file", path
        )
    strtab = string_table(data, symtab, nsyms, big, path, strict=True) if symtab else b""

    sections = parse_sections(data, section_table, nsections, strtab, path)
    symbols = parse_object_symbols(data, symtab, nsyms, big, strtab, sections, path) if nsyms else []
    by_index = {s.index: s for s in symbols}
    info = read_codeview(sections, by_index.get, path)
    return CoffObject(
        path=path or "",
        machine=machine,
        is_bigobj=big,
        timestamp=timestamp,
        characteristics=characteristics,
        sections=sections,
        symbols=symbols,
        procedures=info.procedures,
        globals_=info.globals_,
        hotpatch_functions=info.hotpatch_functions,
        compile_flags=info.compile_flags,
        inline_sites=info.inline_sites,
        thunks=info.thunks,
        types=info.types,
        type_server=info.type_server,
        objname=info.objname,
        debug_string_tables=info.debug_string_tables,
        hotpatch_procedures=info.hotpatch_procedures,
        _by_index=by_index,
    )


_KNOWN_MACHINES = frozenset(
    {
        0x0000,
        IMAGE_FILE_MACHINE_I386,
        IMAGE_FILE_MACHINE_AMD64,
        IMAGE_FILE_MACHINE_ARM64,
        IMAGE_FILE_MACHINE_ARMNT,
        IMAGE_FILE_MACHINE_ARM64EC,
        IMAGE_FILE_MACHINE_ARM64X,
        0x01C0,  # ARM
        0x01C2,  # THUMB
        0x0200,  # IA64
        0x5032,
        0x5064,
        0x5128,  # RISC-V
    }
)
