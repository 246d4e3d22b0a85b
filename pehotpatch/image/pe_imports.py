"""The names an image gives and takes: its export directory, its imports and its delay
imports (both kinds of delay-import descriptor: RVA-based and the old VA-based ones).

Counts are bounded (``MAX_EXPORTS``, ``MAX_IMPORT_DESCRIPTORS``, ``MAX_THUNKS``) so a
crafted directory costs bounded time and memory.
"""

from __future__ import annotations

import struct

from pehotpatch.errors import FormatError
from pehotpatch.image.pe import (
    DIR_DELAY_IMPORT,
    DIR_EXPORT,
    DIR_IMPORT,
    MAX_EXPORTS,
    MAX_IMPORT_DESCRIPTORS,
    MAX_THUNKS,
    Export,
    Import,
    PEImage,
)


def _fail(img: PEImage, msg: str) -> FormatError:
    return FormatError(msg, img.path)


def _cstr(img: PEImage, rva: int, what: str) -> str:
    try:
        return img.read_cstring(rva, 4096)
    except FormatError:
        raise _fail(img, f"{what} at RVA {rva:#x} is outside every section or unterminated") from None


def read_exports(img: PEImage) -> None:
    """Fill ``img.exports`` and ``img.export_name`` from the export directory."""
    rva, size = img.directory(DIR_EXPORT)
    if not rva or not size:
        return
    hdr = img.try_read(rva, 40)
    if hdr is None:
        raise _fail(img, f"export directory at RVA {rva:#x} lies outside every section")
    (_c, _t, _ma, _mi, name_rva, base, nfuncs, nnames, funcs_rva, names_rva, ords_rva) = struct.unpack(
        "<IIHHIIIIIII", hdr
    )
    if nfuncs > MAX_EXPORTS or nnames > MAX_EXPORTS or nnames > nfuncs + MAX_EXPORTS:
        raise _fail(img, f"export directory claims {nfuncs} functions and {nnames} names")
    img.export_name = _cstr(img, name_rva, "export DLL name") if name_rva else None
    funcs = img.try_read(funcs_rva, 4 * nfuncs) if nfuncs else b""
    names = img.try_read(names_rva, 4 * nnames) if nnames else b""
    ords = img.try_read(ords_rva, 2 * nnames) if nnames else b""
    if funcs is None or names is None or ords is None:
        raise _fail(img, "export tables lie outside every section")
    addrs = struct.unpack(f"<{nfuncs}I", funcs)
    named: dict[int, str] = {}
    for name_ptr, idx in zip(struct.unpack(f"<{nnames}I", names), struct.unpack(f"<{nnames}H", ords),
                             strict=True):
        if idx >= nfuncs:
            raise _fail(img, f"export name ordinal {idx} is past the function table ({nfuncs})")
        named.setdefault(idx, _cstr(img, name_ptr, "export name"))
    for idx, addr in enumerate(addrs):
        if addr == 0:
            continue
        fwd = None
        if rva <= addr < rva + size:
            fwd = _cstr(img, addr, "export forwarder")
        img.exports.append(Export(base + idx, named.get(idx), 0 if fwd else addr, fwd))


def _thunks(img: PEImage, table_rva: int, what: str) -> list[int]:
    ptr = img.machine.pointer_size
    fmt = "<Q" if ptr == 8 else "<I"
    out: list[int] = []
    pos = table_rva
    for _ in range(MAX_THUNKS):
        raw = img.try_read(pos, ptr)
        if raw is None:
            raise _fail(img, f"{what} at RVA {table_rva:#x} runs outside every section")
        (v,) = struct.unpack(fmt, raw)
        if v == 0:
            return out
        out.append(v)
        pos += ptr
    raise _fail(img, f"{what} at RVA {table_rva:#x} is not terminated")


def _import_entry(img: PEImage, dll: str, thunk: int, slot: int, delayed: bool) -> Import:
    ptr = img.machine.pointer_size
    if thunk >> (8 * ptr - 1):
        return Import(dll, None, thunk & 0xFFFF, slot, delayed)
    name = _cstr(img, (thunk & 0x7FFFFFFF) + 2, "import name")
    return Import(dll, name, None, slot, delayed)


def _check_import_total(img: PEImage) -> None:
    # Descriptors may share one thunk table; the total is what costs time and memory.
    if len(img.imports) > MAX_THUNKS:
        raise _fail(img, f"import directories list more than {MAX_THUNKS} imports in all")


def read_imports(img: PEImage) -> None:
    """Append the import directory's imports to ``img.imports``."""
    rva, size = img.directory(DIR_IMPORT)
    if not rva or not size:
        return
    ptr = img.machine.pointer_size
    for i in range(MAX_IMPORT_DESCRIPTORS):
        raw = img.try_read(rva + 20 * i, 20)
        if raw is None:
            raise _fail(img, f"import descriptor {i} lies outside every section")
        ilt, _ts, _fc, name_rva, iat = struct.unpack("<IIIII", raw)
        if not (ilt or name_rva or iat):
            return
        dll = _cstr(img, name_rva, "import DLL name")
        for k, thunk in enumerate(_thunks(img, ilt or iat, f"import table of {dll}")):
            img.imports.append(_import_entry(img, dll, thunk, iat + k * ptr, False))
        _check_import_total(img)
    raise _fail(img, "import directory is not terminated")


def read_delay_imports(img: PEImage) -> None:
    """Append the delay-import directory's imports to ``img.imports``."""
    rva, size = img.directory(DIR_DELAY_IMPORT)
    if not rva or not size:
        return
    ptr = img.machine.pointer_size
    for i in range(MAX_IMPORT_DESCRIPTORS):
        raw = img.try_read(rva + 32 * i, 32)
        if raw is None:
            raise _fail(img, f"delay-import descriptor {i} lies outside every section")
        attrs, name_rva, _hmod, iat, int_rva, _b, _u, _ts = struct.unpack("<8I", raw)
        if not (name_rva or iat or int_rva):
            return
        if not attrs & 1:  # VA-based (pre-VC7) descriptors
            name_rva, iat, int_rva = (x - img.image_base if x else 0 for x in (name_rva, iat, int_rva))
        dll = _cstr(img, name_rva, "delay-import DLL name")
        for k, thunk in enumerate(_thunks(img, int_rva, f"delay-import table of {dll}")):
            if not attrs & 1 and not thunk >> (8 * ptr - 1):
                thunk -= img.image_base
            img.imports.append(_import_entry(img, dll, thunk, iat + k * ptr, True))
        _check_import_total(img)
    raise _fail(img, "delay-import directory is not terminated")


