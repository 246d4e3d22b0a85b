"""Bounds-checked little-endian readers shared by the CodeView, PDB and COFF decoders.

Every reader takes the buffer, a position and the end of the region the value must fit
in, and raises :class:`~pehotpatch.errors.FormatError` instead of ``struct.error`` /
``IndexError`` when the value does not fit.
"""

from __future__ import annotations

import struct

from pehotpatch.errors import FormatError

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
HH = struct.Struct("<HH")

_u16 = U16.unpack_from
_u32 = U32.unpack_from


def need(pos: int, size: int, end: int, what: str, path: str | None) -> None:
    """Raise unless ``size`` bytes starting at ``pos`` lie before ``end``."""
    if pos < 0 or size < 0 or pos + size > end:
        raise FormatError(
            f"{what}: {size} bytes at offset {pos:#x} run past the end ({end:#x})", path
        )


def u16(buf: bytes, pos: int, end: int, what: str, path: str | None) -> int:
    if pos < 0 or pos + 2 > end:
        raise FormatError(f"{what}: truncated at offset {pos:#x}", path)
    return _u16(buf, pos)[0]


def u32(buf: bytes, pos: int, end: int, what: str, path: str | None) -> int:
    if pos < 0 or pos + 4 > end:
        raise FormatError(f"{what}: truncated at offset {pos:#x}", path)
    return _u32(buf, pos)[0]


def cstring(buf: bytes, pos: int, end: int, what: str, path: str | None) -> tuple[str, int]:
    """A NUL-terminated string at ``pos`` inside ``[pos, end)``; returns (text, position after NUL).

    Bytes that are not UTF-8 are replaced (U+FFFD) rather than failing the whole file.
    """
    if pos < 0 or pos > end:
        raise FormatError(f"{what}: name offset {pos:#x} outside its record", path)
    nul = buf.find(b"\0", pos, end)
    if nul < 0:
        raise FormatError(f"{what}: name at offset {pos:#x} is not NUL-terminated", path)
    return buf[pos:nul].decode("utf-8", "replace"), nul + 1


def cstring_tail(buf: bytes, pos: int, end: int, what: str, path: str | None) -> str:
    """Like :func:`cstring` but tolerates a missing NUL at the very end of the record."""
    if pos < 0 or pos > end:
        raise FormatError(f"{what}: name offset {pos:#x} outside its record", path)
    nul = buf.find(b"\0", pos, end)
    if nul < 0:
        nul = end
    return buf[pos:nul].decode("utf-8", "replace")


# Numeric leaves (a value < 0x8000 is stored directly in the 16-bit leaf).
LF_NUMERIC = 0x8000
LF_CHAR = 0x8000
LF_SHORT = 0x8001
LF_USHORT = 0x8002
LF_LONG = 0x8003
LF_ULONG = 0x8004
LF_REAL32 = 0x8005
LF_REAL64 = 0x8006
LF_REAL80 = 0x8007
LF_REAL128 = 0x8008
LF_QUADWORD = 0x8009
LF_UQUADWORD = 0x800A
LF_REAL48 = 0x800B
LF_COMPLEX32 = 0x800C
LF_COMPLEX64 = 0x800D
LF_COMPLEX80 = 0x800E
LF_COMPLEX128 = 0x800F
LF_VARSTRING = 0x8010
LF_OCTWORD = 0x8017
LF_UOCTWORD = 0x8018
LF_DECIMAL = 0x8019
LF_DATE = 0x801A
LF_UTF8STRING = 0x801B
LF_REAL16 = 0x801C

# leaf -> (struct format or None, byte size)
_INT_LEAVES: dict[int, tuple[str, int]] = {
    LF_CHAR: ("<b", 1),
    LF_SHORT: ("<h", 2),
    LF_USHORT: ("<H", 2),
    LF_LONG: ("<i", 4),
    LF_ULONG: ("<I", 4),
    LF_QUADWORD: ("<q", 8),
    LF_UQUADWORD: ("<Q", 8),
}
_FLOAT_LEAVES: dict[int, tuple[str, int]] = {
    LF_REAL32: ("<f", 4),
    LF_REAL64: ("<d", 8),
    LF_REAL16: ("<e", 2),
}
_OPAQUE_LEAVES: dict[int, int] = {
    LF_REAL80: 10,
    LF_REAL128: 16,
    LF_REAL48: 6,
    LF_COMPLEX32: 8,
    LF_COMPLEX64: 16,
    LF_COMPLEX80: 20,
    LF_COMPLEX128: 32,
    LF_DECIMAL: 16,
    LF_DATE: 8,
}


def numeric(
    buf: bytes, pos: int, end: int, what: str, path: str | None
) -> tuple[int | float | None, int]:
    """Decode a numeric leaf; returns (value, position after it).

    Integers come back as ``int``, LF_REAL16/32/64 as ``float``; other numeric kinds
    (80-bit reals, complex, decimal, date, strings) are skipped and give ``None``.
    """
    if pos < 0 or pos + 2 > end:
        raise FormatError(f"{what}: numeric leaf truncated at offset {pos:#x}", path)
    leaf = _u16(buf, pos)[0]
    pos += 2
    if leaf < LF_NUMERIC:
        return leaf, pos
    spec = _INT_LEAVES.get(leaf)
    if spec is None:
        spec = _FLOAT_LEAVES.get(leaf)
    if spec is not None:
        fmt, size = spec
        if pos + size > end:
            raise FormatError(f"{what}: numeric leaf {leaf:#x} truncated at offset {pos:#x}", path)
        return struct.unpack_from(fmt, buf, pos)[0], pos + size
    if leaf in (LF_OCTWORD, LF_UOCTWORD):
        if pos + 16 > end:
            raise FormatError(f"{what}: numeric leaf {leaf:#x} truncated at offset {pos:#x}", path)
        return int.from_bytes(buf[pos : pos + 16], "little", signed=leaf == LF_OCTWORD), pos + 16
    opaque = _OPAQUE_LEAVES.get(leaf)
    if opaque is not None:
        if pos + opaque > end:
            raise FormatError(f"{what}: numeric leaf {leaf:#x} truncated at offset {pos:#x}", path)
        return None, pos + opaque
    if leaf == LF_VARSTRING:
        n = u16(buf, pos, end, what, path)
        if pos + 2 + n > end:
            raise FormatError(f"{what}: LF_VARSTRING truncated at offset {pos:#x}", path)
        return None, pos + 2 + n
    if leaf == LF_UTF8STRING:
        _, after = cstring(buf, pos, end, what, path)
        return None, after
    raise FormatError(f"{what}: unknown numeric leaf {leaf:#x} at offset {pos - 2:#x}", path)


def int_numeric(buf: bytes, pos: int, end: int, what: str, path: str | None) -> tuple[int, int]:
    """A numeric leaf that must be an integer (sizes, offsets, enumerator values)."""
    value, after = numeric(buf, pos, end, what, path)
    if not isinstance(value, int):
        raise FormatError(f"{what}: expected an integer numeric leaf at offset {pos:#x}", path)
    return value, after
