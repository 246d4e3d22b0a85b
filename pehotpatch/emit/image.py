"""Writing a hot-patch table into a copy of an image: one new read-only section, the load
config pointing at it, the headers and the PE checksum updated, everything else intact.

All edits are made on the file's bytes through the declarations of
:mod:`pehotpatch.image.headers`; no section moves, no directory is rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pehotpatch.errors import InputError
from pehotpatch.image.checksum import pe_checksum
from pehotpatch.image.headers import (
    DATA_DIRECTORY,
    DOS_HEADER,
    FILE_HEADER,
    OPTIONAL_HEADER32,
    OPTIONAL_HEADER64,
    SECTION_HEADER,
    load_config_struct,
    min_hotpatch_load_config,
)
from pehotpatch.image.pe import DIR_LOAD_CONFIG, DIR_SECURITY, PEImage

SCN_CNT_INITIALIZED_DATA = 0x40
SCN_MEM_READ = 0x40000000

#: What lld-link and link.exe take to give an image a load config large enough.
LOAD_CONFIG_FIX = ("define _load_config_used (x86: __load_config_used) as an IMAGE_LOAD_CONFIG_DIRECTORY "
                   "of the full size (0x140 bytes on x64/ARM64, 0xC0 on x86) in one of the image's objects, "
                   "or link with the CRT's load config, and relink")


@dataclass
class Written:
    data: bytes
    table_rva: int
    section_name: str
    notes: list[str] = field(default_factory=list)


def _align(v: int, a: int) -> int:
    return (v + a - 1) // a * a if a else v


def check_writable(img: PEImage, *, keep_signature: bool = False) -> None:
    """Refuse an image the table cannot be written into (before any work)."""
    path = img.path
    lc = img.load_config
    ptr = img.machine.pointer_size
    need = min_hotpatch_load_config(ptr)
    if lc is None:
        raise InputError(f"the image has no load config directory, so it cannot carry a hot-patch table: {LOAD_CONFIG_FIX}", path)
    if lc.size < need:
        raise InputError(f"its load config Size {lc.size:#x} does not reach HotPatchTableOffset (needs at least {need:#x}): {LOAD_CONFIG_FIX}", path)
    if ptr == 8 and lc.fields.get("CHPEMetadataPointer", 0):
        raise InputError("its load config has a CHPEMetadataPointer (a hybrid ARM64EC/CHPE image); the loader refuses such an image as a hot patch", path)
    if lc.hotpatch_table_offset:
        raise InputError(f"it already carries a hot-patch table (HotPatchTableOffset {lc.hotpatch_table_offset:#x}); write the final image from the intermediate", path)
    sa, fa = img.section_alignment, img.file_alignment
    if sa & (sa - 1) or fa & (fa - 1) or not 0x200 <= fa <= 0x10000 or sa < fa:
        raise InputError(f"its SectionAlignment {sa:#x} / FileAlignment {fa:#x} are not what the loader takes (powers "
                         f"of two, FileAlignment 0x200-0x10000 and not above SectionAlignment); no section can be added", path)
    if img.has_signature and keep_signature:
        raise InputError("it is Authenticode-signed and --keep-signature was given; a new section invalidates the signature (sign the final image afterwards instead)", path)
    _section_table_room(img)


def _section_table_room(img: PEImage) -> int:
    """File offset for one more section header; refused when the headers have no room."""
    d = img.data
    lfanew = DOS_HEADER.read(d, "e_lfanew") or 0
    fh = lfanew + 4
    opt_size = FILE_HEADER.read(d, "SizeOfOptionalHeader", fh) or 0
    nsec = FILE_HEADER.read(d, "NumberOfSections", fh) or 0
    table = fh + FILE_HEADER.size + opt_size
    new = table + nsec * SECTION_HEADER.size
    first_raw = min((s.raw_offset for s in img.sections if s.raw_size), default=img.size_of_headers)
    limit = min(img.size_of_headers, first_raw)
    if new + SECTION_HEADER.size > limit or any(d[new:new + SECTION_HEADER.size]):
        raise InputError(f"its headers have no room for one more section header ({limit - new} bytes free after the "
                         f"section table, {SECTION_HEADER.size} needed); relink with a larger header area "
                         f"(e.g. fewer sections, or /ALIGN so SizeOfHeaders grows)", img.path)
    return new


def write_table(img: PEImage, make_table: Callable[[int], bytes], *, name: str, keep_signature: bool = False) -> Written:
    """A copy of ``img`` with a new read-only section ``name`` holding the table that
    ``make_table(table_rva)`` returns (the table may depend on where it lands)."""
    check_writable(img, keep_signature=keep_signature)
    notes: list[str] = []
    data = bytearray(img.data)
    pe32_plus = img.is_pe32_plus
    opt = OPTIONAL_HEADER64 if pe32_plus else OPTIONAL_HEADER32
    lfanew = DOS_HEADER.read(data, "e_lfanew") or 0
    fh = lfanew + 4
    oh = fh + FILE_HEADER.size
    dirs = oh + opt.size

    # The signature cannot survive a new section: remove the certificate and its directory.
    sec_dir = DATA_DIRECTORY.decode(data, dirs + 8 * DIR_SECURITY)
    cert_off, cert_size = sec_dir.get("VirtualAddress", 0), sec_dir.get("Size", 0)
    if cert_off and cert_size:
        if cert_off <= len(data) <= cert_off + cert_size + 8:  # the certificate ends the file
            del data[cert_off:]
        DATA_DIRECTORY.pack_into(data, dirs + 8 * DIR_SECURITY, {"VirtualAddress": 0, "Size": 0})
        notes.append("the Authenticode signature was removed (a new section invalidates it); sign the final image again")

    sec_hdr = _section_table_room(img)
    sect_align, file_align = img.section_alignment, img.file_alignment
    rva = _align(max(s.rva + max(s.virtual_size, s.raw_size) for s in img.sections), sect_align)
    payload = make_table(rva)
    raw_off = _align(len(data), file_align)
    raw_size = _align(len(payload), file_align)
    data += b"\0" * (raw_off - len(data))
    data += payload + b"\0" * (raw_size - len(payload))

    raw_name = name.encode("ascii")[:8].ljust(8, b"\0")
    data[sec_hdr:sec_hdr + 8] = raw_name
    SECTION_HEADER.pack_into(data, sec_hdr, {
        "VirtualSize": len(payload), "VirtualAddress": rva, "SizeOfRawData": raw_size,
        "PointerToRawData": raw_off, "Characteristics": SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ,
    })
    nsec = FILE_HEADER.read(data, "NumberOfSections", fh) or 0
    FILE_HEADER.pack_into(data, fh, {"NumberOfSections": nsec + 1})
    init = opt.read(data, "SizeOfInitializedData", oh) or 0
    opt.pack_into(data, oh, {"SizeOfImage": _align(rva + len(payload), sect_align),
                             "SizeOfInitializedData": (init + raw_size) & 0xFFFFFFFF})

    # The load config: HotPatchTableOffset, and a directory size equal to its Size.
    lc = img.load_config
    assert lc is not None
    lc_off = img.rva_to_offset(lc.rva)
    if lc_off is None:
        raise InputError(f"its load config at RVA {lc.rva:#x} has no file data", img.path)
    load_config_struct(img.machine.pointer_size).pack_into(data, lc_off, {"HotPatchTableOffset": rva})
    if lc.directory_size != lc.size:
        DATA_DIRECTORY.pack_into(data, dirs + 8 * DIR_LOAD_CONFIG, {"Size": lc.size})
        notes.append(f"the load config directory size {lc.directory_size:#x} was set to its Size field {lc.size:#x}, as the loader requires")

    ck = oh + opt.offset("CheckSum")
    opt.pack_into(data, oh, {"CheckSum": pe_checksum(data, ck)})
    return Written(bytes(data), rva, name, notes)
