"""Pair the named globals of two builds.

By canonical name, within the module when the name occurs in several (file-level
statics).  A name that occurs several times in one module is a function-level static
(re2c gives every scanner function of cmark-gfm its own ``static const unsigned char
yybm[]``; the PDB names each one ``yybm``): address order would pair them with the
wrong function's copy as soon as a function with such a static is added or removed.
Those are paired by the paired functions that reference them: a base function and its
counterpart that each reference exactly one global of that name (module), or that
reference globals of that name at the same positions of equally long reference lists,
vote for that pair; a pair every vote agrees on is made first, the rest of the name
falls back to address order.  ``__ref_`` slots are hot-patch plumbing and pair like any.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pehotpatch.codemap import FuncCode
from pehotpatch.image.symbols import Global, SymbolIndex


@dataclass
class GlobalPairs:
    pairs: list[tuple[Global, Global]] = field(default_factory=list)
    removed: list[Global] = field(default_factory=list)
    added: list[Global] = field(default_factory=list)


def module_key(module: str | None) -> str | None:
    """An object's name without its directory: the two builds may be made in different
    directories (the PDB records each object's full path)."""
    if module is None:
        return None
    return module.replace("\\", "/").rsplit("/", 1)[-1].lower()


def _homonyms(ix: SymbolIndex, canon: Callable[[str], str]) -> dict[int, tuple[str, str | None]]:
    """rva -> (name, module) of every global whose name occurs more than once in its module."""
    groups: dict[tuple[str, str | None], list[Global]] = defaultdict(list)
    for g in ix.globals:
        groups[canon(g.name), module_key(g.module)].append(g)
    return {g.rva: key for key, gs in groups.items() if len(gs) > 1 for g in gs}


def _holder(ix: SymbolIndex, homonyms: dict[int, tuple[str, str | None]], t: int) -> int | None:
    """The homonym global that reference target ``t`` falls in (``yybm+0x20`` is ``yybm``)."""
    g = ix.global_at(t)
    return g.rva if g is not None and g.rva in homonyms else None


def _referenced(ix: SymbolIndex, code: FuncCode | None, homonyms: dict[int, tuple[str, str | None]]
                ) -> list[int | None]:
    """Per reference of ``code``, the homonym it falls in, or None."""
    if code is None:
        return []
    return [_holder(ix, homonyms, t) for _, _, t in code.refs]


def reference_votes(base: SymbolIndex, new: SymbolIndex, fmap: dict[int, int],
                    bcode: dict[int, FuncCode], ncode: dict[int, FuncCode],
                    canon: Callable[[str], str]) -> dict[int, int]:
    """Base global -> new global for homonyms in one module, from the paired functions
    that reference them; only pairs that no vote contradicts."""
    hb, hn = _homonyms(base, canon), _homonyms(new, canon)
    if not hb or not hn:
        return {}
    votes: Counter[tuple[int, int]] = Counter()
    for brva, nrva in fmap.items():
        rb, rn = _referenced(base, bcode.get(brva), hb), _referenced(new, ncode.get(nrva), hn)
        if not any(x is not None for x in rb) or not any(x is not None for x in rn):
            continue
        if len(rb) == len(rn):
            for tb, tn in zip(rb, rn, strict=True):
                if tb is not None and tn is not None and hb[tb] == hn[tn]:
                    votes[tb, tn] += 1
            continue
        by_key_b: dict[tuple[str, str | None], set[int]] = defaultdict(set)
        by_key_n: dict[tuple[str, str | None], set[int]] = defaultdict(set)
        for t in rb:
            if t is not None:
                by_key_b[hb[t]].add(t)
        for t in rn:
            if t is not None:
                by_key_n[hn[t]].add(t)
        for k, ts in by_key_b.items():
            tn_set = by_key_n.get(k, set())
            if len(ts) == 1 and len(tn_set) == 1:
                votes[next(iter(ts)), next(iter(tn_set))] += 1
    partners_b: dict[int, set[int]] = defaultdict(set)
    partners_n: dict[int, set[int]] = defaultdict(set)
    for tb, tn in votes:
        partners_b[tb].add(tn)
        partners_n[tn].add(tb)
    return {tb: tn for (tb, tn) in sorted(votes) if len(partners_b[tb]) == 1 and len(partners_n[tn]) == 1}


def pair_globals(base: SymbolIndex, new: SymbolIndex, canon: Callable[[str], str],
                 votes: dict[int, int] | None = None) -> GlobalPairs:
    """Pair by canonical name (module first when a name is in several), taking the pairs
    in ``votes`` (base rva -> new rva) first."""
    out = GlobalPairs()
    votes = votes or {}
    nglob: dict[str, list[Global]] = defaultdict(list)
    for g in new.globals:
        nglob[canon(g.name)].append(g)
    nby = {g.rva: g for g in new.globals}
    taken: set[int] = set()
    decided: dict[int, Global] = {}
    for g in base.globals:
        c = nby.get(votes.get(g.rva, -1))
        if c is not None and c.rva not in taken and canon(c.name) == canon(g.name):
            taken.add(c.rva)
            decided[g.rva] = c
    for g in base.globals:
        if g.rva in decided:
            out.pairs.append((g, decided[g.rva]))
            continue
        cands = [c for c in nglob.get(canon(g.name), []) if c.rva not in taken]
        if g.module is not None and len(cands) > 1:
            cands = [c for c in cands if module_key(c.module) == module_key(g.module)] or cands
        if cands:
            taken.add(cands[0].rva)
            out.pairs.append((g, cands[0]))
        else:
            out.removed.append(g)
    out.added = [g for g in new.globals if g.rva not in taken]
    return out
