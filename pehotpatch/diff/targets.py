"""Reference targets of one image, named so that the two builds compare: the keys the
differ compares (:class:`Resolver`) and the names it shows (:func:`describe_target`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from pehotpatch.correlate import Correlation
from pehotpatch.image.pe import PEImage
from pehotpatch.image.symbols import SymbolIndex

#: Names a referenced address the same way on both sides (see Resolver.key).
KeyFn = Callable[[int], tuple]


class Resolver:
    """Turns reference targets into comparable keys, in the new image's terms."""

    def __init__(self, ix: SymbolIndex, corr: Correlation | None):
        self.ix = ix
        self.corr = corr
        self._keys: dict[int, tuple] = {}
        self._ro: dict[int, bool] = {}

    def readonly(self, t: int) -> bool:
        ro = self._ro.get(t)
        if ro is None:
            ro = self._ro[t] = readonly(self.ix.image, t)
        return ro

    def key(self, t: int) -> tuple:
        k = self._keys.get(t)
        if k is None:
            k = self._keys[t] = self._key(t)
        return k

    def _key(self, t: int) -> tuple:
        ix = self.ix
        slot = ix.imports_by_slot.get(t)
        if slot is not None:
            return ("import", slot if self.corr is None else self.corr.import_key(slot))
        f = ix.function_at(t)
        if f is not None:
            if self.corr is None:
                return ("fn", f.rva, t - f.rva)
            m = self.corr.function_map.get(f.rva)
            return ("fn", m, t - f.rva) if m is not None else ("fn?", f.name, t - f.rva)
        g = ix.global_at(t)
        if g is not None:
            if self.corr is None:
                return ("data", g.rva, t - g.rva)
            m = self.corr.global_map.get(g.rva)
            return ("data", m, t - g.rva) if m is not None else ("data?", g.name, t - g.rva)
        if self.corr is None:
            return ("data", t, 0)
        m = self.corr.data_map.get(t)
        return ("data", m, 0) if m is not None else ("data?", t, 0)

    def describe(self, t: int) -> str:
        return describe_target(self.ix, t)


def describe_target(ix: SymbolIndex, t: int) -> str:
    """A human name for an address: ``dll!func``, ``name+0x10``, ``"string"``, ``.rdata+0x40``."""
    slot = ix.imports_by_slot.get(t)
    if slot is not None:
        return slot
    f = ix.function_at(t)
    if f is not None:
        return f.name if t == f.rva else f"{f.name}+{t - f.rva:#x}"
    g = ix.global_at(t)
    if g is not None:
        return g.name if t == g.rva else f"{g.name}+{t - g.rva:#x}"
    s = read_cstring(ix.image, t)
    if s is not None:
        return repr(s)
    sec = ix.image.section_at(t)
    if sec is not None:
        return f"{sec.name}+{t - sec.rva:#x}"
    return f"{t:#x}"


def read_cstring(img: PEImage, t: int, limit: int = 120) -> str | None:
    sec = img.section_at(t)
    if sec is None or sec.writable or sec.executable:
        return None
    raw = img.try_read(t, min(limit + 1, max(0, sec.rva + sec.size - t)))
    if not raw:
        return None
    m = _CSTRING.match(raw)
    return m.group(1).decode("ascii") if m else None


# At least two printable ASCII characters (tab, CR and LF allowed) and the terminator.
_CSTRING = re.compile(rb"([\t\n\r\x20-\x7e]{2,})\0")


def readonly(img: PEImage, t: int) -> bool:
    """Whether ``t`` lies in a section that is neither writable nor executable."""
    s = img.section_at(t)
    return s is not None and not s.writable and not s.executable
