"""The PE image model: everything pehp needs to know about one image file.

:class:`PEImage` holds the parsed facts and the addressing helpers (RVA to file offset,
bounds-checked reads of the mapped image).  Reading is in :mod:`pehotpatch.image.pe_reader`
(headers and section table), :mod:`pehotpatch.image.pe_directories` (relocations,
``.pdata``, debug entries, TLS, the load configuration) and
:mod:`pehotpatch.image.pe_imports` (exports, imports and delay imports).
"""

from __future__ import annotations

import bisect
import struct
import uuid
from dataclasses import dataclass, field
from functools import cached_property

from pehotpatch.errors import FormatError
from pehotpatch.image.checksum import pe_checksum
from pehotpatch.image.coff_symtab import CoffSymbol
from pehotpatch.image.headers import load_config_struct
from pehotpatch.image.machine import Machine

# Section characteristics
SCN_CNT_CODE = 0x20
SCN_CNT_INITIALIZED_DATA = 0x40
SCN_CNT_UNINITIALIZED_DATA = 0x80
SCN_MEM_DISCARDABLE = 0x02000000
SCN_MEM_EXECUTE = 0x20000000
SCN_MEM_READ = 0x40000000
SCN_MEM_WRITE = 0x80000000

# Data directory indexes
DIR_EXPORT, DIR_IMPORT, DIR_RESOURCE, DIR_EXCEPTION, DIR_SECURITY = 0, 1, 2, 3, 4
DIR_BASERELOC, DIR_DEBUG, DIR_TLS, DIR_LOAD_CONFIG, DIR_IAT, DIR_DELAY_IMPORT = 5, 6, 9, 10, 12, 13

# Debug directory types
DEBUG_TYPE_CODEVIEW = 2
DEBUG_TYPE_POGO = 13
DEBUG_TYPE_REPRO = 16
DEBUG_TYPE_EX_DLLCHARACTERISTICS = 20

EX_DLLCHAR_HOTPATCH_COMPATIBLE = 0x80
EX_DLLCHAR_CET_COMPAT = 0x01

# Offset of HotPatchTableOffset inside IMAGE_LOAD_CONFIG_DIRECTORY{32,64}
HOTPATCH_TABLE_OFFSET_FIELD = {m: load_config_struct(m.pointer_size).offset("HotPatchTableOffset")
                               for m in (Machine.X86, Machine.X64, Machine.ARM64)}

MAX_SECTIONS = 96  # the loader's own limit
MAX_FILE_SIZE = 2 * 1024**3
MAX_EXPORTS = 1 << 20
MAX_IMPORT_DESCRIPTORS = 1 << 14
MAX_THUNKS = 1 << 20  # imports in all, and CFG table entries


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    rva: int
    virtual_size: int
    raw_offset: int
    raw_size: int
    characteristics: int

    @property
    def readable(self) -> bool:
        return bool(self.characteristics & SCN_MEM_READ)

    @property
    def writable(self) -> bool:
        return bool(self.characteristics & SCN_MEM_WRITE)

    @property
    def executable(self) -> bool:
        return bool(self.characteristics & SCN_MEM_EXECUTE)

    @property
    def perms(self) -> str:
        return (
            ("r" if self.readable else "-")
            + ("w" if self.writable else "-")
            + ("x" if self.executable else "-")
        )

    @property
    def size(self) -> int:
        """Size in memory (VirtualSize, or the raw size when VirtualSize is 0)."""
        return self.virtual_size or self.raw_size

    def contains(self, rva: int) -> bool:
        return self.rva <= rva < self.rva + self.size


@dataclass(frozen=True, slots=True)
class Export:
    ordinal: int
    name: str | None
    rva: int  # 0 for forwarders
    forwarder: str | None = None


@dataclass(frozen=True, slots=True)
class Import:
    dll: str
    name: str | None  # None when imported by ordinal
    ordinal: int | None
    iat_rva: int
    delayed: bool = False

    @property
    def key(self) -> str:
        fn = self.name if self.name is not None else f"#{self.ordinal}"
        return f"{self.dll.lower()}!{fn}"


@dataclass(frozen=True, slots=True)
class RuntimeFunction:
    """One ``.pdata`` entry: a function's code range ``[begin, end)``."""

    begin: int
    end: int
    unwind: int


@dataclass(frozen=True, slots=True)
class CodeView:
    pdb_path: str
    guid: uuid.UUID
    age: int


@dataclass(frozen=True, slots=True)
class DebugEntry:
    type: int
    rva: int
    file_offset: int
    size: int


@dataclass(frozen=True, slots=True)
class LoadConfig:
    rva: int
    size: int  # the structure's own Size field
    directory_size: int  # the data directory's size
    hotpatch_table_offset: int | None  # None when Size does not cover the field
    guard_flags: int | None
    cfg_functions: tuple[int, ...] = ()
    fields: dict[str, int] = field(default_factory=dict, compare=False)  # every field Size covers

    @property
    def covers_hotpatch_field(self) -> bool:
        return self.hotpatch_table_offset is not None


@dataclass(slots=True)
class Relocations:
    """Base relocation fixups as a sorted list of RVAs (with their types)."""

    rvas: list[int] = field(default_factory=list)
    types: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rvas)

    def within(self, begin: int, end: int) -> list[int]:
        lo = bisect.bisect_left(self.rvas, begin)
        hi = bisect.bisect_left(self.rvas, end)
        return self.rvas[lo:hi]


@dataclass
class PEImage:
    """One parsed PE file; ``data`` holds the whole file, never modified."""

    path: str
    data: bytes
    machine: Machine
    is_dll: bool
    is_pe32_plus: bool
    image_base: int
    entry_rva: int
    timestamp: int
    checksum: int
    checksum_offset: int
    size_of_image: int
    size_of_headers: int
    section_alignment: int
    file_alignment: int
    subsystem: int
    characteristics: int
    dll_characteristics: int
    sections: list[Section]  # in file order (COFF section numbers index this)
    data_directories: list[tuple[int, int]]
    relocations: Relocations
    functions: list[RuntimeFunction]  # .pdata (x64/ARM64); empty on x86
    exports: list[Export] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    coff_symbols: list[CoffSymbol] = field(default_factory=list)
    debug_entries: list[DebugEntry] = field(default_factory=list)
    codeview: CodeView | None = None
    ex_dll_characteristics: int | None = None
    load_config: LoadConfig | None = None
    tls_callbacks: list[int] = field(default_factory=list)
    has_signature: bool = False
    resource_digest: str | None = None
    export_name: str | None = None

    # ---- addressing -----------------------------------------------------------------
    @cached_property
    def _by_rva(self) -> list[Section]:
        return sorted(self.sections, key=lambda s: s.rva)

    @cached_property
    def _section_starts(self) -> list[int]:
        return [s.rva for s in self._by_rva]

    @cached_property
    def _section_ends(self) -> list[int]:
        return [s.rva + s.size for s in self._by_rva]

    def section_at(self, rva: int) -> Section | None:
        i = bisect.bisect_right(self._section_starts, rva) - 1
        if i >= 0 and rva < self._section_ends[i]:
            return self._by_rva[i]
        return None

    def section_named(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def rva_to_offset(self, rva: int) -> int | None:
        if rva < self.size_of_headers:
            return rva if rva < len(self.data) else None
        s = self.section_at(rva)
        if s is None:
            return None
        delta = rva - s.rva
        if delta >= s.raw_size:
            return None
        return s.raw_offset + delta

    def read(self, rva: int, size: int) -> bytes:
        """Bytes of the mapped image at ``rva``; zero-filled beyond raw data (like .bss).

        Reads outside every section raise :class:`FormatError`."""
        if size < 0:
            raise FormatError(f"negative read size at RVA {rva:#x}", self.path)
        if rva < self.size_of_headers and rva + size <= self.size_of_headers:
            chunk = self.data[rva : rva + size]
            return chunk + b"\0" * (size - len(chunk))
        s = self.section_at(rva)
        if s is None or rva + size > s.rva + max(s.size, s.raw_size):
            raise FormatError(f"RVA range {rva:#x}+{size:#x} is outside every section", self.path)
        delta = rva - s.rva
        avail = max(0, min(size, s.raw_size - delta))
        chunk = self.data[s.raw_offset + delta : s.raw_offset + delta + avail] if avail else b""
        return chunk + b"\0" * (size - len(chunk))

    def try_read(self, rva: int, size: int) -> bytes | None:
        try:
            return self.read(rva, size)
        except FormatError:
            return None

    def read_ptr(self, rva: int) -> int:
        if self.is_pe32_plus:
            return struct.unpack("<Q", self.read(rva, 8))[0]
        return struct.unpack("<I", self.read(rva, 4))[0]

    def read_cstring(self, rva: int, limit: int = 4096) -> str:
        s = self.section_at(rva)
        if s is None:
            raise FormatError(f"string at RVA {rva:#x} is outside every section", self.path)
        end = min(s.rva + s.raw_size, rva + limit)
        raw = self.read(rva, max(0, end - rva))
        nul = raw.find(b"\0")
        if nul < 0:
            raise FormatError(f"unterminated string at RVA {rva:#x}", self.path)
        return raw[:nul].decode("latin-1")

    # ---- derived facts --------------------------------------------------------------
    @cached_property
    def checksum_computed(self) -> int:
        return pe_checksum(self.data, self.checksum_offset)

    @property
    def hotpatch_compatible(self) -> bool:
        return bool((self.ex_dll_characteristics or 0) & EX_DLLCHAR_HOTPATCH_COMPATIBLE)

    @property
    def kind(self) -> str:
        return "dll" if self.is_dll else "exe"

    @cached_property
    def structure_starts(self) -> tuple[int, ...]:
        """RVAs where structures the linker writes into data sections begin: every data
        directory, and the data of each debug directory entry (the CodeView record).  A
        guessed extent of data before them ends there: the debug data differ in every
        build."""
        rvas = {rva for rva, _size in self.data_directories if rva}
        rvas.update(d.rva for d in self.debug_entries if d.rva)
        return tuple(sorted(rvas))

    def directory(self, index: int) -> tuple[int, int]:
        if index < len(self.data_directories):
            return self.data_directories[index]
        return (0, 0)

    def function_at(self, rva: int) -> RuntimeFunction | None:
        """The ``.pdata`` entry whose range contains ``rva``."""
        starts = self._function_starts
        i = bisect.bisect_right(starts, rva) - 1
        if i >= 0 and self.functions[i].begin <= rva < self.functions[i].end:
            return self.functions[i]
        return None

    @cached_property
    def _function_starts(self) -> list[int]:
        return [f.begin for f in self.functions]
