"""A stream of CodeView type records (PDB TPI/IPI, COFF ``.debug$T``) indexed by type index.

:class:`TypeRecords` indexes a buffer cheaply (one ``struct`` read per record: its offset
and leaf kind), on first use; records are decoded only when asked (:mod:`.decode`).
"""

from __future__ import annotations

import struct
from array import array

from pehotpatch.errors import FormatError

from .leaves import FIRST_TYPE_INDEX

_HH = struct.Struct("<HH")


class TypeRecords:
    """A buffer of type records indexed by type index (offsets computed on first use).

    ``buf[start:end]`` holds the records for indexes ``first_index, first_index+1, ...``.
    """

    __slots__ = (
        "buf",
        "start",
        "end",
        "first_index",
        "path",
        "expected_count",
        "_offsets",
        "_kinds",
    )

    def __init__(
        self,
        buf: bytes,
        start: int,
        end: int,
        first_index: int = FIRST_TYPE_INDEX,
        path: str | None = None,
        expected_count: int | None = None,
    ) -> None:
        if start < 0 or end > len(buf) or start > end:
            raise FormatError(f"type records: range {start:#x}..{end:#x} outside the buffer", path)
        if not 0 < first_index <= 0xFFFFFF:
            raise FormatError(f"type records: bad first type index {first_index:#x}", path)
        self.buf = buf
        self.start = start
        self.end = end
        self.first_index = first_index
        self.path = path
        self.expected_count = expected_count
        self._offsets: array | None = None
        self._kinds: array | None = None

    def _index(self) -> None:
        buf, pos, end, path = self.buf, self.start, self.end, self.path
        offsets = array("I")
        kinds = array("H")
        add_off = offsets.append
        add_kind = kinds.append
        unpack = _HH.unpack_from
        while pos < end:
            if pos + 4 > end:
                raise FormatError(f"type record header truncated at offset {pos:#x}", path)
            reclen, kind = unpack(buf, pos)
            if reclen < 2:
                raise FormatError(f"type record at offset {pos:#x} has bad length {reclen}", path)
            add_off(pos)
            add_kind(kind)
            pos += 2 + reclen
        if pos != end:
            raise FormatError(f"type record at offset {offsets[-1]:#x} runs past the end", path)
        if self.expected_count is not None and len(offsets) != self.expected_count:
            raise FormatError(
                f"type stream holds {len(offsets)} records, its header says {self.expected_count}",
                path,
            )
        self._offsets = offsets
        self._kinds = kinds

    def __len__(self) -> int:
        if self._offsets is None:
            self._index()
        return len(self._offsets)  # type: ignore[arg-type]

    @property
    def end_index(self) -> int:
        return self.first_index + len(self)

    def __contains__(self, ti: int) -> bool:
        return self.first_index <= ti < self.first_index + len(self)

    def locate(self, ti: int) -> tuple[int, int, int] | None:
        """``(kind, body_start, record_end)`` of type ``ti``, or None when out of range."""
        if self._offsets is None:
            self._index()
        i = ti - self.first_index
        offsets = self._offsets
        if i < 0 or i >= len(offsets):  # type: ignore[arg-type]
            return None
        pos = offsets[i]  # type: ignore[index]
        reclen = struct.unpack_from("<H", self.buf, pos)[0]
        return self._kinds[i], pos + 4, pos + 2 + reclen  # type: ignore[index]

    def kind(self, ti: int) -> int | None:
        if self._kinds is None:
            self._index()
        i = ti - self.first_index
        if i < 0 or i >= len(self._kinds):  # type: ignore[arg-type]
            return None
        return self._kinds[i]  # type: ignore[index]

    def indexes_of_kinds(self, kinds: frozenset[int]) -> list[int]:
        if self._offsets is None:
            self._index()
        first = self.first_index
        return [first + i for i, k in enumerate(self._kinds) if k in kinds]  # type: ignore[arg-type]
