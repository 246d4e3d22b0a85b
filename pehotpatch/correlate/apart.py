"""What rules a pair out, whatever the evidence for it: names that differ, imports that
differ, sizes too far apart."""

from __future__ import annotations

from pehotpatch.codemap import FuncCode
from pehotpatch.correlate.model import canonical_name
from pehotpatch.image.symbols import Function, SymbolIndex


def thunk_import(ix: SymbolIndex, fc: FuncCode | None) -> str | None:
    """The import an import thunk jumps to (as the differ tells thunks: at most three
    instructions, one reference, to an import slot), else None."""
    if fc is None or fc.n_insns > 3 or len(fc.refs) != 1:
        return None
    return ix.imports_by_slot.get(fc.refs[0][2])


def within(a: int, b: int, factor: int, slack: int) -> bool:
    return max(a, b) <= factor * min(a, b) + slack


def named_apart(b: Function, n: Function) -> bool:
    """Both functions have names (PDB, publics, exports) and share none of them."""
    if not (b.named and n.named):
        return False
    names_b = {canonical_name(x) for x in (b.name, *b.aliases)}
    return not names_b & {canonical_name(x) for x in (n.name, *n.aliases)}
