"""CodeView debug subsections (the body of a COFF ``.debug$S`` section and the C13 part
of a PDB module stream): ``u32 kind, u32 length, data``, each padded to 4 bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from pehotpatch.errors import FormatError

DEBUG_S_IGNORE = 0x80000000
DEBUG_S_SYMBOLS = 0xF1
DEBUG_S_LINES = 0xF2
DEBUG_S_STRINGTABLE = 0xF3
DEBUG_S_FILECHKSMS = 0xF4
DEBUG_S_FRAMEDATA = 0xF5
DEBUG_S_INLINEELINES = 0xF6

CV_SIGNATURE_C13 = 4

_II = struct.Struct("<II")


def iter_subsections(
    buf: bytes, start: int, end: int, path: str | None = None
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(kind, data_start, data_end)`` for each subsection in ``buf[start:end]``."""
    if start < 0 or end > len(buf) or start > end:
        raise FormatError(f"debug subsections: range {start:#x}..{end:#x} outside the buffer", path)
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise FormatError(f"debug subsection header truncated at offset {pos:#x}", path)
        kind, length = _II.unpack_from(buf, pos)
        data = pos + 8
        if length > end - data:
            raise FormatError(
                f"debug subsection {kind:#x} at offset {pos:#x}: length {length} runs past the end",
                path,
            )
        yield kind, data, data + length
        pos = data + ((length + 3) & ~3)
