"""The PE image model: everything pehp needs to know about one image file.

Everything is parsed here directly, with every offset and count checked against the
file before use: headers, sections, base relocations, ``.pdata``, exports, imports
(and delay imports), TLS callbacks, debug entries, the load configuration.  Reading
does not import LIEF (its import alone costs about half a second); LIEF is for
writing.  Any malformed input raises :class:`~pehotpatch.errors.InputError` naming
the file.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pehotpatch.errors import FormatError, InputError, read_capped
from pehotpatch.image.checksum import pe_checksum
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

_REL_ABSOLUTE, _REL_HIGHLOW, _REL_DIR64 = 0, 3, 10


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
class CoffSymbol:
    name: str
    value: int
    section_number: int
    type: int
    storage_class: int
    rva: int | None  # value + section RVA when the symbol is in a section

    @property
    def is_function(self) -> bool:
        return (self.type >> 4) == 2  # IMAGE_SYM_DTYPE_FUNCTION

    @property
    def is_external(self) -> bool:
        return self.storage_class == 2


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

    def read_u32(self, rva: int) -> int:
        return struct.unpack("<I", self.read(rva, 4))[0]

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


# ======================================================================================
# Loading
# ======================================================================================


def load_pe(path: str | os.PathLike[str]) -> PEImage:
    """Read and parse the PE file at ``path``.  Never modifies it."""
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, not a PE image", p)
    try:
        data = read_capped(p, MAX_FILE_SIZE, "PE image")
    except FileNotFoundError:
        raise InputError("no such file", p) from None
    except PermissionError:
        raise InputError("permission denied", p) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", p) from None
    return parse_pe(data, str(p))


def parse_pe(data: bytes, path: str = "<memory>") -> PEImage:
    """Parse PE bytes; ``path`` names the file in error messages."""
    return _Parser(bytes(data), path).parse()


class _Parser:
    def __init__(self, data: bytes, path: str):
        self.data = data
        self.path = path

    def fail(self, msg: str) -> FormatError:
        return FormatError(msg, self.path)

    def unpack(self, fmt: str, off: int, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if off < 0 or off + size > len(self.data):
            raise self.fail(f"truncated: {what} at file offset {off:#x} runs past end of file")
        return struct.unpack_from(fmt, self.data, off)

    def parse(self) -> PEImage:
        d = self.data
        if len(d) < 0x40:
            raise self.fail("not a PE image (file too small for a DOS header)")
        if d[:2] != b"MZ":
            raise self.fail("not a PE image (no MZ signature)")
        (lfanew,) = self.unpack("<I", 0x3C, "e_lfanew")
        if lfanew + 24 > len(d):
            raise self.fail(f"truncated: PE header offset {lfanew:#x} is past end of file")
        if d[lfanew : lfanew + 4] != b"PE\0\0":
            raise self.fail("not a PE image (no PE signature)")
        (mach, nsec, ts, symptr, nsyms, opt_size, chars) = self.unpack(
            "<HHIIIHH", lfanew + 4, "file header"
        )
        machine = Machine.from_coff(mach)
        if machine is None:
            raise self.fail(f"unsupported machine {mach:#06x} (pehp handles x64, x86 and ARM64)")
        if nsec == 0 or nsec > MAX_SECTIONS:
            raise self.fail(f"implausible section count {nsec}")
        opt = lfanew + 24
        (magic,) = self.unpack("<H", opt, "optional header")
        if magic == 0x20B:
            plus = True
            min_opt = 112
        elif magic == 0x10B:
            plus = False
            min_opt = 96
        else:
            raise self.fail(f"bad optional header magic {magic:#x}")
        if opt_size < min_opt or opt + opt_size > len(d):
            raise self.fail(f"truncated or undersized optional header ({opt_size} bytes)")
        expected_plus = machine is not Machine.X86
        if plus != expected_plus:
            raise self.fail(
                f"optional header is {'PE32+' if plus else 'PE32'}, which does not fit machine {machine.value}"
            )
        entry = self.unpack("<I", opt + 16, "entry point")[0]
        if plus:
            image_base = self.unpack("<Q", opt + 24, "image base")[0]
            dd_count_off, dd_off = opt + 108, opt + 112
        else:
            image_base = self.unpack("<I", opt + 28, "image base")[0]
            dd_count_off, dd_off = opt + 92, opt + 96
        sect_align, file_align = self.unpack("<II", opt + 32, "alignment")
        size_of_image, size_of_headers, checksum = self.unpack("<III", opt + 56, "sizes")
        subsystem, dll_chars = self.unpack("<HH", opt + 68, "subsystem")
        (ndirs,) = self.unpack("<I", dd_count_off, "NumberOfRvaAndSizes")
        ndirs = min(ndirs, 16, max(0, (opt + opt_size - dd_off) // 8))
        dirs = [self.unpack("<II", dd_off + 8 * i, "data directory") for i in range(ndirs)]

        sec_off = opt + opt_size
        if sec_off + 40 * nsec > len(d):
            raise self.fail(f"truncated: section table ({nsec} sections) runs past end of file")
        sections: list[Section] = []
        for i in range(nsec):
            raw_name, vsize, va, rsize, roff = struct.unpack_from("<8sIIII", d, sec_off + 40 * i)
            (schars,) = struct.unpack_from("<I", d, sec_off + 40 * i + 36)
            name = raw_name.split(b"\0", 1)[0].decode("latin-1")
            if rsize and roff + rsize > len(d):
                # A truncated last section is common in damaged files; the loader
                # refuses such an image, and so do we.
                raise self.fail(
                    f"truncated: section {name!r} raw data {roff:#x}+{rsize:#x} runs past end of file ({len(d):#x})"
                )
            if va + max(vsize, rsize) > 0xFFFFFFFF or (size_of_image and va > size_of_image):
                raise self.fail(f"section {name!r} lies outside SizeOfImage")
            if vsize > 0x40000000:
                raise self.fail(f"section {name!r} has an absurd virtual size {vsize:#x}")
            sections.append(Section(name, va, vsize, roff if rsize else 0, rsize, schars))
        order = sorted(sections, key=lambda s: s.rva)
        for a, b in zip(order, order[1:], strict=False):
            if a.rva + a.size > b.rva:
                raise self.fail(f"sections {a.name!r} and {b.name!r} overlap in memory")

        img = PEImage(
            path=self.path,
            data=d,
            machine=machine,
            is_dll=bool(chars & 0x2000),
            is_pe32_plus=plus,
            image_base=image_base,
            entry_rva=entry,
            timestamp=ts,
            checksum=checksum,
            checksum_offset=opt + 64,
            size_of_image=size_of_image,
            size_of_headers=min(size_of_headers, len(d)),
            section_alignment=sect_align,
            file_alignment=file_align,
            subsystem=subsystem,
            characteristics=chars,
            dll_characteristics=dll_chars,
            sections=sections,
            data_directories=dirs,
            relocations=Relocations(),
            functions=[],
        )
        img.relocations = self._relocations(img)
        img.functions = self._pdata(img)
        img.coff_symbols = self._coff_symbols(img, symptr, nsyms)
        img.debug_entries = self._debug_entries(img)
        img.codeview = self._codeview(img)
        img.ex_dll_characteristics = self._ex_dll_chars(img)
        img.has_signature = self._has_signature(img)
        img.resource_digest = self._resource_digest(img)
        img.tls_callbacks = self._tls_callbacks(img)
        _fill_directories(img, self)
        return img

    # -- directories parsed here -------------------------------------------------------
    def _dir_bytes(self, img: PEImage, index: int, what: str) -> tuple[int, bytes] | None:
        rva, size = img.directory(index)
        if not rva or not size:
            return None
        if size > len(self.data):
            # Directories live in file-backed data; a bigger one would only be zero fill.
            raise self.fail(f"{what} directory size {size:#x} is larger than the file")
        try:
            return rva, img.read(rva, size)
        except FormatError:
            raise self.fail(f"{what} directory {rva:#x}+{size:#x} lies outside every section") from None

    def _relocations(self, img: PEImage) -> Relocations:
        got = self._dir_bytes(img, DIR_BASERELOC, "base relocation")
        rel = Relocations()
        if got is None:
            return rel
        _, blob = got
        off = 0
        rvas: list[int] = []
        types: dict[int, int] = {}
        while off + 8 <= len(blob):
            page, bsize = struct.unpack_from("<II", blob, off)
            if bsize == 0 and page == 0:
                break
            if bsize < 8 or off + bsize > len(blob) or bsize % 2:
                raise self.fail(f"corrupt base relocation block at +{off:#x} (size {bsize:#x})")
            n = (bsize - 8) // 2
            for entry in struct.unpack_from(f"<{n}H", blob, off + 8):
                typ = entry >> 12
                if typ == _REL_ABSOLUTE:
                    continue
                r = page + (entry & 0xFFF)
                rvas.append(r)
                if typ not in (_REL_HIGHLOW, _REL_DIR64):
                    types[r] = typ
            off += bsize
        rvas.sort()
        rel.rvas = rvas
        rel.types = types
        return rel

    def _pdata(self, img: PEImage) -> list[RuntimeFunction]:
        if img.machine is Machine.X86:
            return []
        got = self._dir_bytes(img, DIR_EXCEPTION, "exception")
        if got is None:
            return []
        _, blob = got
        out: list[RuntimeFunction] = []
        if img.machine is Machine.X64:
            n = len(blob) // 12
            for begin, end, unwind in struct.iter_unpack("<III", blob[: n * 12]):
                if begin == 0 and end == 0:
                    continue
                if end <= begin:
                    raise self.fail(f".pdata entry {begin:#x}..{end:#x} has an empty or inverted range")
                out.append(RuntimeFunction(begin, end, unwind))
        else:  # ARM64: begin, then packed unwind data or an .xdata RVA
            n = len(blob) // 8
            for begin, word in struct.iter_unpack("<II", blob[: n * 8]):
                if begin == 0 and word == 0:
                    continue
                flag = word & 3
                if flag:
                    length = ((word >> 2) & 0x7FF) * 4
                else:
                    hdr = img.try_read(word, 4)
                    if hdr is None:
                        raise self.fail(f".pdata entry at {begin:#x} points to unreadable .xdata {word:#x}")
                    length = (struct.unpack("<I", hdr)[0] & 0x3FFFF) * 4
                out.append(RuntimeFunction(begin, begin + max(length, 4), word))
        out.sort(key=lambda f: f.begin)
        # Chained/duplicate entries (same begin) are collapsed to the widest range.
        merged: list[RuntimeFunction] = []
        for f in out:
            if merged and merged[-1].begin == f.begin:
                if f.end > merged[-1].end:
                    merged[-1] = f
                continue
            if merged and merged[-1].end > f.begin:
                raise self.fail(f".pdata entries {merged[-1].begin:#x}..{merged[-1].end:#x} and "
                                f"{f.begin:#x}..{f.end:#x} overlap")
            merged.append(f)
        return merged

    def _coff_symbols(self, img: PEImage, ptr: int, count: int) -> list[CoffSymbol]:
        if not ptr or not count:
            return []
        d = self.data
        if ptr + 18 * count > len(d) or count > 10_000_000:
            raise self.fail(f"COFF symbol table ({count} symbols at {ptr:#x}) runs past end of file")
        str_off = ptr + 18 * count
        strtab = b""
        if str_off + 4 <= len(d):
            (str_size,) = struct.unpack_from("<I", d, str_off)
            if 4 <= str_size <= len(d) - str_off:
                strtab = d[str_off : str_off + str_size]
        out: list[CoffSymbol] = []
        i = 0
        while i < count:
            raw, value, secnum, typ, sclass, naux = struct.unpack_from("<8sIhHBB", d, ptr + 18 * i)
            if raw[:4] == b"\0\0\0\0":
                (soff,) = struct.unpack_from("<I", raw, 4)
                end = strtab.find(b"\0", soff) if soff < len(strtab) else -1
                name = strtab[soff:end].decode("utf-8", "replace") if end >= 0 else ""
            else:
                name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            rva = None
            if 0 < secnum <= len(img.sections):
                # COFF section numbers follow the file's section table order.
                rva = img.sections[secnum - 1].rva + value
            out.append(CoffSymbol(name, value, secnum, typ, sclass, rva))
            i += 1 + naux
        return out

    def _tls_callbacks(self, img: PEImage) -> list[int]:
        got = self._dir_bytes(img, DIR_TLS, "TLS")
        if got is None:
            return []
        _, blob = got
        ptr = img.machine.pointer_size
        if len(blob) < 4 * ptr:
            raise self.fail("TLS directory is too small")
        fmt = "<Q" if ptr == 8 else "<I"
        (va,) = struct.unpack_from(fmt, blob, 3 * ptr)  # AddressOfCallBacks
        out: list[int] = []
        if not va:
            return out
        rva = va - img.image_base
        for i in range(4096):
            raw = img.try_read(rva + i * ptr, ptr)
            if raw is None:
                raise self.fail(f"TLS callback array at VA {va:#x} runs outside every section")
            (cb,) = struct.unpack(fmt, raw)
            if cb == 0:
                return out
            out.append(cb - img.image_base)
        raise self.fail("TLS callback array is not terminated within 4096 entries")

    def _debug_entries(self, img: PEImage) -> list[DebugEntry]:
        got = self._dir_bytes(img, DIR_DEBUG, "debug")
        if got is None:
            return []
        _, blob = got
        out = []
        for i in range(len(blob) // 28):
            _c, _t, _maj, _min, typ, size, rva, foff = struct.unpack_from("<IIHHIIII", blob, 28 * i)
            out.append(DebugEntry(typ, rva, foff, size))
        return out

    def _debug_payload(self, e: DebugEntry) -> bytes | None:
        if e.file_offset and e.file_offset + e.size <= len(self.data):
            return self.data[e.file_offset : e.file_offset + e.size]
        return None

    def _codeview(self, img: PEImage) -> CodeView | None:
        for e in img.debug_entries:
            if e.type != DEBUG_TYPE_CODEVIEW:
                continue
            blob = self._debug_payload(e)
            if blob is None or len(blob) < 24 or blob[:4] != b"RSDS":
                continue
            guid = uuid.UUID(bytes_le=blob[4:20])
            (age,) = struct.unpack_from("<I", blob, 20)
            name = blob[24:].split(b"\0", 1)[0].decode("utf-8", "replace")
            return CodeView(name, guid, age)
        return None

    def _ex_dll_chars(self, img: PEImage) -> int | None:
        for e in img.debug_entries:
            if e.type == DEBUG_TYPE_EX_DLLCHARACTERISTICS:
                blob = self._debug_payload(e)
                if blob is not None and len(blob) >= 4:
                    return struct.unpack_from("<I", blob)[0]
        return None

    def _has_signature(self, img: PEImage) -> bool:
        off, size = img.directory(DIR_SECURITY)  # a file offset, not an RVA
        return bool(off and size and off + size <= len(self.data))

    def _resource_digest(self, img: PEImage) -> str | None:
        got = self._dir_bytes(img, DIR_RESOURCE, "resource")
        if got is None:
            return None
        rva, _ = got
        s = img.section_at(rva)
        blob = img.read(s.rva, s.raw_size) if s is not None else got[1]
        return hashlib.sha256(blob).hexdigest()


# ---- exports, imports, load configuration ------------------------------------------------

MAX_EXPORTS = 1 << 20
MAX_IMPORT_DESCRIPTORS = 1 << 14
MAX_THUNKS = 1 << 20


def _fill_directories(img: PEImage, parser: _Parser) -> None:
    _exports(img, parser)
    _imports(img, parser)
    _delay_imports(img, parser)
    _load_config(img, parser)


def _cstr(img: PEImage, parser: _Parser, rva: int, what: str) -> str:
    try:
        return img.read_cstring(rva, 4096)
    except FormatError:
        raise parser.fail(f"{what} at RVA {rva:#x} is outside every section or unterminated") from None


def _exports(img: PEImage, parser: _Parser) -> None:
    rva, size = img.directory(DIR_EXPORT)
    if not rva or not size:
        return
    hdr = img.try_read(rva, 40)
    if hdr is None:
        raise parser.fail(f"export directory at RVA {rva:#x} lies outside every section")
    (_c, _t, _ma, _mi, name_rva, base, nfuncs, nnames, funcs_rva, names_rva, ords_rva) = struct.unpack(
        "<IIHHIIIIIII", hdr
    )
    if nfuncs > MAX_EXPORTS or nnames > MAX_EXPORTS or nnames > nfuncs + MAX_EXPORTS:
        raise parser.fail(f"export directory claims {nfuncs} functions and {nnames} names")
    img.export_name = _cstr(img, parser, name_rva, "export DLL name") if name_rva else None
    funcs = img.try_read(funcs_rva, 4 * nfuncs) if nfuncs else b""
    names = img.try_read(names_rva, 4 * nnames) if nnames else b""
    ords = img.try_read(ords_rva, 2 * nnames) if nnames else b""
    if funcs is None or names is None or ords is None:
        raise parser.fail("export tables lie outside every section")
    addrs = struct.unpack(f"<{nfuncs}I", funcs)
    named: dict[int, str] = {}
    for name_ptr, idx in zip(struct.unpack(f"<{nnames}I", names), struct.unpack(f"<{nnames}H", ords),
                             strict=True):
        if idx >= nfuncs:
            raise parser.fail(f"export name ordinal {idx} is past the function table ({nfuncs})")
        named.setdefault(idx, _cstr(img, parser, name_ptr, "export name"))
    for idx, addr in enumerate(addrs):
        if addr == 0:
            continue
        fwd = None
        if rva <= addr < rva + size:
            fwd = _cstr(img, parser, addr, "export forwarder")
        img.exports.append(Export(base + idx, named.get(idx), 0 if fwd else addr, fwd))


def _thunks(img: PEImage, parser: _Parser, table_rva: int, what: str) -> list[int]:
    ptr = img.machine.pointer_size
    fmt = "<Q" if ptr == 8 else "<I"
    out: list[int] = []
    pos = table_rva
    for _ in range(MAX_THUNKS):
        raw = img.try_read(pos, ptr)
        if raw is None:
            raise parser.fail(f"{what} at RVA {table_rva:#x} runs outside every section")
        (v,) = struct.unpack(fmt, raw)
        if v == 0:
            return out
        out.append(v)
        pos += ptr
    raise parser.fail(f"{what} at RVA {table_rva:#x} is not terminated")


def _import_entry(img: PEImage, parser: _Parser, dll: str, thunk: int, slot: int, delayed: bool) -> Import:
    ptr = img.machine.pointer_size
    if thunk >> (8 * ptr - 1):
        return Import(dll, None, thunk & 0xFFFF, slot, delayed)
    name = _cstr(img, parser, (thunk & 0x7FFFFFFF) + 2, "import name")
    return Import(dll, name, None, slot, delayed)


def _check_import_total(img: PEImage, parser: _Parser) -> None:
    # Descriptors may share one thunk table; the total is what costs time and memory.
    if len(img.imports) > MAX_THUNKS:
        raise parser.fail(f"import directories list more than {MAX_THUNKS} imports in all")


def _imports(img: PEImage, parser: _Parser) -> None:
    rva, size = img.directory(DIR_IMPORT)
    if not rva or not size:
        return
    ptr = img.machine.pointer_size
    for i in range(MAX_IMPORT_DESCRIPTORS):
        raw = img.try_read(rva + 20 * i, 20)
        if raw is None:
            raise parser.fail(f"import descriptor {i} lies outside every section")
        ilt, _ts, _fc, name_rva, iat = struct.unpack("<IIIII", raw)
        if not (ilt or name_rva or iat):
            return
        dll = _cstr(img, parser, name_rva, "import DLL name")
        for k, thunk in enumerate(_thunks(img, parser, ilt or iat, f"import table of {dll}")):
            img.imports.append(_import_entry(img, parser, dll, thunk, iat + k * ptr, False))
        _check_import_total(img, parser)
    raise parser.fail("import directory is not terminated")


def _delay_imports(img: PEImage, parser: _Parser) -> None:
    rva, size = img.directory(DIR_DELAY_IMPORT)
    if not rva or not size:
        return
    ptr = img.machine.pointer_size
    for i in range(MAX_IMPORT_DESCRIPTORS):
        raw = img.try_read(rva + 32 * i, 32)
        if raw is None:
            raise parser.fail(f"delay-import descriptor {i} lies outside every section")
        attrs, name_rva, _hmod, iat, int_rva, _b, _u, _ts = struct.unpack("<8I", raw)
        if not (name_rva or iat or int_rva):
            return
        if not attrs & 1:  # VA-based (pre-VC7) descriptors
            name_rva, iat, int_rva = (x - img.image_base if x else 0 for x in (name_rva, iat, int_rva))
        dll = _cstr(img, parser, name_rva, "delay-import DLL name")
        for k, thunk in enumerate(_thunks(img, parser, int_rva, f"delay-import table of {dll}")):
            if not attrs & 1 and not thunk >> (8 * ptr - 1):
                thunk -= img.image_base
            img.imports.append(_import_entry(img, parser, dll, thunk, iat + k * ptr, True))
        _check_import_total(img, parser)
    raise parser.fail("delay-import directory is not terminated")


def _load_config(img: PEImage, parser: _Parser) -> None:
    lc_rva, lc_dir_size = img.directory(DIR_LOAD_CONFIG)
    if not lc_rva:
        return
    raw = img.try_read(lc_rva, 4)
    if raw is None:
        raise parser.fail(f"load config directory at RVA {lc_rva:#x} lies outside every section")
    (lc_size,) = struct.unpack("<I", raw)
    if lc_size > 0x10000:
        raise parser.fail(f"load config Size {lc_size:#x} is implausible")
    body = img.try_read(lc_rva, lc_size)
    if body is None:
        raise parser.fail("load config directory runs past its section")
    ptr = img.machine.pointer_size
    fields = load_config_struct(ptr).decode(body, limit=lc_size)
    hp = fields.get("HotPatchTableOffset")
    guard_flags = fields.get("GuardFlags")
    cfg: tuple[int, ...] = ()
    if guard_flags is not None and "GuardCFFunctionCount" in fields:
        table_va, count = fields["GuardCFFunctionTable"], fields["GuardCFFunctionCount"]
        stride = 4 + ((guard_flags >> 28) & 0xF)
        if table_va and count:
            if count > MAX_THUNKS:
                raise parser.fail(f"load config claims {count} CFG functions")
            blob = img.try_read(table_va - img.image_base, count * stride)
            if blob is None:
                raise parser.fail("CFG function table lies outside every section")
            cfg = tuple(struct.unpack_from("<I", blob, i * stride)[0] for i in range(count))
    img.load_config = LoadConfig(lc_rva, lc_size, lc_dir_size, hp, guard_flags, cfg, fields)
