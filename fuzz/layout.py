"""Where the interesting fields of a seed file are: the map structure-aware mutators use.

A :class:`Layout` lists named integer fields (file offset, width, values worth trying)
in groups ("pe.loadcfg", "pdb.tpi.records", ...), byte regions (section data, stream
blocks), interesting truncation points and fixed-size tables.  Layouts are computed once
per seed file from the unmodified bytes, with pehp's own readers where they expose the
positions and by walking the structures here where they do not.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pehotpatch.image.codeview.subsections import CV_SIGNATURE_C13, DEBUG_S_SYMBOLS
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import (
    DIR_BASERELOC,
    DIR_DEBUG,
    DIR_DELAY_IMPORT,
    DIR_EXCEPTION,
    DIR_EXPORT,
    DIR_IMPORT,
    DIR_LOAD_CONFIG,
    DIR_TLS,
    HOTPATCH_TABLE_OFFSET_FIELD,
    PEImage,
)
from pehotpatch.image.pe_reader import parse_pe

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

    def finish(self) -> Layout:
        self.groups = {k: v for k, v in self.groups.items() if v}
        self.cuts = sorted({c for c in self.cuts if 0 <= c < self.size})
        self.regions = [r for r in self.regions if r[2] > 0 and r[1] + r[2] <= self.size]
        return self


def u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def layout_for(data: bytes, kind: str) -> Layout:
    """The layout of a seed; ``kind`` is "pe", "pdb", "coff" or "raw"."""
    builder: dict[str, Callable[[bytes], Layout]] = {"pe": pe_layout, "pdb": pdb_layout,
                                                    "coff": coff_layout}
    if kind in builder:
        return builder[kind](data).finish()
    return Layout("raw", len(data), regions=[("file", 0, len(data))], cuts=[0, len(data) // 2]).finish()


# ======================================================================================
# PE images
# ======================================================================================

_FILE_HEADER = [("Machine", 0, 2), ("NumberOfSections", 2, 2), ("TimeDateStamp", 4, 4),
                ("PointerToSymbolTable", 8, 4), ("NumberOfSymbols", 12, 4),
                ("SizeOfOptionalHeader", 16, 2), ("Characteristics", 18, 2)]
_OPT_COMMON = [("Magic", 0, 2), ("SizeOfCode", 4, 4), ("AddressOfEntryPoint", 16, 4),
               ("BaseOfCode", 20, 4), ("SectionAlignment", 32, 4), ("FileAlignment", 36, 4),
               ("SizeOfImage", 56, 4), ("SizeOfHeaders", 60, 4), ("CheckSum", 64, 4),
               ("Subsystem", 68, 2), ("DllCharacteristics", 70, 2)]
_SECTION = [("VirtualSize", 8, 4), ("VirtualAddress", 12, 4), ("SizeOfRawData", 16, 4),
            ("PointerToRawData", 20, 4), ("PointerToRelocations", 24, 4),
            ("NumberOfRelocations", 32, 2), ("Characteristics", 36, 4)]
_EXPORT_DIR = [("Name", 12, 4), ("Base", 16, 4), ("NumberOfFunctions", 20, 4),
               ("NumberOfNames", 24, 4), ("AddressOfFunctions", 28, 4),
               ("AddressOfNames", 32, 4), ("AddressOfNameOrdinals", 36, 4)]
_IMPORT_DESC = [("OriginalFirstThunk", 0, 4), ("Name", 12, 4), ("FirstThunk", 16, 4)]
_DELAY_DESC = [("Attributes", 0, 4), ("DllNameRVA", 4, 4), ("ModuleHandleRVA", 8, 4),
               ("ImportAddressTableRVA", 12, 4), ("ImportNameTableRVA", 16, 4)]
_DEBUG_DIR = [("Type", 12, 4), ("SizeOfData", 16, 4), ("AddressOfRawData", 20, 4),
              ("PointerToRawData", 24, 4)]
# IMAGE_LOAD_CONFIG_DIRECTORY fields pehp reads or that guard/hot-patch code relies on
_LOADCFG = {
    8: [("Size", 0, 4), ("SecurityCookie", 0x58, 8), ("GuardCFCheckFunctionPointer", 0x70, 8),
        ("GuardCFFunctionTable", 0x80, 8), ("GuardCFFunctionCount", 0x88, 8),
        ("GuardFlags", 0x90, 4), ("HotPatchTableOffset", 0xF0, 4)],
    4: [("Size", 0, 4), ("SecurityCookie", 0x3C, 4), ("SEHandlerTable", 0x40, 4),
        ("SEHandlerCount", 0x44, 4), ("GuardCFFunctionTable", 0x50, 4),
        ("GuardCFFunctionCount", 0x54, 4), ("GuardFlags", 0x58, 4),
        ("HotPatchTableOffset", 0x94, 4)],
}
# Sizes around the ends of the fields pehp reads (Size must cover HotPatchTableOffset)
_LOADCFG_SIZES = {8: (0, 4, 0x40, 0x70, 0x88, 0x8F, 0x90, 0x94, 0xA0, 0xEF, 0xF0, 0xF3, 0xF4,
                      0xF8, 0x100, 0x140, 0x148, 0x200, 0x1000, 0xFFFF, 0x10000, 0x10001),
                  4: (0, 4, 0x40, 0x48, 0x54, 0x57, 0x58, 0x5C, 0x60, 0x93, 0x94, 0x97, 0x98,
                      0xA0, 0xC0, 0x1000, 0xFFFF, 0x10000, 0x10001)}


def pe_layout(data: bytes) -> Layout:
    lay = Layout("pe", len(data))
    img = parse_pe(data, "<seed>")
    lfanew = u32(data, 0x3C)
    fh = lfanew + 4
    opt = lfanew + 24
    opt_size = u16(data, fh + 16)
    plus = img.is_pe32_plus
    sec_off = opt + opt_size
    nsec = len(img.sections)
    ends = sorted({s.rva + s.size for s in img.sections} | {s.rva for s in img.sections})
    lay.hints = (len(data), len(data) - 1, img.size_of_image, img.size_of_image - 1,
                 img.size_of_headers, *ends)
    lay.add("pe.dos", "e_lfanew", 0x3C, 4, (0, 0x3C, 0x40, lfanew - 4, lfanew + 4, len(data) - 24,
                                             len(data) - 4, len(data), 0x80000000))
    lay.add("pe.dos", "e_magic", 0, 2, (0x5A4D, 0x4D5A))
    lay.add("pe.dos", "Signature", lfanew, 4, (0x4550, 0x00455000))
    lay.add_struct("pe.coff", "FileHeader", fh, _FILE_HEADER, {
        "NumberOfSections": (0, 1, nsec - 1, nsec + 1, 95, 96, 97, 0xFFFF),
        "SizeOfOptionalHeader": (0, 95, 96, 111, 112, opt_size - 8, opt_size + 8, opt_size + 40,
                                 0xFFFF),
        "Machine": (0x14C, 0x8664, 0xAA64, 0x1C4, 0xA641, 0),
        "Characteristics": (0, 0x2000, 0x2022, 0x0102),
        "PointerToSymbolTable": (len(data) - 18, len(data) - 100, sec_off,
                                 *(s.raw_offset for s in img.sections if s.raw_size)),
        "NumberOfSymbols": (1, 2, 10, 1000, 10_000_001),
    })
    lay.add_struct("pe.optional", "Optional", opt, _OPT_COMMON, {
        "Magic": (0x10B, 0x20B, 0x107),
        "SizeOfHeaders": (0, 0x200, 0x400, len(data), len(data) + 1, 0xFFFFFFFF),
        "SectionAlignment": (0, 1, 0x200, 0x1000, 0x10000),
        "FileAlignment": (0, 1, 0x200, 0x1000),
    })
    if plus:
        lay.add("pe.optional", "Optional.ImageBase", opt + 24, 8, (0, 0x180000000, 1 << 63))
        ndirs_off, dd_off = opt + 108, opt + 112
    else:
        lay.add("pe.optional", "Optional.ImageBase", opt + 28, 4, (0, 0x10000000, 0x80000000))
        ndirs_off, dd_off = opt + 92, opt + 96
    ndirs = u32(data, ndirs_off)
    lay.add("pe.optional", "NumberOfRvaAndSizes", ndirs_off, 4, (0, 1, 5, 6, 10, 11, 13, 14, 16,
                                                                 17, 0x100, 0xFFFFFFFF))
    lay.cuts += [0x40, lfanew + 24, opt + 96, dd_off, sec_off, sec_off + 40 * nsec,
                 img.size_of_headers]
    # any directory may be pointed at another one's bytes (an import table read as delay
    # imports, relocations read as .pdata...)
    others = tuple(v for rva, size in img.data_directories for v in (rva, size) if v)
    dir_hints = (*others, 0, 4, 8, 0x10, 0x1000, img.size_of_headers - 8, img.size_of_image,
                 img.size_of_image - 4, len(data), 0xFFFFFFF0, *ends)
    for i in range(min(ndirs, 16)):
        lay.add("pe.dirs", f"DataDirectory[{i}].VirtualAddress", dd_off + 8 * i, 4, dir_hints)
        lay.add("pe.dirs", f"DataDirectory[{i}].Size", dd_off + 8 * i + 4, 4, dir_hints)
    lay.tables.append(Table("DataDirectory", dd_off, 8, min(ndirs, 16)))
    lay.tables.append(Table("SectionTable", sec_off, 40, nsec))
    for i, s in enumerate(img.sections):
        base = sec_off + 40 * i
        lay.add_struct("pe.sections", f"Section[{i}:{s.name}]", base, _SECTION, {
            "VirtualSize": (0, s.raw_size, s.virtual_size + 1, 0x40000000, 0x40000001),
            "SizeOfRawData": (0, s.virtual_size, s.raw_size + 1, len(data) - s.raw_offset,
                              len(data) - s.raw_offset + 1),
            "PointerToRawData": (0, len(data) - s.raw_size, len(data), s.raw_offset + 1),
            "VirtualAddress": (0, img.size_of_image, img.size_of_image + 0x1000),
            "Characteristics": (0, 0x20, 0x60000020, 0xC0000040, 0xE0000060, 0x02000000),
        })
        lay.add("pe.sections", f"Section[{i}].Name", base, 8)
        if s.raw_size:
            lay.regions.append((f"section {s.name}", s.raw_offset, s.raw_size))
            lay.cuts += [s.raw_offset, s.raw_offset + 1, s.raw_offset + s.raw_size // 2,
                         s.raw_offset + s.raw_size - 1]
    lay.regions.append(("headers", 0, img.size_of_headers))
    _pe_directories(lay, img, data, plus)
    return lay


def _file_off(img: PEImage, rva: int) -> int | None:
    off = img.rva_to_offset(rva)
    return off if off is not None and off < len(img.data) else None


def _pe_directories(lay: Layout, img: PEImage, data: bytes, plus: bool) -> None:
    ptr = 8 if plus else 4
    rva_hints = lay.hints

    def dir_region(index: int, name: str) -> tuple[int, int] | None:
        rva, size = img.directory(index)
        off = _file_off(img, rva) if rva else None
        if off is None:
            return None
        lay.regions.append((name, off, min(size, len(data) - off)))
        lay.cuts += [off, off + size // 2]
        return off, size

    # base relocations: page RVA and block size of every block, the first entries of each
    got = dir_region(DIR_BASERELOC, "relocations")
    if got is not None:
        off, size = got
        pos = 0
        while pos + 8 <= size and off + pos + 8 <= len(data):
            page, bsize = struct.unpack_from("<II", data, off + pos)
            if bsize < 8:
                break
            lay.add("pe.reloc", f"reloc@{pos:#x}.PageRVA", off + pos, 4, rva_hints)
            lay.add("pe.reloc", f"reloc@{pos:#x}.BlockSize", off + pos + 4, 4,
                    (0, 2, 7, 8, 9, bsize - 2, bsize + 2, size - pos, size - pos + 8, 0xFFFFFFF8))
            for k in range(min(4, (bsize - 8) // 2)):
                lay.add("pe.reloc", f"reloc@{pos:#x}.entry[{k}]", off + pos + 8 + 2 * k, 2,
                        (0x0000, 0x3FFF, 0xAFFF, 0x1000, 0x5000, 0x7FFF))
            pos += bsize
    # exports
    got = dir_region(DIR_EXPORT, "exports")
    if got is not None:
        off, _ = got
        lay.add_struct("pe.exports", "ExportDirectory", off, _EXPORT_DIR, {
            "NumberOfFunctions": (0, 1, 0x100000, 0x100001, 0xFFFFFFFF),
            "NumberOfNames": (0, 1, 0x100000, 0x100001, 0xFFFFFFFF),
        })
        nfuncs, nnames = u32(data, off + 20), u32(data, off + 24)
        for what, rva_at, count, width in (("AddressOfFunctions", 28, nfuncs, 4),
                                           ("AddressOfNames", 32, nnames, 4),
                                           ("AddressOfNameOrdinals", 36, nnames, 2)):
            t = _file_off(img, u32(data, off + rva_at))
            if t is None:
                continue
            lay.tables.append(Table(f"export {what}", t, width, min(count, 64)))
            for k in range(min(count, 16)):
                lay.add("pe.exports", f"{what}[{k}]", t + width * k, width,
                        (0, nfuncs - 1, nfuncs, 0xFFFF) if width == 2 else rva_hints)
                if what == "AddressOfNames" and t + 4 * k + 4 <= len(data):
                    _terminator(lay, img, u32(data, t + 4 * k))
    # imports and delay imports: descriptors, first thunks, name terminators
    for index, stride, spec, group in ((DIR_IMPORT, 20, _IMPORT_DESC, "pe.imports"),
                                       (DIR_DELAY_IMPORT, 32, _DELAY_DESC, "pe.delayimports")):
        got = dir_region(index, group)
        if got is None:
            continue
        off, _ = got
        n = 0
        while off + stride * (n + 1) <= len(data) and n < 256 and any(data[off + stride * n:
                                                                          off + stride * (n + 1)]):
            base = off + stride * n
            lay.add_struct(group, f"descriptor[{n}]", base, spec)
            name_at = 12 if stride == 20 else 4
            thunks_at = 0 if stride == 20 else 16
            _terminator(lay, img, u32(data, base + name_at))
            t = _file_off(img, u32(data, base + thunks_at) or u32(data, base + 16))
            if t is not None:
                lay.regions.append((f"{group} thunks[{n}]", t, ptr * 8))
                for k in range(4):
                    lay.add(group, f"descriptor[{n}].thunk[{k}]", t + ptr * k, ptr,
                            (0, 1 << (8 * ptr - 1), (1 << (8 * ptr - 1)) | 1, 0xFFFFFFFF))
                    if t + ptr * k + ptr <= len(data):
                        hint = int.from_bytes(data[t + ptr * k : t + ptr * (k + 1)], "little")
                        if hint and not hint >> (8 * ptr - 1):
                            _terminator(lay, img, (hint & 0x7FFFFFFF) + 2)
            n += 1
        lay.tables.append(Table(f"{group} descriptors", off, stride, n + 1))
    # debug directory and the CodeView / extended DLL characteristics payloads
    got = dir_region(DIR_DEBUG, "debug directory")
    if got is not None:
        off, size = got
        for k in range(min(size // 28, 16)):
            base = off + 28 * k
            if base + 28 > len(data):
                break
            lay.add_struct("pe.debug", f"debug[{k}]", base, _DEBUG_DIR, {
                "Type": (2, 13, 16, 20), "SizeOfData": (0, 4, 23, 24, 0xFFFFFFFF),
                "PointerToRawData": (0, len(data) - 24, len(data), 0xFFFFFFF0)})
            typ, dsize, _rva, foff = struct.unpack_from("<IIII", data, base + 12)
            if foff and foff + dsize <= len(data):
                lay.regions.append((f"debug payload {typ}", foff, dsize))
                if typ == 2 and data[foff : foff + 4] == b"RSDS":
                    lay.add("pe.debug", "CodeView.Signature", foff, 4, (0x53445352, 0x3031424E))
                    for g in range(4):
                        lay.add("pe.debug", f"CodeView.Guid[{g}]", foff + 4 + 4 * g, 4)
                    lay.add("pe.debug", "CodeView.Age", foff + 20, 4, (0, 1, 2, 0xFFFFFFFF))
                    nul = data.find(b"\0", foff + 24, foff + dsize)
                    if nul >= 0:
                        lay.terminators.append(nul)
                elif typ == 20:
                    lay.add("pe.debug", "ExDllCharacteristics", foff, 4, (0, 0x80, 0x81, 0xFFFFFFFF))
        lay.tables.append(Table("debug directory", off, 28, min(size // 28, 16)))
    # .pdata
    got = dir_region(DIR_EXCEPTION, "pdata")
    if got is not None:
        off, size = got
        stride = 12 if img.machine is Machine.X64 else 8
        n = min(size // stride, (len(data) - off) // stride)
        for k in range(min(n, 24)):
            for j in range(stride // 4):
                lay.add("pe.pdata", f"pdata[{k}].{j}", off + stride * k + 4 * j, 4,
                        (0, 1, 3, 0x7FFFFFFC, 0xFFFFFFFF, *rva_hints))
        lay.tables.append(Table("pdata", off, stride, min(n, 256)))
    # TLS
    got = dir_region(DIR_TLS, "tls")
    if got is not None:
        off, _ = got
        for k, name in enumerate(("StartAddressOfRawData", "EndAddressOfRawData", "AddressOfIndex",
                                  "AddressOfCallBacks")):
            lay.add("pe.tls", f"TLS.{name}", off + ptr * k, ptr,
                    (0, img.image_base, img.image_base + img.size_of_image, 1 << (8 * ptr - 1)))
    # load config, its CFG table, and the hot-patch table it points to
    lc_rva, _ = img.directory(DIR_LOAD_CONFIG)
    lc_off = _file_off(img, lc_rva) if lc_rva else None
    if lc_off is not None:
        off = lc_off
        lc_size = u32(data, off)
        lay.regions.append(("load config", off, min(lc_size, len(data) - off)))
        lay.cuts += [off, off + 4, off + 0x94, off + 0xF0, off + lc_size - 1]
        lay.add_struct("pe.loadcfg", "LoadConfig", off, _LOADCFG[ptr], {
            "Size": _LOADCFG_SIZES[ptr],
            "GuardFlags": (0, 0x100, 0x500, 0x10000500, 0xF0000500, 0x30000500, 0xFFFFFFFF),
            "GuardCFFunctionCount": (0, 1, 0x100000, 0x100001, 0xFFFFFFFF),
            "GuardCFFunctionTable": (0, img.image_base, img.image_base + img.size_of_image - 4),
        })
        for k in range(4, min(lc_size, 0x148), 4):
            lay.add("pe.loadcfg.any", f"LoadConfig+{k:#x}", off + k, 4)
        hp_field = HOTPATCH_TABLE_OFFSET_FIELD[img.machine]
        lay.add("pe.hotpatch", "LoadConfig.HotPatchTableOffset", off + hp_field, 4,
                (0, 1, 4, 0x1000, img.size_of_image - 4, img.size_of_image, 0x7FFFFFFF, 0xFFFFFFFF,
                 *rva_hints))
        lay.add("pe.hotpatch", "LoadConfig.Size", off, 4, (hp_field, hp_field + 3, hp_field + 4))
        hp = u32(data, off + hp_field) if lc_size >= hp_field + 4 else 0
        table = _file_off(img, hp) if hp else None
        if table is not None:
            lay.regions.append(("hot-patch table", table, min(0x100, len(data) - table)))
            for k in range(0, 0x40, 4):
                lay.add("pe.hotpatch", f"HotPatchTable+{k:#x}", table + k, 4)


def _terminator(lay: Layout, img: PEImage, rva: int) -> None:
    off = _file_off(img, rva)
    if off is None:
        return
    nul = img.data.find(b"\0", off, off + 512)
    if nul >= 0:
        lay.terminators.append(nul)


# ======================================================================================
# PDB files (MSF 7.0)
# ======================================================================================

_DBI_HEADER = [("VersionSignature", 0, 4), ("VersionHeader", 4, 4), ("Age", 8, 4),
               ("GlobalStreamIndex", 12, 2), ("BuildNumber", 14, 2), ("PublicStreamIndex", 16, 2),
               ("PdbDllVersion", 18, 2), ("SymRecordStream", 20, 2), ("PdbDllRbld", 22, 2),
               ("ModInfoSize", 24, 4), ("SectionContributionSize", 28, 4),
               ("SectionMapSize", 32, 4), ("SourceInfoSize", 36, 4), ("TypeServerMapSize", 40, 4),
               ("MFCTypeServerIndex", 44, 4), ("OptionalDbgHeaderSize", 48, 4),
               ("ECSubstreamSize", 52, 4), ("Flags", 56, 2), ("Machine", 58, 2)]
_MODI = [("SC.Section", 4, 2), ("SC.Offset", 8, 4), ("SC.Size", 12, 4), ("SC.Module", 20, 2),
         ("Flags", 32, 2), ("ModuleSymStream", 34, 2), ("SymByteSize", 36, 4),
         ("C11ByteSize", 40, 4), ("C13ByteSize", 44, 4), ("SourceFileCount", 48, 2)]
_SC_ENTRY = [("Section", 0, 2), ("Offset", 4, 4), ("Size", 8, 4), ("Characteristics", 12, 4),
             ("ModuleIndex", 16, 2)]
_TPI_HEADER = [("Version", 0, 4), ("HeaderSize", 4, 4), ("TypeIndexBegin", 8, 4),
               ("TypeIndexEnd", 12, 4), ("TypeRecordBytes", 16, 4), ("HashStreamIndex", 20, 2),
               ("HashAuxStreamIndex", 22, 2), ("HashKeySize", 24, 4), ("NumHashBuckets", 28, 4)]
_INFO = [("Version", 0, 4), ("Signature", 4, 4), ("Age", 8, 4), ("Guid.Data1", 12, 4)]
_STREAM_HINTS = (0, 1, 2, 3, 4, 5, 0xFFFE, 0xFFFF)
# Where a type record's size/count numeric leaf starts (body offset) per leaf kind, and
# the numeric leaf kinds (LF_CHAR 0x8000 ... LF_UTF8STRING 0x801B) worth trying there.
_NUMERIC_AT = {0x1504: 16, 0x1505: 16, 0x1506: 8, 0x1503: 8}
NUMERIC_LEAVES = (*range(0x8000, 0x801C), 0x7FFF, 0xFFFF)


class _Stream:
    """Maps offsets inside one MSF stream to file offsets."""

    def __init__(self, blocks: list[int], size: int, bs: int):
        self.blocks, self.size, self.bs = blocks, size, bs

    def at(self, so: int, width: int = 1) -> int | None:
        if so < 0 or so + width > self.size or so // self.bs >= len(self.blocks):
            return None
        if (so % self.bs) + width > self.bs:  # the field straddles two blocks
            return None
        return self.blocks[so // self.bs] * self.bs + so % self.bs


def _add_in(lay: Layout, st: _Stream, group: str, name: str, so: int, width: int,
            hints: tuple[int, ...] = ()) -> None:
    off = st.at(so, width)
    if off is not None:
        lay.add(group, name, off, width, hints)


def pdb_layout(data: bytes) -> Layout:
    from pehotpatch.image.pdb.dbi import parse_dbi
    from pehotpatch.image.pdb.msf import Msf

    lay = Layout("pdb", len(data))
    msf = Msf(data, "<seed>")
    bs = msf.block_size
    sb = msf.superblock
    nstreams = msf.num_streams
    lay.hints = (len(data) // bs, len(data) // bs - 1, sb.num_blocks, bs, nstreams)
    lay.add_struct("pdb.msf", "SuperBlock", 32, [
        ("BlockSize", 0, 4), ("FreeBlockMapBlock", 4, 4), ("NumBlocks", 8, 4),
        ("NumDirectoryBytes", 12, 4), ("Unknown", 16, 4), ("BlockMapAddr", 20, 4)], {
        "BlockSize": (512, 1024, 2048, 4096, 8192, 0, 4095, bs * 2),
        "NumBlocks": (0, 1, sb.num_blocks - 1, sb.num_blocks + 1, len(data) // bs + 2, 0xFFFFFFFF),
        "NumDirectoryBytes": (0, 3, 4, 8, sb.num_directory_bytes - 4, sb.num_directory_bytes + 4,
                              len(data), len(data) + 1, 0xFFFFFFFF),
        "BlockMapAddr": (0, 1, 2, sb.num_blocks - 1, sb.num_blocks, 0xFFFFFFFF),
    })
    lay.cuts += [32, 56, bs, bs * 2, sb.block_map_addr * bs]
    ndir = sb.num_directory_bytes
    map_off = sb.block_map_addr * bs
    dir_blocks = [u32(data, map_off + 4 * i) for i in range(-(-ndir // bs))]
    block_hints = (0, 1, 2, sb.block_map_addr, sb.num_blocks - 1, sb.num_blocks, 0xFFFFFFFF,
                   *dir_blocks[:2])
    for i in range(len(dir_blocks)):
        lay.add("pdb.msf", f"BlockMap[{i}]", map_off + 4 * i, 4, block_hints)
    directory = _Stream(dir_blocks, ndir, bs)
    _add_in(lay, directory, "pdb.directory", "NumStreams", 0, 4,
            (0, 1, 2, 3, 4, 5, nstreams - 1, nstreams + 1, 0x40000000, 0xFFFFFFFF))
    pos = 4 + 4 * nstreams
    streams: list[_Stream] = []
    for i in range(nstreams):
        size = msf.stream_sizes[i]
        _add_in(lay, directory, "pdb.directory", f"StreamSize[{i}]", 4 + 4 * i, 4,
                (0, 1, 0xFFFFFFFF, size - 1, size + 1, size + bs, size * 2, len(data)))
        blocks = msf.stream_blocks(i)
        if blocks:
            for j in (0, len(blocks) - 1):
                _add_in(lay, directory, "pdb.directory", f"Stream[{i}].Block[{j}]", pos + 4 * j, 4,
                        block_hints + (blocks[0] + 1,))
        pos += 4 * len(blocks)
        streams.append(_Stream(blocks, size, bs))
        for b in blocks:
            lay.regions.append((f"stream {i}", b * bs, min(bs, len(data) - b * bs)))
            lay.cuts.append(b * bs)
    for b in dir_blocks:
        lay.regions.append(("directory", b * bs, bs))

    if nstreams > 1:
        st = streams[1]
        for name, so, width in _INFO:
            _add_in(lay, st, "pdb.info", f"Info.{name}", so, width, (0, 1, 20000404, 0xFFFFFFFF))
        _add_in(lay, st, "pdb.info", "NamedStreamMap.StringBytes", 28, 4,
                (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, st.size))
        if st.size >= 32:
            info = msf.stream(1)
            after = 32 + u32(info, 28)
            for k, name in enumerate(("Size", "Capacity", "PresentWords")):
                _add_in(lay, st, "pdb.info", f"NamedStreamMap.{name}", after + 4 * k, 4,
                        (0, 1, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF))
    for idx, what in ((2, "tpi"), (4, "ipi")):
        if idx < nstreams and streams[idx].size >= 56:
            _tpi_layout(lay, msf.stream(idx), streams[idx], f"pdb.{what}")
    if nstreams > 3 and streams[3].size >= 64:
        dbi_bytes = msf.stream(3)
        st = streams[3]
        size_hints = (0, 1, 2, 3, 4, 0xFFFFFFFF, 0x7FFFFFFF, st.size)
        for name, so, width in _DBI_HEADER:
            _add_in(lay, st, "pdb.dbi", f"Dbi.{name}", so, width,
                    _STREAM_HINTS + (nstreams, nstreams - 1) if width == 2 else size_hints)
        dbi = parse_dbi(dbi_bytes, "<seed>")
        _dbi_layout(lay, dbi_bytes, st, nstreams)
        for m in dbi.modules:
            if m.has_symbols and m.sym_stream < nstreams:
                _symbols_in_stream(lay, msf.stream(m.sym_stream), streams[m.sym_stream], 4,
                                   m.sym_byte_size, "pdb.modsyms")
        sh = dbi.debug_stream(5)  # the image's section headers: segment:offset -> RVA
        if sh is not None and sh < nstreams:
            for j in range(min(streams[sh].size // 40, 32)):
                for name, so in (("VirtualSize", 8), ("VirtualAddress", 12)):
                    _add_in(lay, streams[sh], "pdb.sectionheaders", f"SectionHeader[{j}].{name}",
                            40 * j + so, 4, (0, 0x1000, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFF000))
        srs = dbi.header.sym_record_stream
        if srs < nstreams:
            _symbols_in_stream(lay, msf.stream(srs), streams[srs], 0, streams[srs].size,
                               "pdb.globals")
    return lay


def _dbi_layout(lay: Layout, dbi: bytes, st: _Stream, nstreams: int) -> None:
    pos = 64
    end = pos + u32(dbi, 24)
    k = 0
    while pos + 64 <= end:
        for name, off, width in _MODI:
            hints = _STREAM_HINTS + (nstreams,) if name == "ModuleSymStream" else (
                0, 1, 3, 4, 5, 0x7FFFFFFF, 0xFFFFFFFF)
            _add_in(lay, st, "pdb.dbi.modules", f"Module[{k}].{name}", pos + off, width, hints)
        p = pos + 64
        for _ in range(2):  # module name, object name
            nul = dbi.find(b"\0", p, end)
            if nul < 0:
                return
            at = st.at(nul)
            if at is not None:
                lay.terminators.append(at)
            p = nul + 1
        pos = (p + 3) & ~3
        k += 1
    sc_size = u32(dbi, 28)
    if sc_size >= 4:
        version = u32(dbi, end)
        stride = 32 if version == 0xEFFE0000 + 20140516 else 28
        for j in range(min((sc_size - 4) // stride, 64)):
            for name, off, width in _SC_ENTRY:
                _add_in(lay, st, "pdb.dbi.contribs", f"SC[{j}].{name}", end + 4 + stride * j + off,
                        width, (0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
        _add_in(lay, st, "pdb.dbi.contribs", "SC.Version", end, 4,
                (0xEFFE0000 + 19970605, 0xEFFE0000 + 20140516, 0))
    sm = end + sc_size
    _add_in(lay, st, "pdb.dbi", "SectionMap.Count", sm, 2, (0, 1, 0xFFFF))
    # optional debug header: stream numbers of the section headers, OMAP...
    opt_size = u32(dbi, 48)
    opt = 64 + sum(u32(dbi, o) for o in (24, 28, 32, 36, 40, 52))
    if opt_size and opt + opt_size <= len(dbi):
        for j in range(opt_size // 2):
            _add_in(lay, st, "pdb.dbi.debugheader", f"DbgStream[{j}]", opt + 2 * j, 2,
                    _STREAM_HINTS + (nstreams - 1, nstreams, 1, 2, 3))


def _tpi_layout(lay: Layout, tpi: bytes, st: _Stream, group: str) -> None:
    header_size = u32(tpi, 4)
    begin, end_ti, nbytes = u32(tpi, 8), u32(tpi, 12), u32(tpi, 16)
    for name, so, width in _TPI_HEADER:
        _add_in(lay, st, group, f"Header.{name}", so, width,
                (0, 0xFFF, 0x1000, 0x1001, begin + 1, end_ti - 1, end_ti + 1, 0x7FFFFFFF,
                 0xFFFFFFFF, nbytes - 1, nbytes + 4, 56, 55, 57, 20040203, 0xFFFF))
    pos = header_size
    stop = min(len(tpi), header_size + nbytes)
    ti = begin
    records: dict[int, tuple[int, int]] = {}
    while pos + 4 <= stop:
        reclen = u16(tpi, pos)
        if reclen < 2:
            break
        records[ti] = (pos, pos + 2 + reclen)
        _add_in(lay, st, f"{group}.records", f"type {ti:#x}.RecordLength", pos, 2,
                (0, 1, 2, 3, reclen - 2, reclen + 2, reclen + 4, 0xFFFF))
        _add_in(lay, st, f"{group}.records", f"type {ti:#x}.Kind", pos + 2, 2,
                (0x1001, 0x1002, 0x1008, 0x1201, 0x1203, 0x1503, 0x1504, 0x1505, 0x1506, 0x1601,
                 0x1602, 0x1605, 0x150D, 0x1507, 0x1003, 0x1205))
        at = _NUMERIC_AT.get(u16(tpi, pos + 2))
        if at is not None and pos + 4 + at + 2 <= pos + 2 + reclen:
            _add_in(lay, st, f"{group}.numeric", f"type {ti:#x}.numeric", pos + 4 + at, 2,
                    NUMERIC_LEAVES)
        pos += 2 + reclen
        ti += 1
    cut = st.at(header_size)
    if cut is not None:
        lay.cuts.append(cut)
    # Type-index references: any 16-bit-aligned u32 in a record naming an existing type.
    for owner, (rpos, rend) in records.items():
        for so in range(rpos + 4, rend - 3, 2):
            target = u32(tpi, so)
            if begin <= target < ti:
                off = st.at(so, 4)
                if off is None:
                    continue
                f = Field(f"type {owner:#x}+{so - rpos:#x} -> {target:#x}", off, 4,
                          (owner, begin, ti - 1, ti, 0xFFFFFF, 0x7FFFFFFF))
                lay.type_refs.append(TypeRef(f, owner, target))
                lay.add(f"{group}.refs", f.name, off, 4, f.hints)


_PROC_KINDS = frozenset({0x1110, 0x110F, 0x1147, 0x1146, 0x1155, 0x1156})
_DATA_KINDS = frozenset({0x110C, 0x110D, 0x1112, 0x1113})


def _symbols_in_stream(lay: Layout, buf: bytes, st: _Stream | None, start: int, end: int,
                       group: str, base: int = 0) -> None:
    """Fields of the symbol records in ``buf[start:end]`` (a PDB stream via ``st``, or a
    COFF section's bytes at file offset ``base`` when ``st`` is None)."""

    def at(so: int, width: int) -> int | None:
        if st is not None:
            return st.at(so, width)
        return base + so if so + width <= len(buf) else None

    def add(name: str, so: int, width: int, hints: tuple[int, ...]) -> None:
        off = at(so, width)
        if off is not None:
            lay.add(group, name, off, width, hints)

    pos = start
    offsets: list[int] = []
    end = min(end, len(buf))
    while pos + 4 <= end and len(offsets) < 3000:
        reclen, kind = struct.unpack_from("<HH", buf, pos)
        if reclen < 2 or pos + 2 + reclen > end:
            break
        offsets.append(pos)
        pos += 2 + reclen
    ptr_hints = (0, 1, 4, end, end - 4, 0xFFFFFFFF, *offsets[:3], *offsets[-3:])
    for pos in offsets:
        reclen, kind = struct.unpack_from("<HH", buf, pos)
        body = pos + 4
        add(f"sym@{pos:#x}.RecordLength", pos, 2, (0, 1, 2, 3, reclen - 1, reclen + 2, 0xFFFF))
        add(f"sym@{pos:#x}.Kind", pos + 2, 2, (0x0006, 0x114F, 0x1110, 0x1147, 0x110D, 0x114D,
                                                 0x114E, 0x1169, 0x113C, 0x1102, 0x1103))
        if kind in _PROC_KINDS:
            for name, o, w in (("Parent", 0, 4), ("End", 4, 4), ("Next", 8, 4), ("Length", 12, 4),
                               ("TypeIndex", 24, 4), ("Offset", 28, 4), ("Segment", 32, 2)):
                add(f"proc@{pos:#x}.{name}", body + o, w,
                    ptr_hints if o < 12 else (0, 1, 0x1000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
        elif kind in _DATA_KINDS:
            for name, o, w in (("TypeIndex", 0, 4), ("Offset", 4, 4), ("Segment", 8, 2)):
                add(f"data@{pos:#x}.{name}", body + o, w, (0, 0x1000, 0x1001, 0x7FFFFFFF, 0xFFFF))
        else:
            for o in range(0, min(reclen - 2, 16), 4):
                add(f"sym@{pos:#x}+{o}", body + o, 4, ptr_hints)
        rec_end = pos + 2 + reclen
        nul = buf.rfind(b"\0", body, rec_end)
        if nul >= 0:
            off = at(nul, 1)
            if off is not None:
                lay.terminators.append(off)


# ======================================================================================
# COFF objects
# ======================================================================================


def coff_layout(data: bytes) -> Layout:
    from pehotpatch.image.coff import parse_object

    lay = Layout("coff", len(data))
    obj = parse_object(data, "<seed>")
    if obj.is_bigobj:
        return lay  # the seeds are regular objects; bigobj gets the generic mutations
    nsec, symtab, nsyms, opt_size = u16(data, 2), u32(data, 8), u32(data, 12), u16(data, 16)
    lay.hints = (len(data), len(data) - 1, symtab, nsyms, nsec)
    lay.add_struct("coff.header", "FileHeader", 0, _FILE_HEADER, {
        "NumberOfSections": (0, 1, nsec - 1, nsec + 1, 0xFFFF),
        "NumberOfSymbols": (0, 1, nsyms - 1, nsyms + 1, 0x4000000, 0xFFFFFFFF),
        "PointerToSymbolTable": (0, 1, len(data), len(data) - 18, symtab + 1),
        "SizeOfOptionalHeader": (0, 1, 0xFFFF),
        "Machine": (0x8664, 0x14C, 0xAA64, 0, 0x1234),
    })
    table = 20 + opt_size
    lay.tables.append(Table("SectionTable", table, 40, nsec))
    for s in obj.sections:
        base = table + 40 * (s.number - 1)
        lay.add_struct("coff.sections", f"Section[{s.number}:{s.name}]", base, _SECTION, {
            "SizeOfRawData": (0, 1, 4, s.size_of_raw_data + 1, len(data)),
            "PointerToRawData": (0, len(data) - s.size_of_raw_data, len(data)),
            "NumberOfRelocations": (0, 1, 0xFFFF, s.number_of_relocations + 1),
            "PointerToRelocations": (0, len(data) - 10, len(data)),
            "Characteristics": (0, 0x80, 0x1000, 0x01000000, 0x42100040),
        })
        lay.add("coff.sections", f"Section[{s.number}].Name", base, 8)
        if s.pointer_to_raw_data and s.size_of_raw_data:
            lay.regions.append((f"section {s.name}", s.pointer_to_raw_data, s.size_of_raw_data))
            lay.cuts += [s.pointer_to_raw_data, s.pointer_to_raw_data + s.size_of_raw_data - 1]
        for k in range(min(s.number_of_relocations, 8)):
            r = s.pointer_to_relocations + 10 * k
            lay.add("coff.relocs", f"Section[{s.number}].reloc[{k}].VirtualAddress", r, 4,
                    (0, s.size_of_raw_data, 0xFFFFFFFF))
            lay.add("coff.relocs", f"Section[{s.number}].reloc[{k}].SymbolTableIndex", r + 4, 4,
                    (0, nsyms - 1, nsyms, 0xFFFFFFFF))
        if s.name == ".debug$T":
            _debug_types(lay, data, s.pointer_to_raw_data, s.size_of_raw_data)
        elif s.name == ".debug$S":
            _debug_symbols(lay, data, s.pointer_to_raw_data, s.size_of_raw_data)
    if symtab:
        lay.regions.append(("symbol table", symtab, 18 * nsyms))
        lay.cuts += [symtab, symtab + 18 * nsyms, symtab + 18 * nsyms + 4]
        lay.tables.append(Table("symbols", symtab, 18, min(nsyms, 512)))
        for sym in obj.symbols[:400]:
            base = symtab + 18 * sym.index
            lay.add_struct("coff.symbols", f"Symbol[{sym.index}]", base, [
                ("Name.Offset", 4, 4), ("Value", 8, 4), ("SectionNumber", 12, 2), ("Type", 14, 2),
                ("StorageClass", 16, 1), ("NumberOfAuxSymbols", 17, 1)], {
                "SectionNumber": (0, 0xFFFF, 0xFFFE, nsec, nsec + 1, 0x7FFF),
                "NumberOfAuxSymbols": (0, 1, 2, 0xFF),
                "StorageClass": (2, 3, 103, 105, 0xFF),
                "Name.Offset": (0, 3, 4, len(data)),
            })
        strtab = symtab + 18 * nsyms
        lay.add("coff.symbols", "StringTable.Size", strtab, 4,
                (0, 1, 3, 4, len(data) - strtab, len(data) - strtab + 1, 0xFFFFFFFF))
    return lay


def _debug_types(lay: Layout, data: bytes, off: int, size: int) -> None:
    lay.add("coff.debugT", ".debug$T.Signature", off, 4, (CV_SIGNATURE_C13, 1, 0))
    pos, end, ti = off + 4, off + size, 0x1000
    records: dict[int, tuple[int, int]] = {}
    while pos + 4 <= end:
        reclen = u16(data, pos)
        if reclen < 2:
            break
        records[ti] = (pos, pos + 2 + reclen)
        lay.add("coff.debugT", f"type {ti:#x}.RecordLength", pos, 2, (0, 1, 2, reclen + 2, 0xFFFF))
        lay.add("coff.debugT", f"type {ti:#x}.Kind", pos + 2, 2,
                (0x1501, 0x1515, 0x1002, 0x1008, 0x1203, 0x1505, 0x1601, 0xFFFF))
        at = _NUMERIC_AT.get(u16(data, pos + 2))
        if at is not None and pos + 4 + at + 2 <= pos + 2 + reclen:
            lay.add("coff.debugT.numeric", f"type {ti:#x}.numeric", pos + 4 + at, 2, NUMERIC_LEAVES)
        pos += 2 + reclen
        ti += 1
    for owner, (rpos, rend) in records.items():
        for p in range(rpos + 4, rend - 3, 2):
            target = u32(data, p)
            if 0x1000 <= target < ti:
                f = Field(f"type {owner:#x}+{p - rpos:#x} -> {target:#x}", p, 4,
                          (owner, 0x1000, ti - 1, ti, 0xFFFFFF))
                lay.type_refs.append(TypeRef(f, owner, target))
                lay.add("coff.debugT.refs", f.name, p, 4, f.hints)


def _debug_symbols(lay: Layout, data: bytes, off: int, size: int) -> None:
    lay.add("coff.debugS", ".debug$S.Signature", off, 4, (CV_SIGNATURE_C13, 1, 0))
    pos, end = off + 4, off + size
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<II", data, pos)
        lay.add("coff.debugS", f"subsection@{pos - off:#x}.Kind", pos, 4,
                (0xF1, 0xF2, 0xF3, 0xF4, 0x800000F1, 0))
        lay.add("coff.debugS", f"subsection@{pos - off:#x}.Length", pos + 4, 4,
                (0, 1, 3, length + 1, length + 4, end - pos - 8, end - pos - 7, 0xFFFFFFFF))
        if kind == DEBUG_S_SYMBOLS and pos + 8 + length <= end:
            sub = data[pos + 8 : pos + 8 + length]
            _symbols_in_stream(lay, sub, None, 0, length, "coff.debugS.symbols", base=pos + 8)
        pos += 8 + ((length + 3) & ~3)


def describe(lay: Layout) -> dict[str, Any]:
    """Counts per group (for ``python -m fuzz layout FILE``)."""
    return {"kind": lay.kind, "size": lay.size, "groups": {k: len(v) for k, v in lay.groups.items()},
            "regions": len(lay.regions), "cuts": len(lay.cuts), "tables": len(lay.tables),
            "terminators": len(lay.terminators), "type_refs": len(lay.type_refs)}
