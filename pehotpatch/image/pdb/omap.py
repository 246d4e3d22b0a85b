"""OMAP address maps: PDBs of images rearranged after linking (BBT/POGO-style tools).

Such a PDB's symbols use the addresses of the image as the linker wrote it: the DBI's
optional debug header then names the original section headers (``SectionHdrOrig``)
and an "OMAP from source" table that maps those RVAs to the final image's.  The table
is an array of ``(source_rva, target_rva)`` pairs sorted by source; an address maps
through the last pair at or below it, and a target of 0 means the code was dropped.
"""

from __future__ import annotations

import bisect
from array import array

from pehotpatch.errors import FormatError


class Omap:
    __slots__ = ("_src", "_dst")

    def __init__(self, data: bytes, path: str | None = None) -> None:
        if len(data) % 8:
            raise FormatError(f"OMAP stream is {len(data)} bytes, not a multiple of 8", path)
        pairs = array("I")
        pairs.frombytes(data)
        if pairs.itemsize != 4:  # pragma: no cover - exotic platforms
            raise FormatError("unsupported platform integer size", path)
        src = pairs[0::2]
        if any(src[i] > src[i + 1] for i in range(len(src) - 1)):
            raise FormatError("OMAP entries are not sorted by address", path)
        self._src = src
        self._dst = pairs[1::2]

    def __len__(self) -> int:
        return len(self._src)

    def map(self, rva: int | None) -> int | None:
        """The final-image RVA of an original RVA (None when dropped or unmapped)."""
        if rva is None:
            return None
        i = bisect.bisect_right(self._src, rva) - 1
        if i < 0:
            return None
        dst = self._dst[i]
        if dst == 0:
            return None
        return dst + (rva - self._src[i])
