"""Reading PDB files in pure Python (LIEF's free build cannot).

:func:`load_pdb` reads the streams pehp needs, each once, and returns a :class:`Pdb`:
identity (GUID, age, machine), modules and their compile flags, procedures with RVAs
and signatures, global data with type facts, publics, thunks, inline sites, the
S_HOTPATCHFUNC names (MSVC's linker keeps them; lld-link drops them, read the object
files with :mod:`pehotpatch.image.coff` then) and a lazy :class:`TypeTable`.

Every malformed structure raises :class:`~pehotpatch.errors.FormatError`.
"""

from __future__ import annotations

import gc
import os
import uuid
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from ..codeview.symbols import GLOBAL_PROC_KINDS, ID_PROC_KINDS, CompileSym, DataSym, SymbolScan
from ..codeview.types import TypeTable
from ..coff_sections import SectionHeader, parse_section_headers
from .dbi import (
    DBG_OMAP_FROM_SRC,
    DBG_SECTION_HDR,
    DBG_SECTION_HDR_ORIG,
    NIL_STREAM,
    PDB_DBI_STREAM,
    DbiStream,
    parse_dbi,
)
from .info import PDB_INFO_STREAM, PdbInfo, parse_info
from .modules import module_symbols
from .msf import Msf
from .omap import Omap
from .publics import PublicSymbol, scan_symbol_records
from .tpi import PDB_IPI_STREAM, PDB_TPI_STREAM, parse_tpi

__all__ = [
    "DataSymbol",
    "Module",
    "Pdb",
    "Procedure",
    "PublicSymbol",
    "Thunk",
    "load_pdb",
]


@dataclass(frozen=True, slots=True)
class Module:
    index: int
    name: str  # module name (for lld and MSVC: the object file path)
    obj_name: str  # the library (or object) it came from
    sym_stream: int | None
    compile: CompileSym | None  # S_COMPILE3 / S_COMPILE2 of the module, if any

    @property
    def hotpatch(self) -> bool:
        """Compiled with /hotpatch (clang -fms-hotpatch)."""
        return bool(self.compile and self.compile.hotpatch)


@dataclass(slots=True)
class Procedure:
    name: str
    rva: int | None
    size: int
    type_index: int  # TPI function type (an _ID record's LF_FUNC_ID is resolved to it); 0 if none
    signature: str | None
    is_global: bool
    module: str
    hotpatch_marked: bool
    segment: int = 0
    offset: int = 0
    module_index: int = -1


@dataclass(slots=True)
class DataSymbol:
    name: str
    rva: int | None
    type_index: int
    type_name: str
    size: int | None
    is_global: bool
    module: str | None  # from the section contributions when the record is in the globals stream
    contains_pointers: bool
    is_const: bool
    segment: int = 0
    offset: int = 0
    is_thread_local: bool = False
    procedure: str | None = None  # enclosing function of a function-scope static


@dataclass(slots=True)
class Thunk:
    name: str
    rva: int | None
    size: int
    ordinal: int
    module: str


@dataclass(slots=True)
class Pdb:
    path: str
    guid: uuid.UUID
    age: int  # from the PDB info stream
    dbi_age: int | None
    signature: int
    machine: int | None  # IMAGE_FILE_MACHINE_* from the DBI header
    info: PdbInfo
    dbi: DbiStream | None
    sections: list[SectionHeader]
    modules: list[Module]
    procedures: list[Procedure]
    globals_: list[DataSymbol]
    publics: list[PublicSymbol]
    hotpatch_functions: set[str]  # names as S_HOTPATCHFUNC records them (decorated for C++)
    inline_sites: dict[str, set[str]]  # procedure name -> names of functions inlined into it
    compile_flags: dict[str, CompileSym]  # module name -> its S_COMPILE3
    thunks: list[Thunk]
    types: TypeTable
    # section headers the symbols' segment:offset refer to (the original ones with an OMAP)
    address_sections: list[SectionHeader] = field(default_factory=list, repr=False)
    omap: Omap | None = field(default=None, repr=False)
    _by_name: dict[str, list[Procedure]] | None = field(default=None, repr=False)

    def rva_of(self, segment: int, offset: int) -> int | None:
        """RVA of a symbol's ``segment:offset``, from the PDB's own section headers
        (and its OMAP when the image was rearranged after linking)."""
        rva = _rva_of(self.address_sections or self.sections, segment, offset)
        return self.omap.map(rva) if self.omap is not None else rva

    def matches(self, guid: uuid.UUID, age: int) -> bool:
        """True when a CodeView (RSDS) record with this GUID and age names this PDB.

        The age may equal the info-stream age or the DBI age (linkers that update a PDB
        in place can bump one of them only).
        """
        return guid == self.guid and (age == self.age or age == self.dbi_age)

    def procedures_named(self, name: str) -> list[Procedure]:
        if self._by_name is None:
            by: dict[str, list[Procedure]] = {}
            for p in self.procedures:
                by.setdefault(p.name, []).append(p)
            self._by_name = by
        return self._by_name.get(name, [])


def _rva_of(sections: list[SectionHeader], segment: int, offset: int) -> int | None:
    if 1 <= segment <= len(sections):
        return sections[segment - 1].virtual_address + offset
    return None


def load_pdb(path: str | os.PathLike[str]) -> Pdb:
    """Read a PDB file.  Raises InputError (unreadable, not a PDB) or FormatError (corrupt)."""
    spath = os.fspath(path)
    msf = Msf.open(spath)
    # Loading creates many small acyclic objects; the cyclic GC only slows that down.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(msf, spath)
    finally:
        if was_enabled:
            gc.enable()


def _load(msf: Msf, path: str) -> Pdb:
    if not msf.has_stream(PDB_INFO_STREAM):
        raise FormatError("PDB has no info stream (stream 1)", path)
    info = parse_info(msf.stream(PDB_INFO_STREAM), path)

    dbi: DbiStream | None = None
    if msf.has_stream(PDB_DBI_STREAM):
        dbi = parse_dbi(msf.stream(PDB_DBI_STREAM), path)

    sections: list[SectionHeader] = []
    if dbi is not None:
        sh = dbi.debug_stream(DBG_SECTION_HDR)
        if sh is not None:
            if sh >= msf.num_streams:
                raise FormatError(f"section header stream {sh} does not exist", path)
            data = msf.stream(sh)
            if len(data) % 40:
                raise FormatError(
                    f"section header stream is {len(data)} bytes, not a multiple of 40", path
                )
            sections = parse_section_headers(data, 0, len(data) // 40, path)

    tpi_records = None
    if msf.has_stream(PDB_TPI_STREAM):
        tpi_records = parse_tpi(msf.stream(PDB_TPI_STREAM), path, "TPI").records
    ipi_records = None
    if msf.has_stream(PDB_IPI_STREAM) and info.has_ipi:
        ipi_records = parse_tpi(msf.stream(PDB_IPI_STREAM), path, "IPI").records
    types = TypeTable(tpi_records, ipi_records, path)
    if ipi_records is None:
        # A PDB without an IPI stream has no id records; do not read ids from the TPI.
        types.ids = _EMPTY_IDS  # type: ignore[assignment]

    # Symbols address the image as linked; with an OMAP (post-link rearranged image)
    # that is the original section layout, mapped to the final one afterwards.
    omap: Omap | None = None
    address_sections = sections
    if dbi is not None:
        omap_stream = dbi.debug_stream(DBG_OMAP_FROM_SRC)
        orig_stream = dbi.debug_stream(DBG_SECTION_HDR_ORIG)
        if omap_stream is not None and orig_stream is not None:
            for s in (omap_stream, orig_stream):
                if s >= msf.num_streams:
                    raise FormatError(f"debug stream {s} does not exist", path)
            omap = Omap(msf.stream(omap_stream), path)
            data = msf.stream(orig_stream)
            if len(data) % 40:
                raise FormatError(
                    f"original section header stream is {len(data)} bytes, not a multiple of 40",
                    path,
                )
            address_sections = parse_section_headers(data, 0, len(data) // 40, path)
    section_vas = [s.virtual_address for s in address_sections]
    nsec = len(section_vas)

    # -- module streams --
    modules: list[Module] = []
    scans: list[tuple[Module, SymbolScan]] = []
    if dbi is not None:
        for mi in dbi.modules:
            scan = module_symbols(msf, mi, path)
            mod = Module(
                mi.index,
                mi.module_name,
                mi.obj_name,
                None if mi.sym_stream == NIL_STREAM else mi.sym_stream,
                scan.compile if scan else None,
            )
            modules.append(mod)
            if scan is not None:
                scans.append((mod, scan))

    # -- symbol record stream (publics and globals) --
    gscan: SymbolScan | None = None
    if dbi is not None and dbi.header.sym_record_stream != NIL_STREAM:
        srs = dbi.header.sym_record_stream
        if srs >= msf.num_streams:
            raise FormatError(f"symbol record stream {srs} does not exist", path)
        gscan = scan_symbol_records(msf.stream(srs), section_vas, path)

    hotpatch: set[str] = set()
    for _, scan in scans:
        hotpatch.update(h.name for h in scan.hotpatch_functions)
    if gscan is not None:
        hotpatch.update(h.name for h in gscan.hotpatch_functions)

    # S_HOTPATCHFUNC holds the linker (decorated) name for C++; a procedure is marked when
    # its own name or a public symbol at its address is in the set.
    marked_rvas: set[int] = set()
    if hotpatch and gscan is not None:
        marked_rvas = {p.rva for p in gscan.publics if p.rva is not None and p.name in hotpatch}

    procedures: list[Procedure] = []
    add_proc = procedures.append
    proc_sig = types.procedure_signature
    for mod, scan in scans:
        mname = mod.name
        midx = mod.index
        for p in scan.procedures:
            name = p.name
            seg = p.segment
            ftype, sig = proc_sig(p.type_index, p.kind in ID_PROC_KINDS, name)
            rva = section_vas[seg - 1] + p.offset if 0 < seg <= nsec else None
            add_proc(
                Procedure(
                    name,
                    rva,
                    p.length,
                    ftype,
                    sig,
                    p.kind in GLOBAL_PROC_KINDS,
                    mname,
                    bool(hotpatch) and (name in hotpatch or rva in marked_rvas),
                    seg,
                    p.offset,
                    midx,
                )
            )

    globals_: list[DataSymbol] = []
    seen: set[tuple[str, int, int]] = set()
    facts: dict[int, tuple[str, int | None, bool, bool]] = {}

    def add_data(d: DataSym, module: str | None) -> None:
        key = (d.name, d.segment, d.offset)
        if key in seen:
            return
        seen.add(key)
        ti = d.type_index
        f = facts.get(ti)
        if f is None:
            f = (
                types.type_name(ti),
                types.type_size(ti),
                types.contains_pointers(ti),
                types.is_const(ti),
            )
            facts[ti] = f
        seg = d.segment
        globals_.append(
            DataSymbol(
                d.name,
                section_vas[seg - 1] + d.offset if 0 < seg <= nsec else None,
                ti,
                f[0],
                f[1],
                d.is_global,
                module,
                f[2],
                f[3],
                seg,
                d.offset,
                d.is_thread_local,
                d.procedure,
            )
        )

    for mod, scan in scans:
        for d in scan.data:
            add_data(d, mod.name)
    publics: list[PublicSymbol] = []
    if gscan is not None:
        for d in gscan.data:
            owner = dbi.module_of(d.segment, d.offset) if dbi is not None else None
            module = modules[owner].name if owner is not None and owner < len(modules) else None
            add_data(d, module)
        publics = gscan.publics

    inline_sites: dict[str, set[str]] = {}
    thunks: list[Thunk] = []
    compile_flags: dict[str, CompileSym] = {}
    for mod, scan in scans:
        if scan.compile is not None:
            compile_flags[mod.name] = scan.compile
        for site in scan.inline_sites:
            if site.procedure is None:
                continue
            inlinee = types.id_name(site.inlinee) or f"<id {site.inlinee:#x}>"
            inline_sites.setdefault(site.procedure, set()).add(inlinee)
        for t in scan.thunks:
            seg = t.segment
            rva = section_vas[seg - 1] + t.offset if 0 < seg <= nsec else None
            thunks.append(Thunk(t.name, rva, t.length, t.ordinal, mod.name))

    if omap is not None:
        remap = omap.map
        for objs in (procedures, globals_, publics, thunks):
            for o in objs:
                o.rva = remap(o.rva)

    return Pdb(
        path=path,
        guid=info.guid,
        age=info.age,
        dbi_age=dbi.header.age if dbi is not None else None,
        signature=info.signature,
        machine=dbi.machine if dbi is not None else None,
        info=info,
        dbi=dbi,
        sections=sections,
        modules=modules,
        procedures=procedures,
        globals_=globals_,
        publics=publics,
        hotpatch_functions=hotpatch,
        inline_sites=inline_sites,
        compile_flags=compile_flags,
        thunks=thunks,
        types=types,
        address_sections=address_sections,
        omap=omap,
    )


class _NoIds:
    """Stand-in id stream for PDBs without an IPI: every lookup misses."""

    buf = b""
    path = None

    def locate(self, ti: int) -> None:
        return None

    def __len__(self) -> int:
        return 0


_EMPTY_IDS = _NoIds()
