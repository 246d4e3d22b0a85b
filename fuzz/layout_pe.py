"""The layout of a PE image: headers, data directories, section table, the directories
pehp reads, the load config and the hot-patch table it points to.

The DOS, COFF and optional headers, the data directories, the section headers and the
load config come from their declarations (:mod:`pehotpatch.image.headers`): every
declared field is a field here, with values worth trying for those pehp checks.
"""

from __future__ import annotations

import struct

from pehotpatch.image.headers import (
    DATA_DIRECTORY,
    DOS_HEADER,
    FILE_HEADER,
    LOAD_CONFIG32,
    LOAD_CONFIG64,
    OPTIONAL_HEADER32,
    OPTIONAL_HEADER64,
    SECTION_HEADER,
    load_config_struct,
)
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
from pehotpatch.structs import Struct
from pehotpatch.table.decode import read_table
from pehotpatch.table.format import HOT_PATCH_BASE, HOT_PATCH_INFO

from .layout_model import Layout, Table, u32

_EXPORT_DIR = [("Name", 12, 4), ("Base", 16, 4), ("NumberOfFunctions", 20, 4),
               ("NumberOfNames", 24, 4), ("AddressOfFunctions", 28, 4),
               ("AddressOfNames", 32, 4), ("AddressOfNameOrdinals", 36, 4)]
_IMPORT_DESC = [("OriginalFirstThunk", 0, 4), ("Name", 12, 4), ("FirstThunk", 16, 4)]
_DELAY_DESC = [("Attributes", 0, 4), ("DllNameRVA", 4, 4), ("ModuleHandleRVA", 8, 4),
               ("ImportAddressTableRVA", 12, 4), ("ImportNameTableRVA", 16, 4)]
_DEBUG_DIR = [("Type", 12, 4), ("SizeOfData", 16, 4), ("AddressOfRawData", 20, 4),
              ("PointerToRawData", 24, 4)]
# IMAGE_LOAD_CONFIG_DIRECTORY fields pehp reads or that guard/hot-patch code relies on
# The load config fields around whose ends the Size field is worth cutting (Size must
# cover HotPatchTableOffset for a hot-patch image)
_LOADCFG_SIZE_FIELDS = ("SecurityCookie", "GuardCFCheckFunctionPointer", "GuardCFFunctionTable",
                        "GuardCFFunctionCount", "GuardFlags", "HotPatchTableOffset")


def _loadcfg_sizes(decl: Struct) -> tuple[int, ...]:
    """Load config Size values worth trying: around the ends of the fields pehp reads."""
    sizes = {0, 4, decl.size, decl.size + 8, 0x200, 0x1000, 0xFFFF, 0x10000, 0x10001}
    for name in _LOADCFG_SIZE_FIELDS:
        f = decl.field(name)
        sizes |= {f.offset, f.end - 1, f.end}
    return tuple(sorted(sizes))


def pe_layout(data: bytes) -> Layout:
    lay = Layout("pe", len(data))
    img = parse_pe(data, "<seed>")
    lfanew = u32(data, DOS_HEADER.offset("e_lfanew"))
    fh = lfanew + 4
    opt = fh + FILE_HEADER.size
    opt_size = FILE_HEADER.decode(data, fh)["SizeOfOptionalHeader"]
    plus = img.is_pe32_plus
    opt_decl = OPTIONAL_HEADER64 if plus else OPTIONAL_HEADER32
    sec_off = opt + opt_size
    nsec = len(img.sections)
    ends = sorted({s.rva + s.size for s in img.sections} | {s.rva for s in img.sections})
    lay.hints = (len(data), len(data) - 1, img.size_of_image, img.size_of_image - 1,
                 img.size_of_headers, *ends)
    lay.add_decl("pe.dos", "", 0, DOS_HEADER, hints={
        "e_lfanew": (0, 0x3C, 0x40, lfanew - 4, lfanew + 4, len(data) - 24, len(data) - 4, len(data),
                     0x80000000),
        "e_magic": (0x5A4D, 0x4D5A),
    })
    lay.add("pe.dos", "Signature", lfanew, 4, (0x4550, 0x00455000))
    lay.add_decl("pe.coff", "FileHeader", fh, FILE_HEADER, hints={
        "NumberOfSections": (0, 1, nsec - 1, nsec + 1, 95, 96, 97, 0xFFFF),
        "SizeOfOptionalHeader": (0, OPTIONAL_HEADER32.size - 1, OPTIONAL_HEADER32.size,
                                 OPTIONAL_HEADER64.size - 1, OPTIONAL_HEADER64.size, opt_size - 8,
                                 opt_size + 8, opt_size + SECTION_HEADER.size, 0xFFFF),
        "Machine": (0x14C, 0x8664, 0xAA64, 0x1C4, 0xA641, 0),
        "Characteristics": (0, 0x2000, 0x2022, 0x0102),
        "PointerToSymbolTable": (len(data) - 18, len(data) - 100, sec_off,
                                 *(s.raw_offset for s in img.sections if s.raw_size)),
        "NumberOfSymbols": (1, 2, 10, 1000, 10_000_001),
    })
    lay.add_decl("pe.optional", "Optional", opt, opt_decl, min(opt_size, opt_decl.size), hints={
        "Magic": (0x10B, 0x20B, 0x107),
        "SizeOfHeaders": (0, 0x200, 0x400, len(data), len(data) + 1, 0xFFFFFFFF),
        "SectionAlignment": (0, 1, 0x200, 0x1000, 0x10000),
        "FileAlignment": (0, 1, 0x200, 0x1000),
        "ImageBase": (0, 0x180000000, 1 << 63) if plus else (0, 0x10000000, 0x80000000),
        "NumberOfRvaAndSizes": (0, 1, 5, 6, 10, 11, 13, 14, 16, 17, 0x100, 0xFFFFFFFF),
    })
    dd_off = opt + opt_decl.size
    ndirs = min(u32(data, opt + opt_decl.offset("NumberOfRvaAndSizes")), 16)
    lay.cuts += [DOS_HEADER.size, opt, opt + OPTIONAL_HEADER32.size, dd_off, sec_off,
                 sec_off + SECTION_HEADER.size * nsec, img.size_of_headers]
    # any directory may be pointed at another one's bytes (an import table read as delay
    # imports, relocations read as .pdata...)
    others = tuple(v for rva, size in img.data_directories for v in (rva, size) if v)
    dir_hints = (*others, 0, 4, 8, 0x10, 0x1000, img.size_of_headers - 8, img.size_of_image,
                 img.size_of_image - 4, len(data), 0xFFFFFFF0, *ends)
    for i in range(ndirs):
        lay.add_decl("pe.dirs", f"DataDirectory[{i}]", dd_off + DATA_DIRECTORY.size * i, DATA_DIRECTORY,
                     hints={"VirtualAddress": dir_hints, "Size": dir_hints})
    lay.tables.append(Table("DataDirectory", dd_off, DATA_DIRECTORY.size, ndirs))
    lay.tables.append(Table("SectionTable", sec_off, SECTION_HEADER.size, nsec))
    for i, s in enumerate(img.sections):
        base = sec_off + SECTION_HEADER.size * i
        lay.add_decl("pe.sections", f"Section[{i}:{s.name}]", base, SECTION_HEADER, hints={
            "VirtualSize": (0, s.raw_size, s.virtual_size + 1, 0x40000000, 0x40000001),
            "SizeOfRawData": (0, s.virtual_size, s.raw_size + 1, len(data) - s.raw_offset,
                              len(data) - s.raw_offset + 1),
            "PointerToRawData": (0, len(data) - s.raw_size, len(data), s.raw_offset + 1),
            "VirtualAddress": (0, img.size_of_image, img.size_of_image + 0x1000),
            "Characteristics": (0, 0x20, 0x60000020, 0xC0000040, 0xE0000060, 0x02000000),
        })
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
        decl = load_config_struct(ptr)
        lay.regions.append(("load config", off, min(lc_size, len(data) - off)))
        lay.cuts += [off, off + 4, off + LOAD_CONFIG32.offset("HotPatchTableOffset"),
                     off + LOAD_CONFIG64.offset("HotPatchTableOffset"), off + lc_size - 1]
        lay.add_decl("pe.loadcfg", "LoadConfig", off, decl, lc_size, hints={
            "Size": _loadcfg_sizes(decl),
            "GuardFlags": (0, 0x100, 0x500, 0x10000500, 0xF0000500, 0x30000500, 0xFFFFFFFF),
            "GuardCFFunctionCount": (0, 1, 0x100000, 0x100001, 0xFFFFFFFF),
            "GuardCFFunctionTable": (0, img.image_base, img.image_base + img.size_of_image - 4),
        })
        for k in range(4, min(lc_size, decl.size + 8), 4):
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
            _hotpatch_table(lay, img, table)


def _hotpatch_table(lay: Layout, img: PEImage, table: int) -> None:
    """The hot-patch table's fields from its declarations (pehotpatch.table.format): the
    header, the base descriptor, every chunk header and record word, each record a table
    entry (swapped and duplicated by the table mutator)."""
    rd = read_table(img)
    size = rd.size or 0x48
    soi = img.size_of_image
    lay.regions.append(("hot-patch table (Size)", table, min(size, len(img.data) - table)))
    lay.add_decl("pe.hotpatch", "HotPatchInfo", table, HOT_PATCH_INFO, hints={
        "Version": (0, 1, 2, 3, 4, 5, 0xFFFFFFFF),
        "Size": (0, 19, 20, 36, size - 4, size - 1, size + 4, soi, 0xFFFFFFFF),
        "SequenceNumber": (0, 1, 2, 0xFFFFFFFF),
        "BaseImageList": (0, size - 4, size, 0xFFFFFFFC),
        "BaseImageCount": (0, 1, 2, 0xFFFFFFFF),
        "ExtraPatchSize": (0, 1, 2, 64, 65, 0x3FFFFFFF, 0xFFFFFFFF),
        "Flags": (0, 2, 0x80),
    })
    if rd.table is None or not rd.info_fields:
        return
    lst = rd.info_fields.get("BaseImageList", 0)
    boff = struct.unpack_from("<I", rd.raw, lst)[0] if lst + 4 <= len(rd.raw) else None
    lay.add("pe.hotpatch", "BaseImageList[0]", table + lst, 4, (0, size - 32, size, 0xFFFFFFFF))
    if boff is not None:
        lay.add_decl("pe.hotpatch", "HotPatchBase", table + boff, HOT_PATCH_BASE, hints={
            "Flags": (0, 1, 2, 4, 8, 0x10, 0x14, 0x1F, 0x20),
            "PatchTable": (0, size - 4, size, 0xFFFFFFFF),
            "OriginalTimeDateStamp": (0, img.timestamp),
        })
    extra = rd.table.extra_words
    stride = 4 * (2 + extra)
    for i, c in enumerate(rd.table.chunks):
        hdr = c.header | (0x40000000 if c.obligatory else 0) | c.reserved
        lay.add("pe.hotpatch.chunks", f"Chunk[{i}].Header", table + c.offset, 4, (
            0, hdr ^ 0x80000000, hdr | 0x40000000, hdr | 0x1000, (hdr & ~0xFFF) | 0xFFF, hdr + 1, hdr - 1,
            0x8002C001, 0x0002C001, 0x0005C001, 0x8003C001, 0x8007C001, 0xFFFFFFFF))
        first = table + c.offset + 4
        lay.tables.append(Table(f"HotPatchChunk[{i}]", first, stride, len(c.records)))
        for j in range(min(len(c.records), 256)):
            at = first + j * stride
            lay.add("pe.hotpatch.records", f"Chunk[{i}].Record[{j}].Site", at, 4,
                    (0, 0xF, 0x10, soi - 4, soi, 0xFFFFFFFA))
            lay.add("pe.hotpatch.records", f"Chunk[{i}].Record[{j}].Target", at + 4, 4,
                    (0, soi - 8, soi, 0xFFFFFFFF))
            for k in range(extra):
                lay.add("pe.hotpatch.records", f"Chunk[{i}].Record[{j}].Extra[{k}]", at + 8 + 4 * k, 4,
                        (0, 0x9066, 0xFF8B, 0xFFFFFFFF))


def _terminator(lay: Layout, img: PEImage, rva: int) -> None:
    off = _file_off(img, rva)
    if off is None:
        return
    nul = img.data.find(b"\0", off, off + 512)
    if nul >= 0:
        lay.terminators.append(nul)
