"""The CodeView debug information of a COFF object (``.debug$S`` / ``.debug$T``).

In an object the CodeView records carry no addresses: their segment:offset fields are
filled by relocations, which are resolved here to a section number and an offset inside
that section.  S_HOTPATCHFUNC records name the functions compiled for secure
hot-patching; they are matched to procedures by linker name and by LF_FUNC_ID.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from .codeview.leaves import LF_PRECOMP, LF_TYPESERVER2
from .codeview.stream import TypeRecords
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
from .codeview.types import TypeTable
from .coff_sections import CoffSection
from .coff_symtab import CoffSymbol


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
class ObjDebugInfo:
    """What an object's CodeView sections say (see :class:`~.coff.CoffObject`)."""

    procedures: list[ObjProcedure] = field(default_factory=list)
    globals_: list[ObjDataSymbol] = field(default_factory=list)
    hotpatch_functions: set[str] = field(default_factory=set)
    hotpatch_procedures: set[str] = field(default_factory=set)
    compile_flags: CompileSym | None = None
    inline_sites: dict[str, set[str]] = field(default_factory=dict)
    thunks: list[ObjThunk] = field(default_factory=list)
    types: TypeTable | None = None
    type_server: str | None = None
    objname: str | None = None
    debug_string_tables: list[bytes] = field(default_factory=list)


def _reloc_map(section: CoffSection) -> dict[int, int]:
    return {r.offset: r.symbol_index for r in section.relocations}


def read_codeview(sections: list[CoffSection], symbol: Callable[[int], CoffSymbol | None],
                  path: str | None) -> ObjDebugInfo:
    """An object's procedures, globals, thunks, inline sites, hot-patch functions and
    types, from its ``.debug$T`` and ``.debug$S`` sections; ``symbol`` gives the symbol
    at a table index (debug relocations name symbols by index)."""
    obj = ObjDebugInfo()
    # types first: symbols need them for signatures and data facts
    for sec in sections:
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
    syms = symbol
    hotpatch: set[str] = set()
    hotpatch_ids: set[int] = set()
    pending: list[tuple[SymbolScan, dict[int, int]]] = []
    for sec in sections:
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
    return obj


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
