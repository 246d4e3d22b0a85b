"""Normalised listings of functions, for people: one function's listing, a base function's
listing named by its intermediate counterparts, and the first differing line of a changed
function.  Used by the renderers and by the rules that quote a difference."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest

from pehotpatch.codemap import normalize_function
from pehotpatch.correlate import Correlation
from pehotpatch.diff import CHANGED, DiffResult, FunctionDiff, describe_target
from pehotpatch.image.symbols import Function, SymbolIndex


def listing(ix: SymbolIndex, f: Function) -> list[str]:
    """The normalised listing of one function, for unified diffs."""
    return list(iter_listing(ix, f))


def iter_listing(ix: SymbolIndex, f: Function) -> Iterator[str]:
    nc = normalize_function(ix.image, f)
    return nc.iter_listing(lambda t: describe_target(ix, t))


def mapped_listing(base: SymbolIndex, new: SymbolIndex, corr: Correlation, f: Function) -> list[str]:
    """A base function's listing with targets named as their new-side counterparts."""
    return list(iter_mapped_listing(base, new, corr, f))


def iter_mapped_listing(base: SymbolIndex, new: SymbolIndex, corr: Correlation, f: Function) -> Iterator[str]:
    nc = normalize_function(base.image, f)

    def name(t: int) -> str:
        fb = base.function_at(t)
        if fb is not None and fb.rva in corr.function_map:
            fn = new.function_by_rva[corr.function_map[fb.rva]]
            return fn.name if t == fb.rva else f"{fn.name}+{t - fb.rva:#x}"
        return describe_target(base, t)

    return nc.iter_listing(name)


def first_difference(res: DiffResult, fd: FunctionDiff) -> tuple[str, str] | None:
    """The first differing normalised instruction (base, new) of a changed function."""
    if fd.ref_difference is not None:
        r = fd.ref_difference
        return (f"+{r.offset_base:#x} {r.kind} {r.base_target}", f"+{r.offset_new:#x} {r.kind} {r.new_target}")
    if fd.status != CHANGED:
        return None
    a = iter_mapped_listing(res.base.index, res.new.index, res.correlation, fd.base)
    b = iter_listing(res.new.index, fd.new)
    for x, y in zip_longest(a, b):
        if x != y:
            return (x if x is not None else "(end)", y if y is not None else "(end)")
    return None
