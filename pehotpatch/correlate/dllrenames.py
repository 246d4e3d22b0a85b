"""Import DLLs renamed between two builds (a bundled library whose file name carries a
build hash), so that their imports compare as the same functions."""

from __future__ import annotations

from collections import defaultdict

from pehotpatch.image.symbols import SymbolIndex


def import_renames(base: SymbolIndex, new: SymbolIndex) -> dict[str, str]:
    """Import DLLs that were renamed between the builds, as ``{old key: new key}``.

    A DLL imported only by the base pairs with one imported only by the new image when
    they share at least half of their imported functions (and no other candidate shares
    as many): e.g. a bundled library whose file name carries a build hash
    (``libfoo-0a1b2c.dll`` -> ``libfoo-3d4e5f.dll``)."""
    def by_dll(ix: SymbolIndex) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for i in ix.image.imports:
            out[i.dll.lower()].add(i.key.partition("!")[2])
        return out

    bd, nd = by_dll(base), by_dll(new)
    gone = sorted(set(bd) - set(nd))
    came = sorted(set(nd) - set(bd))
    renames: dict[str, str] = {}
    taken: set[str] = set()
    for old in gone:
        scored = sorted(((len(bd[old] & nd[c]), c) for c in came if c not in taken), reverse=True)
        if not scored:
            continue
        best, cand = scored[0]
        if best * 2 < max(len(bd[old]), len(nd[cand])) or (len(scored) > 1 and scored[1][0] == best):
            continue
        taken.add(cand)
        renames[old] = cand
    return {f"{old}!{fn}": f"{nw}!{fn}" for old, nw in renames.items() for fn in bd[old]}
