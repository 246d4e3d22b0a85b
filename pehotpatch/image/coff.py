"""COFF object files (``.obj``), regular and /bigobj: sections, relocations, the symbol
table and the CodeView debug information in ``.debug$S`` / ``.debug$T``.

Object files are where the S_HOTPATCHFUNC records survive when lld-link drops them from
the PDB, so :attr:`CoffObject.hotpatch_functions` is the authoritative list of functions
compiled for secure hot-patching.  In an object the CodeView records carry no addresses:
their segment:offset fields are filled by relocations, which are resolved here to a
section number and an offset inside that section.
"""

from __future__ import annotations

import gc
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pehotpatch.errors import FormatError, InputError, read_capped

from .codeview._binary import cstring
from .codeview.subsections import (
    CV_SIGNATURE_C13,
    DEBUG_S_STRINGTABLE,
    DEBUG_S_SYMBOLS,
    iter_subsections,
)
from .codeview.symbols import (
    DATA_OFFSET_FIELD,
    PROC_OFFSET_FIELD,
    THUNK_OFFSET_FIELD,
    CompileSym,
    SymbolScan,
    scan_symbols,
)
from .codeview.types import (
    LF_PRECOMP,
    LF_TYPESERVER2,
    TypeRecords,
    TypeTable,
)

IMAGE_FILE_MACHINE_I386 = 0x014C
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_ARM64 = 0xAA64
IMAGE_FILE_MACHINE_ARMNT = 0x01C4
IMAGE_FILE_MACHINE_ARM64EC = 0xA641
IMAGE_FILE_MACHINE_ARM64X = 0xA64E

IMAGE_SCN_CNT_CODE = 0x00000020
IMAGE_SCN_CNT_UNINITIALIZED_DATA = 0x00000080
IMAGE_SCN_LNK_COMDAT = 0x00001000
IMAGE_SCN_LNK_NRELOC_OVFL = 0x01000000

IMAGE_SYM_UNDEFINED = 0
IMAGE_SYM_ABSOLUTE = -1
IMAGE_SYM_DEBUG = -2
IMAGE_SYM_CLASS_EXTERNAL = 2
IMAGE_SYM_CLASS_STATIC = 3
IMAGE_SYM_CLASS_FILE = 103
IMAGE_SYM_CLASS_WEAK_EXTERNAL = 105
IMAGE_SYM_DTYPE_FUNCTION = 0x20

IMAGE_COMDAT_SELECT_ASSOCIATIVE = 5

BIGOBJ_CLASS_ID = bytes.fromhex("c7a1bad1eebaa94baf20faf66aa4dcb8")
MAX_OBJECT_SIZE = 2 * 1024**3
MAX_SECTIONS = 1 << 20
MAX_SYMBOLS = 1 << 26

_FILE_HEADER = struct.Struct("<HHIIIHH")
_BIGOBJ_HEADER = struct.Struct("<HHHHI16sIIIIIII")
_SECTION_HEADER = struct.Struct("<8sIIIIIIHHI")
_SYMBOL = struct.Struct("<8sIhHBB")
_SYMBOL_BIG = struct.Struct("<8sIiHBB")
_RELOC = struct.Struct("<IIH")
_SECTION_AUX = struct.Struct("<IHHIHBxH")


@dataclass(frozen=True, slots=True)
class SectionHeader:
    """An IMAGE_SECTION_HEADER (also used for the copy a PDB keeps of the image's headers)."""

    name: str
    virtual_size: int
    virtual_address: int
    size_of_raw_data: int
    pointer_to_raw_data: int
    pointer_to_relocations: int
    pointer_to_linenumbers: int
    number_of_relocations: int
    number_of_linenumbers: int
    characteristics: int


def parse_section_headers(
    data: bytes, start: int, count: int, path: str | None
) -> list[SectionHeader]:
    """``count`` raw 40-byte section headers at ``start`` (names not resolved)."""
    if start < 0 or count < 0 or start + count * _SECTION_HEADER.size > len(data):
        raise FormatError(f"{count} section headers at offset {start:#x} run past the end", path)
    out = []
    for i in range(count):
        raw = _SECTION_HEADER.unpack_from(data, start + i * _SECTION_HEADER.size)
        name = raw[0].rstrip(b"\0").decode("utf-8", "replace")
        out.append(SectionHeader(name, *raw[1:]))
    return out


@dataclass(slots=True)
class CoffRelocation:
    offset: int  # VirtualAddress: offset inside the section
    symbol_index: int
    type: int


@dataclass(slots=True)
class CoffSection:
    number: int  # 1-based, as used by symbols
    name: str
    virtual_size: int
    size_of_raw_data: int
    pointer_to_raw_data: int
    pointer_to_relocations: int
    number_of_relocations: int
    characteristics: int
    data: bytes  # empty for uninitialised data
    relocations: list[CoffRelocation] = field(default_factory=list)
    comdat_selection: int | None = None
    comdat_associated: int | None = None  # section number for IMAGE_COMDAT_SELECT_ASSOCIATIVE
    comdat_symbol: str | None = None  # the COMDAT leader (first symbol defined in the section)
    checksum: int | None = None

    @property
    def is_comdat(self) -> bool:
        return bool(self.characteristics & IMAGE_SCN_LNK_COMDAT)

    @property
    def is_code(self) -> bool:
        return bool(self.characteristics & IMAGE_SCN_CNT_CODE)


@dataclass(slots=True)
class CoffSymbol:
    index: int
    name: str
    value: int
    section_number: int  # 0 undefined, -1 absolute, -2 debug, else 1-based section
    type: int
    storage_class: int
    aux_count: int
    weak_default: int | None = None  # weak external: index of the default symbol
    weak_characteristics: int | None = None

    @property
    def is_external(self) -> bool:
        return self.storage_class == IMAGE_SYM_CLASS_EXTERNAL

    @property
    def is_weak_external(self) -> bool:
        return self.storage_class == IMAGE_SYM_CLASS_WEAK_EXTERNAL

    @property
    def is_function(self) -> bool:
        return (self.type & 0x30) == IMAGE_SYM_DTYPE_FUNCTION

    @property
    def is_defined(self) -> bool:
        return self.section_number > 0


@dataclass(slots=True)
class ObjProcedure:
    name: str
    section: int | None  # 1-based section number the relocation points to
    offset: int  # offset inside that section
    size: int
    type_index: int  # function type (LF_FUNC_ID resolved); 0 if none
    signature: str | None
    is_global: bool
    hotpatch_marked: bool
    symbol: str | None  # the COFF symbol the debug record is relocated against
    function_id: int = 0  # the LF_FUNC_ID / LF_MFUNC_ID of an _ID record (S_HOTPATCHFUNC uses it)


@dataclass(slots=True)
class ObjDataSymbol:
    name: str
    section: int | None
    offset: int
    type_index: int
    type_name: str | None
    size: int | None
    is_global: bool
    contains_pointers: bool | None
    is_const: bool | None
    symbol: str | None
    is_thread_local: bool = False
    procedure: str | None = None


@dataclass(slots=True)
class ObjThunk:
    name: str
    section: int | None
    offset: int
    size: int
    ordinal: int


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
    if nsections > MAX_SECTIONS or section_table + nsections * _SECTION_HEADER.size > n:
        raise FormatError(f"{nsections} section headers run past the end of the file", path)
    sym_size = _SYMBOL_BIG.size if big else _SYMBOL.size
    if nsyms > MAX_SYMBOLS or (nsyms and (symtab == 0 or symtab + nsyms * sym_size > n)):
        raise FormatError(
            f"symbol table ({nsyms} entries at {symtab:#x}) runs past the end of the file", path
        )

    # string table: right after the symbol table, u32 size (including itself)
    strtab = b""
    if symtab:
        st = symtab + nsyms * sym_size
        if st + 4 <= n:
            st_size = struct.unpack_from("<I", data, st)[0]
            if st_size < 4 or st + st_size > n:
                if st_size != 0:
                    raise FormatError(
                        f"string table size {st_size} runs past the end of the file", path
                    )
            else:
                strtab = data[st : st + st_size]

    sections = _parse_sections(data, section_table, nsections, strtab, path)
    symbols = _parse_symbols(data, symtab, nsyms, big, strtab, sections, path) if nsyms else []
    obj = CoffObject(
        path=path or "",
        machine=machine,
        is_bigobj=big,
        timestamp=timestamp,
        characteristics=characteristics,
        sections=sections,
        symbols=symbols,
        procedures=[],
        globals_=[],
        hotpatch_functions=set(),
        compile_flags=None,
        inline_sites={},
        thunks=[],
        types=None,
    )
    _read_codeview(obj, path)
    return obj


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

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _section_name(raw: bytes, strtab: bytes, path: str | None) -> str:
    name = raw.rstrip(b"\0")
    if name[:1] == b"/" and len(name) > 1:
        if name[:2] == b"//":
            off = 0
            for ch in name[2:].decode("ascii", "replace"):
                v = _B64.find(ch)
                if v < 0:
                    raise FormatError(f"bad base-64 section name {name!r}", path)
                off = off * 64 + v
        else:
            digits = name[1:]
            if not digits.isdigit():
                raise FormatError(f"bad long section name {name!r}", path)
            off = int(digits)
        if off < 4 or off >= len(strtab):
            raise FormatError(f"section name offset {off} outside the string table", path)
        return cstring(strtab, off, len(strtab), "section name", path)[0]
    return name.decode("utf-8", "replace")


def _parse_sections(
    data: bytes, table: int, count: int, strtab: bytes, path: str | None
) -> list[CoffSection]:
    n = len(data)
    out: list[CoffSection] = []
    # Raw data and relocations of different sections do not share bytes; totals past the
    # file's size mean overlapping ranges, which would be copied once per section.
    raw_total = reloc_total = 0
    for i in range(count):
        (raw_name, vsize, _va, raw_size, raw_ptr, reloc_ptr, _ln_ptr, nrelocs, _nln, chars) = (
            _SECTION_HEADER.unpack_from(data, table + i * _SECTION_HEADER.size)
        )
        name = _section_name(raw_name, strtab, path)
        if chars & IMAGE_SCN_CNT_UNINITIALIZED_DATA or raw_size == 0:
            body = b""
        else:
            if raw_ptr + raw_size > n:
                raise FormatError(
                    f"section {i + 1} ({name}): {raw_size} bytes at {raw_ptr:#x} run past the end of the file",
                    path,
                )
            raw_total += raw_size
            if raw_total > n:
                raise FormatError(
                    f"section {i + 1} ({name}): section raw data overlaps (totals {raw_total} bytes "
                    f"in a file of {n})",
                    path,
                )
            body = data[raw_ptr : raw_ptr + raw_size]
        relocs: list[CoffRelocation] = []
        if nrelocs:
            start = reloc_ptr
            if chars & IMAGE_SCN_LNK_NRELOC_OVFL and nrelocs == 0xFFFF:
                if start + _RELOC.size > n:
                    raise FormatError(
                        f"section {i + 1} ({name}): relocations run past the end", path
                    )
                nrelocs = _RELOC.unpack_from(data, start)[0]
                if nrelocs == 0:
                    raise FormatError(
                        f"section {i + 1} ({name}): bad extended relocation count", path
                    )
                start += _RELOC.size
                nrelocs -= 1
            if start + nrelocs * _RELOC.size > n:
                raise FormatError(
                    f"section {i + 1} ({name}): {nrelocs} relocations at {start:#x} run past the end",
                    path,
                )
            reloc_total += nrelocs * _RELOC.size
            if reloc_total > n:
                raise FormatError(
                    f"section {i + 1} ({name}): relocation tables overlap (totals {reloc_total} "
                    f"bytes in a file of {n})",
                    path,
                )
            relocs = [
                CoffRelocation(*r)
                for r in _RELOC.iter_unpack(data[start : start + nrelocs * _RELOC.size])
            ]
        out.append(
            CoffSection(
                i + 1, name, vsize, raw_size, raw_ptr, reloc_ptr, nrelocs, chars, body, relocs
            )
        )
    return out


def _parse_symbols(
    data: bytes,
    table: int,
    count: int,
    big: bool,
    strtab: bytes,
    sections: list[CoffSection],
    path: str | None,
) -> list[CoffSymbol]:
    rec = _SYMBOL_BIG if big else _SYMBOL
    size = rec.size
    out: list[CoffSymbol] = []
    i = 0
    pending_comdat: dict[int, CoffSection] = {}
    nsec = len(sections)
    while i < count:
        pos = table + i * size
        raw_name, value, secnum, typ, sclass, naux = rec.unpack_from(data, pos)
        if i + naux >= count:
            raise FormatError(f"symbol {i}: {naux} aux records run past the symbol table", path)
        if raw_name[:4] == b"\0\0\0\0":
            off = struct.unpack_from("<I", raw_name, 4)[0]
            if off < 4 or off >= len(strtab):
                raise FormatError(f"symbol {i}: name offset {off} outside the string table", path)
            name = cstring(strtab, off, len(strtab), "symbol name", path)[0]
        else:
            name = raw_name.rstrip(b"\0").decode("utf-8", "replace")
        weak_default = weak_chars = None
        if naux:
            aux = pos + size
            if sclass == IMAGE_SYM_CLASS_WEAK_EXTERNAL or (
                sclass == IMAGE_SYM_CLASS_EXTERNAL and secnum == 0 and value == 0
            ):
                weak_default, weak_chars = struct.unpack_from("<II", data, aux)
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
                length, _nrel, _nln, checksum, number, selection, number_hi = (
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
        i += 1 + naux
    return out


def _reloc_map(section: CoffSection) -> dict[int, int]:
    return {r.offset: r.symbol_index for r in section.relocations}


def _read_codeview(obj: CoffObject, path: str | None) -> None:
    # types first: symbols need them for signatures and data facts
    for sec in obj.sections:
        if sec.name == ".debug$T" and sec.data:
            data = sec.data
            if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != CV_SIGNATURE_C13:
                raise FormatError(
                    f"section {sec.number} (.debug$T): CodeView signature is not 4", path
                )
            records = TypeRecords(data, 4, len(data), path=path)
            if len(records):
                first = records.kind(records.first_index)
                if first in (LF_TYPESERVER2, LF_PRECOMP):
                    obj.type_server = _type_server_name(data, records, first, path)
                    break
            obj.types = TypeTable(records, None, path)
            break  # one .debug$T per object

    types = obj.types
    syms = obj.symbol
    hotpatch: set[str] = set()
    hotpatch_ids: set[int] = set()
    pending: list[tuple[SymbolScan, dict[int, int]]] = []
    for sec in obj.sections:
        if sec.name != ".debug$S" or not sec.data:
            continue
        data = sec.data
        if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != CV_SIGNATURE_C13:
            raise FormatError(f"section {sec.number} (.debug$S): CodeView signature is not 4", path)
        relocs: dict[int, int] | None = None
        for kind, start, end in iter_subsections(data, 4, len(data), path):
            kind &= 0x7FFFFFFF
            if kind == DEBUG_S_SYMBOLS:
                scan = scan_symbols(data, start, end, path)
                if relocs is None:
                    relocs = _reloc_map(sec)
                pending.append((scan, relocs))
                for h in scan.hotpatch_functions:
                    hotpatch.add(h.name)
                    hotpatch_ids.add(h.function_id)
                if scan.compile is not None and obj.compile_flags is None:
                    obj.compile_flags = scan.compile
                if scan.objname is not None and obj.objname is None:
                    obj.objname = scan.objname.name
            elif kind == DEBUG_S_STRINGTABLE:
                obj.debug_string_tables.append(data[start:end])
    obj.hotpatch_functions = hotpatch

    def place(
        relocs: dict[int, int], field_at: int, stored: int
    ) -> tuple[int | None, int, str | None]:
        si = relocs.get(field_at)
        if si is None:
            return None, stored, None
        s = syms(si)
        if s is None:
            raise FormatError(f"debug relocation refers to symbol {si}, which does not exist", path)
        if s.section_number > 0:
            return s.section_number, (s.value + stored) & 0xFFFFFFFF, s.name
        return None, stored, s.name

    for scan, relocs in pending:
        for p in scan.procedures:
            sec_no, off, sym = place(relocs, p.record_offset + PROC_OFFSET_FIELD, p.offset)
            ftype, sig = 0, None
            if types is not None:
                ftype, sig = types.procedure_signature(p.type_index, p.is_id, p.name)
            # S_HOTPATCHFUNC names the function by its linker name and its LF_FUNC_ID,
            # which is the type field of the matching S_GPROC32_ID.
            marked = (
                p.name in hotpatch
                or (sym is not None and sym in hotpatch)
                or (p.is_id and p.type_index in hotpatch_ids)
            )
            if marked:
                obj.hotpatch_procedures.add(p.name)
            obj.procedures.append(
                ObjProcedure(
                    p.name,
                    sec_no,
                    off,
                    p.length,
                    ftype,
                    sig,
                    p.is_global,
                    marked,
                    sym,
                    p.type_index if p.is_id else 0,
                )
            )
        for d in scan.data:
            sec_no, off, sym = place(relocs, d.record_offset + DATA_OFFSET_FIELD, d.offset)
            ti = d.type_index
            tname: str | None = None
            tsize: int | None = None
            has_ptr: bool | None = None
            const: bool | None = None
            if types is not None:
                tname, tsize = types.type_name(ti), types.type_size(ti)
                has_ptr, const = types.contains_pointers(ti), types.is_const(ti)
            obj.globals_.append(
                ObjDataSymbol(
                    d.name,
                    sec_no,
                    off,
                    ti,
                    tname,
                    tsize,
                    d.is_global,
                    has_ptr,
                    const,
                    sym,
                    d.is_thread_local,
                    d.procedure,
                )
            )
        for t in scan.thunks:
            sec_no, off, _ = place(relocs, t.record_offset + THUNK_OFFSET_FIELD, t.offset)
            obj.thunks.append(ObjThunk(t.name, sec_no, off, t.length, t.ordinal))
        for site in scan.inline_sites:
            if site.procedure is None:
                continue
            name = (
                types.id_name(site.inlinee) if types is not None else None
            ) or f"<id {site.inlinee:#x}>"
            obj.inline_sites.setdefault(site.procedure, set()).add(name)


def _type_server_name(data: bytes, records: TypeRecords, kind: int, path: str | None) -> str:
    loc = records.locate(records.first_index)
    assert loc is not None
    _, body, end = loc
    # LF_TYPESERVER2: GUID[16], age u32, name; LF_PRECOMP: start u32, count u32, signature u32, name
    skip = 20 if kind == LF_TYPESERVER2 else 12
    if body + skip > end:
        raise FormatError("type server record too short", path)
    nul = data.find(b"\0", body + skip, end)
    return data[body + skip : nul if nul >= 0 else end].decode("utf-8", "replace")
