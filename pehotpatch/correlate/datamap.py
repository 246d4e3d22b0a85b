"""Unnamed data reached only through pointers in other data, paired by those pointers.

Correlation maps unnamed data by the references of paired code (the same instruction
of a function in both builds names the same data).  Data that code never names
directly, only through a pointer in a table (``&kTransforms`` holds pointers to
``kPrefixSuffix`` and others), gets no vote that way, and a table whose pointers lead
to unmapped data then compares as changed although nothing in it changed.

Here every pair of mapped data (unnamed by votes, named by name) with the same layout
of relocated pointers over the part both sides can own (up to the next mapped data or
global on each side, at most 64 bytes, a sized global's size) votes, pointer by pointer
at equal offsets, for the data they point at.  A target that got votes for two
different counterparts, or a counterpart voted for from two targets, is left out.
Functions and named globals are paired elsewhere; only unnamed data is added, and only
when its bytes are the same on both sides (mapped data compares by identity, so data
whose content changed stays unmapped and the pointer to it keeps its table changed).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

from pehotpatch.image.symbols import SymbolIndex

_WINDOW = 64
_ROUNDS = 3


class _Side:
    def __init__(self, ix: SymbolIndex, known: Iterable[int]):
        self.ix = ix
        self.starts = sorted({*known, *(g.rva for g in ix.globals), *ix.image.structure_starts})

    def extent(self, t: int) -> int:
        g = self.ix.global_at(t)
        if g is not None and g.rva == t and g.size:
            return min(g.size, _WINDOW)
        i = bisect.bisect_right(self.starts, t)
        nxt = self.starts[i] if i < len(self.starts) else t + _WINDOW
        return max(0, min(nxt - t, _WINDOW))

    def pointers(self, t: int, n: int) -> dict[int, int] | None:
        """Offset -> target RVA of each relocated pointer in [t, t+n)."""
        img = self.ix.image
        ptr = img.machine.pointer_size
        out: dict[int, int] = {}
        for r in img.relocations.within(t, t + n):
            if r + ptr > t + n:
                break
            raw = img.try_read(r, ptr)
            if raw is None:
                return None
            out[r - t] = int.from_bytes(raw, "little") - img.image_base
        return out

    def unnamed_data(self, v: int) -> bool:
        sec = self.ix.image.section_at(v)
        return (sec is not None and not sec.executable and self.ix.function_at(v) is None
                and self.ix.global_at(v) is None and v not in self.ix.imports_by_slot)


def pointer_targets(base: SymbolIndex, new: SymbolIndex, known: dict[int, int]) -> dict[int, int]:
    """New entries for the unnamed-data map: base RVA -> new RVA of data pointed at by
    pointers at equal offsets of the data pairs in ``known`` (and of those found)."""
    if base.image.machine.pointer_size != new.image.machine.pointer_size:
        return {}
    sb, sn = _Side(base, known), _Side(new, known.values())
    found: dict[int, int] = {}
    todo = sorted(known.items())
    for _ in range(_ROUNDS):
        fwd: dict[int, set[int]] = defaultdict(set)
        back: dict[int, set[int]] = defaultdict(set)
        rb = base.image.relocations
        for tb, tn in todo:
            if not rb.within(tb, tb + _WINDOW):
                continue  # (most data holds no pointer: the cheap test first)
            n = min(sb.extent(tb), sn.extent(tn))
            pb, pn = sb.pointers(tb, n), sn.pointers(tn, n)
            if not pb or pb.keys() != (pn or {}).keys():
                continue
            for o, vb in pb.items():
                vn = pn[o]  # type: ignore[index]
                if vb in known or vb in found or not (sb.unnamed_data(vb) and sn.unnamed_data(vn)):
                    continue
                if not _same_bytes(sb, sn, vb, vn):
                    continue
                fwd[vb].add(vn)
                back[vn].add(vb)
        taken = set(known.values()) | set(found.values())
        todo = []
        for vb, vns in sorted(fwd.items()):
            (vn, *more) = vns
            if more or len(back[vn]) > 1 or vn in taken:
                continue
            found[vb] = vn
            todo.append((vb, vn))
        if not todo:
            break
    return found


def _same_bytes(sb: _Side, sn: _Side, vb: int, vn: int) -> bool:
    """The data pointed at holds the same bytes on both sides over what both can own: a
    mapped address compares by identity from then on, so only data that did not change
    is mapped (a pointer to data that changed keeps the table that holds it changed)."""
    n = min(sb.extent(vb), sn.extent(vn))
    a, b = sb.ix.image.try_read(vb, n), sn.ix.image.try_read(vn, n)
    return n > 0 and a is not None and a == b
