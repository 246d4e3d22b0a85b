"""The layout of a COFF object: file header, section headers (from their declarations in
:mod:`pehotpatch.image.headers`), relocations, the symbol and string tables, and the
CodeView records of ``.debug$T`` and ``.debug$S``.
"""

from __future__ import annotations

import struct

from pehotpatch.image.codeview.subsections import CV_SIGNATURE_C13, DEBUG_S_SYMBOLS
from pehotpatch.image.headers import FILE_HEADER, SECTION_HEADER

from .layout_model import Field, Layout, Table, TypeRef, u16, u32
from .layout_pdb import NUMERIC_AT, NUMERIC_LEAVES, symbols_in_stream


def coff_layout(data: bytes) -> Layout:
    from pehotpatch.image.coff import parse_object

    lay = Layout("coff", len(data))
    obj = parse_object(data, "<seed>")
    if obj.is_bigobj:
        return lay  # the seeds are regular objects; bigobj gets the generic mutations
    nsec, symtab, nsyms, opt_size = u16(data, 2), u32(data, 8), u32(data, 12), u16(data, 16)
    lay.hints = (len(data), len(data) - 1, symtab, nsyms, nsec)
    lay.add_decl("coff.header", "FileHeader", 0, FILE_HEADER, hints={
        "NumberOfSections": (0, 1, nsec - 1, nsec + 1, 0xFFFF),
        "NumberOfSymbols": (0, 1, nsyms - 1, nsyms + 1, 0x4000000, 0xFFFFFFFF),
        "PointerToSymbolTable": (0, 1, len(data), len(data) - 18, symtab + 1),
        "SizeOfOptionalHeader": (0, 1, 0xFFFF),
        "Machine": (0x8664, 0x14C, 0xAA64, 0, 0x1234),
    })
    table = FILE_HEADER.size + opt_size
    lay.tables.append(Table("SectionTable", table, SECTION_HEADER.size, nsec))
    for s in obj.sections:
        base = table + SECTION_HEADER.size * (s.number - 1)
        lay.add_decl("coff.sections", f"Section[{s.number}:{s.name}]", base, SECTION_HEADER, hints={
            "SizeOfRawData": (0, 1, 4, s.size_of_raw_data + 1, len(data)),
            "PointerToRawData": (0, len(data) - s.size_of_raw_data, len(data)),
            "NumberOfRelocations": (0, 1, 0xFFFF, s.number_of_relocations + 1),
            "PointerToRelocations": (0, len(data) - 10, len(data)),
            "Characteristics": (0, 0x80, 0x1000, 0x01000000, 0x42100040),
        })
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
        at = NUMERIC_AT.get(u16(data, pos + 2))
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
            symbols_in_stream(lay, sub, None, 0, length, "coff.debugS.symbols", base=pos + 8)
        pos += 8 + ((length + 3) & ~3)
