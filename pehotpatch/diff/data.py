"""Read-only data that code refers to, compared across the two builds: extents, pointers
inside it, and jump tables (compared as the offsets they branch to)."""

from __future__ import annotations

import bisect
import struct

from pehotpatch.codemap import KIND_CODES, FuncCode
from pehotpatch.diff.targets import KeyFn, read_cstring
from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.vocab import RefKind

MAX_DATA_COMPARE = 256
_DATA = KIND_CODES[RefKind.DATA]
_TWO_I32 = struct.Struct("<ii")


class DataView:
    """Read-only data of one image as the differ sees it: extents, pointers, jump tables."""

    def __init__(self, ix: SymbolIndex, code: dict[int, FuncCode]):
        self.ix = ix
        starts = {g.rva for g in ix.globals}
        starts.update(ix.image.structure_starts)  # a guessed extent stops at the debug data
        for fc in code.values():
            for _, kind, t in fc.refs:
                if kind == _DATA:
                    starts.add(t)
        self.starts = sorted(starts)
        self._same: dict[tuple[int, int, int, int], bool] = {}
        self._same_data: dict[tuple[int, int], bool] = {}
        self._extent: dict[int, int] = {}
        self._head: dict[int, bytes | None] = {}

    def extent(self, t: int) -> int:
        n = self._extent.get(t)
        if n is None:
            n = self._extent[t] = self._find_extent(t)
        return n

    def _find_extent(self, t: int) -> int:
        g = self.ix.global_at(t)
        if g is not None and g.size:
            return max(0, min(MAX_DATA_COMPARE, g.rva + g.size - t))
        s = read_cstring(self.ix.image, t, MAX_DATA_COMPARE)
        if s is not None:
            return len(s) + 1
        i = bisect.bisect_right(self.starts, t)
        nxt = self.starts[i] if i < len(self.starts) else t + 16
        return max(1, min(nxt - t, 64))

    def _may_be_table(self, t: int, f: Function) -> bool:
        """Whether the first two 32-bit words at ``t`` could be entries of a jump table
        of ``f`` (a cheap test before :meth:`jump_table` reads the whole run)."""
        head = self._head.get(t, b"")
        if head == b"":
            head = self._head[t] = self.ix.image.try_read(t, 8)
        if head is None:
            return False
        a, b = _TWO_I32.unpack(head)
        lo, hi = f.rva, self._table_end(f)
        if lo <= t + a < hi and lo <= t + b < hi:
            return True
        return lo <= (a & 0xFFFFFFFF) < hi and lo <= (b & 0xFFFFFFFF) < hi

    def _table_end(self, f: Function) -> int:
        """Where the case targets of ``f``'s jump tables end: its end, and one byte more
        when an ``int3`` follows it.  Clang sends the cases that cannot happen (``x & 6``
        is never odd) to a trap right after the last instruction, which the PDB's size of
        the function leaves out."""
        return f.end + 1 if self.ix.image.try_read(f.end, 1) == b"\xcc" else f.end

    def jump_table(self, t: int, f: Function) -> list[int] | None:
        """Entries of a jump table at ``t`` serving ``f``, as offsets into ``f``.

        Two encodings: 32-bit offsets relative to the table (clang x64) and 32-bit
        RVAs (MSVC x64).  At least two consecutive entries must land inside ``f``."""
        img = self.ix.image
        sec = img.section_at(t)
        if sec is None:
            return None
        blob = img.try_read(t, min(4 * 4096, max(0, sec.rva + sec.size - t)) & ~3)
        if not blob:
            return None
        end = self._table_end(f)
        for relative in (True, False):
            out: list[int] = []
            for (v,) in struct.iter_unpack("<i" if relative else "<I", blob):
                dest = t + v if relative else v
                if not (f.rva <= dest < end):
                    break
                out.append(dest - f.rva)
            if len(out) >= 2:
                return out
        return None

    def compare(self, other: DataView, t_self: int, t_other: int, key_self: KeyFn, key_other: KeyFn,
                f_self: Function, f_other: Function) -> bool:
        """True when the read-only data at ``t_self`` (base) equals ``t_other`` (new)."""
        memo = (t_self, t_other, f_self.rva, f_other.rva)
        got = self._same.get(memo)
        if got is None:
            got = self._same[memo] = self._compare(other, t_self, t_other, key_self, key_other, f_self, f_other)
        return got

    def _compare(self, other: DataView, t_self: int, t_other: int, key_self: KeyFn, key_other: KeyFn,
                 f_self: Function, f_other: Function) -> bool:
        if self._may_be_table(t_self, f_self):
            ja = self.jump_table(t_self, f_self)
            if ja is not None:
                jb = other.jump_table(t_other, f_other) if other._may_be_table(t_other, f_other) else None
                return jb is not None and ja == jb
        memo = (t_self, t_other)
        got = self._same_data.get(memo)
        if got is None:
            got = self._same_data[memo] = self._compare_data(other, t_self, t_other, key_self, key_other)
        return got

    def _window(self, t: int) -> bytes | None:
        """Up to MAX_DATA_COMPARE bytes at ``t`` (fewer at the end of its section)."""
        sec = self.ix.image.section_at(t)
        if sec is None:
            return None
        return self.ix.image.try_read(t, min(MAX_DATA_COMPARE, sec.rva + sec.size - t))

    def _compare_data(self, other: DataView, t_self: int, t_other: int, key_self: KeyFn,
                      key_other: KeyFn) -> bool:
        # Equal bytes as far as any extent could reach: equal, whatever the extent.
        wa = self._window(t_self)
        if wa is not None and wa == other._window(t_other):
            return True
        # A sized global on either side sets the extent (a grown table is a change);
        # guessed extents of unnamed data compare only what both sides agree on, so a
        # guess cannot run into unrelated data that follows on one side.
        gs, go = self.ix.global_at(t_self), other.ix.global_at(t_other)
        if (gs is not None and gs.size) or (go is not None and go.size):
            n = max(self.extent(t_self), other.extent(t_other))
        else:
            n = min(self.extent(t_self), other.extent(t_other))
        a = self.ix.image.try_read(t_self, n)
        b = other.ix.image.try_read(t_other, n)
        if a is None or b is None:
            return a == b
        if a == b:
            return True
        ra = [r - t_self for r in self.ix.image.relocations.within(t_self, t_self + n)]
        rb = [r - t_other for r in other.ix.image.relocations.within(t_other, t_other + n)]
        if not ra or ra != rb:
            return False
        ptr = self.ix.image.machine.pointer_size
        ma, mb = bytearray(a), bytearray(b)
        for o in ra:
            va = int.from_bytes(a[o : o + ptr], "little") - self.ix.image.image_base
            vb = int.from_bytes(b[o : o + ptr], "little") - other.ix.image.image_base
            if key_self(va) != key_other(vb):
                sa = read_cstring(self.ix.image, va)
                if sa is None or sa != read_cstring(other.ix.image, vb):
                    return False
            ma[o : o + ptr] = mb[o : o + ptr] = b"\0" * ptr
        return ma == mb
