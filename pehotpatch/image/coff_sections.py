"""The section table of a COFF object: section headers (long names through the string
table, base-64 ones for /bigobj), raw data and relocations (with the extended count of
IMAGE_SCN_LNK_NRELOC_OVFL).  :class:`SectionHeader` also serves the copy of an image's
section headers that a PDB keeps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pehotpatch.errors import FormatError

from .codeview._binary import cstring

IMAGE_SCN_CNT_CODE = 0x00000020
IMAGE_SCN_CNT_UNINITIALIZED_DATA = 0x00000080
IMAGE_SCN_LNK_COMDAT = 0x00001000
IMAGE_SCN_LNK_NRELOC_OVFL = 0x01000000

_SECTION_HEADER = struct.Struct("<8sIIIIIIHHI")
SECTION_HEADER_SIZE = _SECTION_HEADER.size
_RELOC = struct.Struct("<IIH")


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


def parse_sections(
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

