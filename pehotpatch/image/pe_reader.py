"""Reading a PE image: the headers and the section table, then every directory.

Header fields are decoded from their declarations in :mod:`pehotpatch.image.headers`;
every offset and count is checked against the file before use.  Reading does not
import LIEF (its import alone costs about half a second); LIEF is for writing.  Any
malformed input raises :class:`~pehotpatch.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pehotpatch.errors import FormatError, InputError, read_capped
from pehotpatch.image import pe_directories as dirs
from pehotpatch.image import pe_imports
from pehotpatch.image.coff_symtab import SYMBOL, CoffSymbol, iter_symbols, string_table
from pehotpatch.image.headers import (
    DATA_DIRECTORY,
    DOS_HEADER,
    FILE_HEADER,
    OPTIONAL_HEADER32,
    OPTIONAL_HEADER64,
    SECTION_HEADER,
)
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import MAX_FILE_SIZE, MAX_SECTIONS, PEImage, Relocations, Section
from pehotpatch.structs import Struct

_PE_SIGNATURE_SIZE = 4
_SECTION_NAME = SECTION_HEADER.field("Name0")
_IMAGE_FILE_DLL = 0x2000
_MAX_COFF_SYMBOLS = 10_000_000


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
    img, symbol_table = _parse_headers(bytes(data), path)
    img.relocations = dirs.relocations(img)
    img.functions = dirs.pdata(img)
    img.coff_symbols = _coff_symbols(img, *symbol_table)
    img.debug_entries = dirs.debug_entries(img)
    img.codeview = dirs.codeview(img)
    img.ex_dll_characteristics = dirs.ex_dll_characteristics(img)
    img.has_signature = dirs.has_signature(img)
    img.resource_digest = dirs.resource_digest(img)
    img.tls_callbacks = dirs.tls_callbacks(img)
    pe_imports.read_exports(img)
    pe_imports.read_imports(img)
    pe_imports.read_delay_imports(img)
    img.load_config = dirs.load_config(img)
    return img


def _field(d: bytes, decl: Struct, name: str, base: int, what: str, path: str) -> int:
    """One header field at ``base``, or a "truncated" error naming ``what``."""
    value = decl.read(d, name, base)
    if value is None:
        raise FormatError(f"truncated: {what} at file offset {base + decl.offset(name):#x} runs past end of file",
                          path)
    return value


def _parse_headers(d: bytes, path: str) -> tuple[PEImage, tuple[int, int]]:
    """The image with its headers and sections, and where its COFF symbol table is."""
    def fail(msg: str) -> FormatError:
        return FormatError(msg, path)

    if len(d) < DOS_HEADER.size:
        raise fail("not a PE image (file too small for a DOS header)")
    if d[:2] != b"MZ":
        raise fail("not a PE image (no MZ signature)")
    lfanew = _field(d, DOS_HEADER, "e_lfanew", 0, "e_lfanew", path)
    fh_off = lfanew + _PE_SIGNATURE_SIZE
    opt = fh_off + FILE_HEADER.size
    if opt > len(d):
        raise fail(f"truncated: PE header offset {lfanew:#x} is past end of file")
    if d[lfanew : lfanew + 4] != b"PE\0\0":
        raise fail("not a PE image (no PE signature)")
    fh = FILE_HEADER.decode(d, fh_off)
    mach, nsec, opt_size = fh["Machine"], fh["NumberOfSections"], fh["SizeOfOptionalHeader"]
    machine = Machine.from_coff(mach)
    if machine is None:
        raise fail(f"unsupported machine {mach:#06x} (pehp handles x64, x86 and ARM64)")
    if nsec == 0 or nsec > MAX_SECTIONS:
        raise fail(f"implausible section count {nsec}")
    magic = _field(d, OPTIONAL_HEADER64, "Magic", opt, "optional header", path)
    if magic == 0x20B:
        plus, decl = True, OPTIONAL_HEADER64
    elif magic == 0x10B:
        plus, decl = False, OPTIONAL_HEADER32
    else:
        raise fail(f"bad optional header magic {magic:#x}")
    if opt_size < decl.size or opt + opt_size > len(d):
        raise fail(f"truncated or undersized optional header ({opt_size} bytes)")
    if plus != (machine is not Machine.X86):
        raise fail(f"optional header is {'PE32+' if plus else 'PE32'}, which does not fit machine {machine.value}")
    oh = decl.decode(d, opt)  # every field: decl.size <= opt_size bytes are in the file
    dd_off = opt + decl.size
    ndirs = min(oh["NumberOfRvaAndSizes"], 16, max(0, (opt + opt_size - dd_off) // DATA_DIRECTORY.size))
    directories = []
    for i in range(ndirs):
        dd = DATA_DIRECTORY.decode(d, dd_off + DATA_DIRECTORY.size * i)
        directories.append((dd["VirtualAddress"], dd["Size"]))
    size_of_image = oh["SizeOfImage"]
    sections = _sections(d, opt + opt_size, nsec, size_of_image, path)
    img = PEImage(
        path=path,
        data=d,
        machine=machine,
        is_dll=bool(fh["Characteristics"] & _IMAGE_FILE_DLL),
        is_pe32_plus=plus,
        image_base=oh["ImageBase"],
        entry_rva=oh["AddressOfEntryPoint"],
        timestamp=fh["TimeDateStamp"],
        checksum=oh["CheckSum"],
        checksum_offset=opt + decl.offset("CheckSum"),
        size_of_image=size_of_image,
        size_of_headers=min(oh["SizeOfHeaders"], len(d)),
        section_alignment=oh["SectionAlignment"],
        file_alignment=oh["FileAlignment"],
        subsystem=oh["Subsystem"],
        characteristics=fh["Characteristics"],
        dll_characteristics=oh["DllCharacteristics"],
        sections=sections,
        data_directories=directories,
        relocations=Relocations(),
        functions=[],
    )
    return img, (fh["PointerToSymbolTable"], fh["NumberOfSymbols"])


def _sections(d: bytes, sec_off: int, nsec: int, size_of_image: int, path: str) -> list[Section]:
    if sec_off + SECTION_HEADER.size * nsec > len(d):
        raise FormatError(f"truncated: section table ({nsec} sections) runs past end of file", path)
    sections: list[Section] = []
    for i in range(nsec):
        base = sec_off + SECTION_HEADER.size * i
        sh = SECTION_HEADER.decode(d, base)
        vsize, va = sh["VirtualSize"], sh["VirtualAddress"]
        rsize, roff = sh["SizeOfRawData"], sh["PointerToRawData"]
        raw_name = d[base + _SECTION_NAME.offset : base + _SECTION_NAME.end]
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        if rsize and roff + rsize > len(d):
            # A truncated last section is common in damaged files; the loader
            # refuses such an image, and so do we.
            raise FormatError(
                f"truncated: section {name!r} raw data {roff:#x}+{rsize:#x} runs past end of file ({len(d):#x})",
                path,
            )
        if va + max(vsize, rsize) > 0xFFFFFFFF or (size_of_image and va > size_of_image):
            raise FormatError(f"section {name!r} lies outside SizeOfImage", path)
        if vsize > 0x40000000:
            raise FormatError(f"section {name!r} has an absurd virtual size {vsize:#x}", path)
        sections.append(Section(name, va, vsize, roff if rsize else 0, rsize, sh["Characteristics"]))
    order = sorted(sections, key=lambda s: s.rva)
    for a, b in zip(order, order[1:], strict=False):
        if a.rva + a.size > b.rva:
            raise FormatError(f"sections {a.name!r} and {b.name!r} overlap in memory", path)
    return sections


def _coff_symbols(img: PEImage, ptr: int, count: int) -> list[CoffSymbol]:
    """The COFF symbol table the file header points to (MinGW-style linkers keep one)."""
    if not ptr or not count:
        return []
    d = img.data
    if ptr + SYMBOL.size * count > len(d) or count > _MAX_COFF_SYMBOLS:
        raise FormatError(f"COFF symbol table ({count} symbols at {ptr:#x}) runs past end of file", img.path)
    strtab = string_table(d, ptr, count, False, img.path, strict=False)
    nsec = len(img.sections)
    out: list[CoffSymbol] = []
    for index, _pos, name, value, secnum, typ, sclass, naux in iter_symbols(
        d, ptr, count, False, strtab, img.path, strict=False
    ):
        # COFF section numbers follow the file's section table order.
        rva = img.sections[secnum - 1].rva + value if 0 < secnum <= nsec else None
        out.append(CoffSymbol(index, name, value, secnum, typ, sclass, naux, rva=rva))
    return out
