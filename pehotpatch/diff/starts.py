"""Function starts that no symbol source gives, found from the padding between functions.

Without a PDB a function is known from its export, its ``.pdata`` entry or a call to it,
and one known only by its start gets the distance to the next known start as its
extent.  A leaf function (no ``.pdata``) that is not exported and only tail-called, or
not called at all, is then covered by the guessed extent of the function before it,
which then looks changed whenever the hidden one changed.

Linkers leave evidence of every function start: ``/functionpadmin`` (which
``/hotpatchcompatible`` needs, at least 6 bytes on x64) puts ``int3`` bytes before each
function, and compilers start functions on 16-byte boundaries.  Inside a guessed extent,
a 16-byte boundary after at least six ``int3`` bytes, with code after it, is such a
start; compilers put at most one ``int3`` after a call that does not return and align
loops with no-ops, so a function body does not look like that.  Extents from the PDB or
``.pdata`` are exact and are not cut; the gap after one, up to the next known function,
is searched the same way.

A guessed extent also loses the ``int3`` bytes it ends with: they are the next
function's padding, not code of this one (Brotli's ``BrotliGetTransforms`` is 8 bytes
of code and 8 of padding).
"""

from __future__ import annotations

import re
from dataclasses import replace

from pehotpatch.codemap import without_padding
from pehotpatch.image.machine import Machine
from pehotpatch.image.symbols import Function, SymbolIndex

_RUN = re.compile(rb"\xcc{6,}")
_ALIGN = 16
_EXACT = frozenset({"pdb", "pdata"})


def _starts(ix: SymbolIndex, lo: int, hi: int) -> list[int]:
    """Function starts in [lo, hi): 16-byte boundaries right after a run of at least six
    ``int3`` bytes (the runs are found by the regular-expression engine, not byte by byte)."""
    blob = ix.image.try_read(lo, hi - lo) if hi > lo else None
    if not blob:
        return []
    return [lo + m.end() for m in _RUN.finditer(blob)
            if m.end() < len(blob) and (lo + m.end()) % _ALIGN == 0]


def split_at_padding(ix: SymbolIndex) -> SymbolIndex:
    """A new index whose guessed extents (x86, x64) end at the function starts found
    inside them, each of which becomes a function of its own, as does each start found
    between an exact extent and the next function; ``ix`` is not changed."""
    if ix.image.machine not in (Machine.X64, Machine.X86):
        return ix
    functions: list[Function] = []
    found = False
    fs = ix.functions
    for i, f in enumerate(fs):
        sec = ix.image.section_at(f.rva)
        # the next start, or the end of the section (the last function of a section is
        # followed by whatever no symbol names: import thunks reached only by jumps)
        sec_end = sec.rva + sec.size if sec is not None else f.end
        nxt = min(fs[i + 1].rva, sec_end) if i + 1 < len(fs) else sec_end
        nxt = max(nxt, f.end)
        if f.sources & _EXACT:
            functions.append(f)
            lo, hi = f.end, nxt
            cuts = _starts(ix, lo, hi) if ix.image.section_at(lo) is sec else []
        else:
            lo, hi = f.rva, f.end
            cuts = _starts(ix, lo, hi) if f.size > _ALIGN else []
            if cuts:
                functions.append(replace(f, size=cuts[0] - f.rva, sources=set(f.sources), aliases=set(f.aliases),
                                         exported_as=list(f.exported_as)))
            else:
                functions.append(f)
        if cuts:
            found = True
            end = min(hi, max(nxt, f.end)) if f.sources & _EXACT else f.end
            for a, b in zip(cuts, [*cuts[1:], end], strict=True):
                functions.append(Function(f"sub_{a:x}", a, b - a, {"padding"}))
    for i, f in enumerate(functions):
        if not f.sources & _EXACT:
            size = _without_padding(ix, f)
            if size != f.size:
                found = True
                functions[i] = replace(f, size=size, sources=set(f.sources), aliases=set(f.aliases),
                                       exported_as=list(f.exported_as))
    if not found:
        return ix
    return replace(ix, functions=functions, notes=list(ix.notes))


def _without_padding(ix: SymbolIndex, f: Function) -> int:
    """The size of a guessed extent without the ``int3`` padding it ends with (a run
    of at least two: a function's own code ends with at most one, after a call that
    does not return, which is then cut too)."""
    return without_padding(ix.image, f.rva, f.size)
