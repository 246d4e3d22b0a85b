"""The PE directories other than exports and imports: base relocations, ``.pdata``,
debug entries (CodeView, extended DLL characteristics), TLS callbacks, the load
configuration with its CFG function table, the resource digest and the signature.

Each reader takes the :class:`~pehotpatch.image.pe.PEImage` whose headers and sections
are read and returns what it found; a directory that points outside the file or its
sections raises :class:`~pehotpatch.errors.FormatError` naming the image.
"""

from __future__ import annotations

import hashlib
import struct
import uuid

from pehotpatch.errors import FormatError
from pehotpatch.image.headers import load_config_struct
from pehotpatch.image.machine import Machine
from pehotpatch.image.pe import (
    DEBUG_TYPE_CODEVIEW,
    DEBUG_TYPE_EX_DLLCHARACTERISTICS,
    DIR_BASERELOC,
    DIR_DEBUG,
    DIR_EXCEPTION,
    DIR_LOAD_CONFIG,
    DIR_RESOURCE,
    DIR_SECURITY,
    DIR_TLS,
    MAX_THUNKS,
    CodeView,
    DebugEntry,
    LoadConfig,
    PEImage,
    Relocations,
    RuntimeFunction,
)

_REL_ABSOLUTE, _REL_HIGHLOW, _REL_DIR64 = 0, 3, 10


def _fail(img: PEImage, msg: str) -> FormatError:
    return FormatError(msg, img.path)


def _dir_bytes(img: PEImage, index: int, what: str) -> tuple[int, bytes] | None:
    rva, size = img.directory(index)
    if not rva or not size:
        return None
    if size > len(img.data):
        # Directories live in file-backed data; a bigger one would only be zero fill.
        raise _fail(img, f"{what} directory size {size:#x} is larger than the file")
    try:
        return rva, img.read(rva, size)
    except FormatError:
        raise _fail(img, f"{what} directory {rva:#x}+{size:#x} lies outside every section") from None


def relocations(img: PEImage) -> Relocations:
    got = _dir_bytes(img, DIR_BASERELOC, "base relocation")
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
            raise _fail(img, f"corrupt base relocation block at +{off:#x} (size {bsize:#x})")
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


def pdata(img: PEImage) -> list[RuntimeFunction]:
    if img.machine is Machine.X86:
        return []
    got = _dir_bytes(img, DIR_EXCEPTION, "exception")
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
                raise _fail(img, f".pdata entry {begin:#x}..{end:#x} has an empty or inverted range")
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
                    raise _fail(img, f".pdata entry at {begin:#x} points to unreadable .xdata {word:#x}")
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
            raise _fail(img, f".pdata entries {merged[-1].begin:#x}..{merged[-1].end:#x} and "
                            f"{f.begin:#x}..{f.end:#x} overlap")
        merged.append(f)
    return merged


def tls_callbacks(img: PEImage) -> list[int]:
    got = _dir_bytes(img, DIR_TLS, "TLS")
    if got is None:
        return []
    _, blob = got
    ptr = img.machine.pointer_size
    if len(blob) < 4 * ptr:
        raise _fail(img, "TLS directory is too small")
    fmt = "<Q" if ptr == 8 else "<I"
    (va,) = struct.unpack_from(fmt, blob, 3 * ptr)  # AddressOfCallBacks
    out: list[int] = []
    if not va:
        return out
    rva = va - img.image_base
    for i in range(4096):
        raw = img.try_read(rva + i * ptr, ptr)
        if raw is None:
            raise _fail(img, f"TLS callback array at VA {va:#x} runs outside every section")
        (cb,) = struct.unpack(fmt, raw)
        if cb == 0:
            return out
        out.append(cb - img.image_base)
    raise _fail(img, "TLS callback array is not terminated within 4096 entries")


def debug_entries(img: PEImage) -> list[DebugEntry]:
    got = _dir_bytes(img, DIR_DEBUG, "debug")
    if got is None:
        return []
    _, blob = got
    out = []
    for i in range(len(blob) // 28):
        _c, _t, _maj, _min, typ, size, rva, foff = struct.unpack_from("<IIHHIIII", blob, 28 * i)
        out.append(DebugEntry(typ, rva, foff, size))
    return out


def _debug_payload(img: PEImage, e: DebugEntry) -> bytes | None:
    if e.file_offset and e.file_offset + e.size <= len(img.data):
        return img.data[e.file_offset : e.file_offset + e.size]
    return None


def codeview(img: PEImage) -> CodeView | None:
    for e in img.debug_entries:
        if e.type != DEBUG_TYPE_CODEVIEW:
            continue
        blob = _debug_payload(img, e)
        if blob is None or len(blob) < 24 or blob[:4] != b"RSDS":
            continue
        guid = uuid.UUID(bytes_le=blob[4:20])
        (age,) = struct.unpack_from("<I", blob, 20)
        name = blob[24:].split(b"\0", 1)[0].decode("utf-8", "replace")
        return CodeView(name, guid, age)
    return None


def ex_dll_characteristics(img: PEImage) -> int | None:
    for e in img.debug_entries:
        if e.type == DEBUG_TYPE_EX_DLLCHARACTERISTICS:
            blob = _debug_payload(img, e)
            if blob is not None and len(blob) >= 4:
                return struct.unpack_from("<I", blob)[0]
    return None


def has_signature(img: PEImage) -> bool:
    off, size = img.directory(DIR_SECURITY)  # a file offset, not an RVA
    return bool(off and size and off + size <= len(img.data))


def resource_digest(img: PEImage) -> str | None:
    got = _dir_bytes(img, DIR_RESOURCE, "resource")
    if got is None:
        return None
    rva, _ = got
    s = img.section_at(rva)
    blob = img.read(s.rva, s.raw_size) if s is not None else got[1]
    return hashlib.sha256(blob).hexdigest()


def load_config(img: PEImage) -> LoadConfig | None:
    lc_rva, lc_dir_size = img.directory(DIR_LOAD_CONFIG)
    if not lc_rva:
        return None
    raw = img.try_read(lc_rva, 4)
    if raw is None:
        raise _fail(img, f"load config directory at RVA {lc_rva:#x} lies outside every section")
    (lc_size,) = struct.unpack("<I", raw)
    if lc_size > 0x10000:
        raise _fail(img, f"load config Size {lc_size:#x} is implausible")
    body = img.try_read(lc_rva, lc_size)
    if body is None:
        raise _fail(img, "load config directory runs past its section")
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
                raise _fail(img, f"load config claims {count} CFG functions")
            blob = img.try_read(table_va - img.image_base, count * stride)
            if blob is None:
                raise _fail(img, "CFG function table lies outside every section")
            cfg = tuple(struct.unpack_from("<I", blob, i * stride)[0] for i in range(count))
    return LoadConfig(lc_rva, lc_size, lc_dir_size, hp, guard_flags, cfg, fields)

