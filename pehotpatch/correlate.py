"""Pair the functions and globals of two builds.

Order of evidence, strongest first; every pair records how it was made:

1. ``name``: the same (canonical) name on both sides, from PDB, publics, COFF
   symbols or exports; identical-code-folded aliases share a function.
2. ``content-hash``: an unpaired function whose normalised body and resolvable
   references (imports, named targets) occur exactly once on each side.
3. ``call-graph``: paired functions with the same shape reference unpaired
   functions at the same positions; those targets pair up (majority vote).
4. ``order``: between two paired neighbours, runs of unpaired functions pair in
   address order (equal runs one to one, others along functions of similar size).

The same alignment votes induce a map for unnamed data (``data_map``), so data
referenced without a symbol compares by identity rather than by address.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pehotpatch.codemap import FuncCode
from pehotpatch.image.symbols import Function, Global, SymbolIndex

_SUFFIX = re.compile(r"(\.(cold|part|isra|constprop|llvm|lto_priv|localalias)(\.\d+)*)+$")


def canonical_name(name: str) -> str:
    """A name without compiler-added suffixes (``f.cold``, ``f.llvm.123``)."""
    return _SUFFIX.sub("", name)


@dataclass(frozen=True, slots=True)
class FunctionPair:
    base: Function
    new: Function
    method: str


@dataclass(frozen=True, slots=True)
class GlobalPair:
    base: Global
    new: Global
    method: str


@dataclass
class Correlation:
    functions: list[FunctionPair] = field(default_factory=list)
    removed_functions: list[Function] = field(default_factory=list)
    added_functions: list[Function] = field(default_factory=list)
    globals: list[GlobalPair] = field(default_factory=list)
    removed_globals: list[Global] = field(default_factory=list)
    added_globals: list[Global] = field(default_factory=list)
    function_map: dict[int, int] = field(default_factory=dict)  # base start -> new start
    global_map: dict[int, int] = field(default_factory=dict)
    data_map: dict[int, int] = field(default_factory=dict)  # unnamed data, by votes
    # import keys of the base ("old.dll!f") in the new image's terms, for DLLs renamed
    # between the builds (see import_renames); keys not in it are unchanged
    import_map: dict[str, str] = field(default_factory=dict)

    def import_key(self, base_key: str) -> str:
        return self.import_map.get(base_key, base_key)

    def methods(self) -> dict[str, int]:
        return dict(sorted(Counter(p.method for p in self.functions).items()))


class _Pairer:
    def __init__(self, base: SymbolIndex, new: SymbolIndex,
                 bcode: dict[int, FuncCode], ncode: dict[int, FuncCode],
                 import_map: dict[str, str] | None = None):
        self.base, self.new = base, new
        self.import_map = import_map or {}
        self.bcode, self.ncode = bcode, ncode
        self.fmap: dict[int, int] = {}
        self.rfmap: dict[int, int] = {}
        self.method: dict[int, str] = {}
        self.dmap: dict[int, int] = {}
        self._settled: set[int] = set()  # pairs with no unpaired function targets left

    def pair(self, b: Function, n: Function, method: str) -> bool:
        """Pair ``b`` with ``n`` unless either is paired already or, for any evidence
        but the name itself, both have names and no name in common (a function renamed
        between the builds is removed and added, not changed)."""
        if b.rva in self.fmap or n.rva in self.rfmap:
            return False
        if method != "name" and _named_apart(b, n):
            return False
        self.fmap[b.rva] = n.rva
        self.rfmap[n.rva] = b.rva
        self.method[b.rva] = method
        return True

    # -- 1. names ------------------------------------------------------------------------
    def by_name(self) -> None:
        def names(ix: SymbolIndex) -> dict[str, list[Function]]:
            out: dict[str, list[Function]] = defaultdict(list)
            for f in ix.functions:
                if not f.named:
                    continue
                for nm in {f.name, *f.aliases}:
                    out[canonical_name(nm)].append(f)
            return out

        bn, nn = names(self.base), names(self.new)
        for name in sorted(bn.keys() & nn.keys()):
            bl, nl = bn[name], nn[name]
            if len(bl) == 1 and len(nl) == 1:
                self.pair(bl[0], nl[0], "name")
                continue
            # Same name in several modules (static functions): by module, then order.
            by_mod = defaultdict(list)
            for f in nl:
                by_mod[f.module].append(f)
            rest_b = []
            for f in bl:
                cand = [c for c in by_mod.get(f.module, []) if c.rva not in self.rfmap]
                if f.module is not None and len(cand) == 1:
                    self.pair(f, cand[0], "name")
                else:
                    rest_b.append(f)
            rest_n = [f for f in nl if f.rva not in self.rfmap]
            if len(rest_b) == len(rest_n):
                for b, n in zip(rest_b, rest_n, strict=True):
                    self.pair(b, n, "name")

    # -- 2. content hash -----------------------------------------------------------------
    def _stable_key(self, ix: SymbolIndex, code: FuncCode, mapped: dict[int, int] | None) -> tuple:
        refs: list[tuple] = []
        slots = ix.imports_by_slot
        imap = self.import_map if mapped is not None else {}
        for _, kind, t in code.refs:
            if t in slots:
                refs.append((kind, imap.get(slots[t], slots[t])))
            elif mapped is not None and t in mapped:
                refs.append((kind, "f", mapped[t]))
            elif mapped is None and t in self.rfmap:
                refs.append((kind, "f", t))
            else:
                refs.append((kind, "?"))
        return (code.digest, tuple(refs))

    def by_content(self) -> int:
        ub = [f for f in self.base.functions if f.rva not in self.fmap and f.rva in self.bcode]
        un = [f for f in self.new.functions if f.rva not in self.rfmap and f.rva in self.ncode]
        if not ub or not un:
            return 0
        kb: dict[tuple, list[Function]] = defaultdict(list)
        kn: dict[tuple, list[Function]] = defaultdict(list)
        for f in ub:
            kb[self._stable_key(self.base, self.bcode[f.rva], self.fmap)].append(f)
        for f in un:
            kn[self._stable_key(self.new, self.ncode[f.rva], None)].append(f)
        made = 0
        for key, bl in kb.items():
            nl = kn.get(key)
            if nl and len(bl) == 1 and len(nl) == 1:
                made += self.pair(bl[0], nl[0], "content-hash")
        return made

    # -- 3. call graph (and data) votes --------------------------------------------------
    def by_votes(self, *, data: bool = False) -> int:
        """Pair unpaired functions referenced at the same positions by paired ones;
        with ``data``, also rebuild the map of unnamed data addresses."""
        fvotes: dict[tuple[int, int], int] = defaultdict(int)
        dvotes: dict[tuple[int, int], int] = defaultdict(int)
        bstarts, nstarts = self.base.function_by_rva, self.new.function_by_rva
        fmap, rfmap = self.fmap, self.rfmap
        # Without ``data``, only pairs that still reference unpaired functions can vote;
        # pairs whose targets are all paired are skipped in later rounds.
        todo = list(fmap.items()) if data else [
            (b, n) for b, n in fmap.items() if b not in self._settled
        ]
        for brva, nrva in todo:
            cb, cn = self.bcode.get(brva), self.ncode.get(nrva)
            if cb is None or cn is None or len(cb.refs) != len(cn.refs):
                self._settled.add(brva)
                continue
            if cb.digest != cn.digest and len(cb.refs) < 2:
                self._settled.add(brva)
                continue
            pending = False
            for (_, kb, tb), (_, kn, tn) in zip(cb.refs, cn.refs, strict=True):
                if kb != kn:
                    continue
                if tb in bstarts:
                    if tn in nstarts and tb not in fmap and tn not in rfmap:
                        fvotes[tb, tn] += 1
                        pending = True
                elif data and tn not in nstarts:
                    dvotes[tb, tn] += 1
            if not pending:
                self._settled.add(brva)
        made = 0
        for tb, tn in _winners(fvotes):
            if tb not in fmap and tn not in rfmap:
                made += self.pair(bstarts[tb], nstarts[tn], "call-graph")
        if data:
            self.dmap = dict(_winners(dvotes))
        return made

    # -- 4. order --------------------------------------------------------------------------
    def by_order(self) -> int:
        """Between two paired neighbours (pairs in the same order on both sides), unpaired
        functions pair in address order: equal runs of up to 64 one to one when their
        sizes are within a factor of 4; other runs by the longest in-order sequence of
        functions of similar size (within 25 %)."""
        anchors = _in_order(sorted(self.fmap.items()))
        bf = [f for f in self.base.functions if f.rva not in self.fmap]
        nf = [f for f in self.new.functions if f.rva not in self.rfmap]
        if not bf or not nf:
            return 0
        made = 0
        bounds = [(-1, -1), *anchors, (1 << 40, 1 << 40)]
        bstarts = [f.rva for f in bf]
        nstarts = [f.rva for f in nf]
        for (b0, n0), (b1, n1) in zip(bounds, bounds[1:], strict=False):
            bi = bf[bisect.bisect_right(bstarts, b0) : bisect.bisect_left(bstarts, b1)]
            ni = nf[bisect.bisect_right(nstarts, n0) : bisect.bisect_left(nstarts, n1)]
            if not bi or not ni:
                continue
            if len(bi) == len(ni) and len(bi) <= 64:
                pairs = [(b, n) for b, n in zip(bi, ni, strict=True)
                         if max(b.size, n.size) <= 4 * max(1, min(b.size, n.size))]
            elif len(bi) * len(ni) <= _MAX_ALIGN_CELLS:
                pairs = _align(bi, ni)
            else:
                continue
            for b, n in pairs:
                made += self.pair(b, n, "order")
        return made


_MAX_ALIGN_CELLS = 250_000


def _named_apart(b: Function, n: Function) -> bool:
    """Both functions have names (PDB, publics, exports) and share none of them."""
    if not (b.named and n.named):
        return False
    names_b = {canonical_name(x) for x in (b.name, *b.aliases)}
    return not names_b & {canonical_name(x) for x in (n.name, *n.aliases)}


def _similar(b: Function, n: Function) -> bool:
    return 4 * abs(b.size - n.size) <= max(b.size, n.size)


def _align(bi: list[Function], ni: list[Function]) -> list[tuple[Function, Function]]:
    """The longest sequence of in-order pairs of similar size (an LCS)."""
    m, n = len(bi), len(ni)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m - 1, -1, -1):
        row, below = dp[i], dp[i + 1]
        b = bi[i]
        for j in range(n - 1, -1, -1):
            if _similar(b, ni[j]):
                row[j] = below[j + 1] + 1
            else:
                row[j] = max(below[j], row[j + 1])
    out = []
    i = j = 0
    while i < m and j < n:
        if _similar(bi[i], ni[j]) and dp[i][j] == dp[i + 1][j + 1] + 1:
            out.append((bi[i], ni[j]))
            i += 1
            j += 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def _in_order(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence of ``pairs`` (sorted by base address) whose new addresses
    increase too: pairs that cross it would make the gaps between anchors meaningless."""
    tails: list[int] = []  # tails[k]: new address ending the best chain of length k+1
    tail_idx: list[int] = []
    prev = [-1] * len(pairs)
    for i, (_b, n) in enumerate(pairs):
        k = bisect.bisect_left(tails, n)
        if k == len(tails):
            tails.append(n)
            tail_idx.append(i)
        else:
            tails[k] = n
            tail_idx[k] = i
        prev[i] = tail_idx[k - 1] if k else -1
    out = []
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        out.append(pairs[i])
        i = prev[i]
    return out[::-1]


def _winners(votes: dict[tuple[int, int], int]) -> list[tuple[int, int]]:
    """For each base address, the new address with the most votes (ties: the lowest)."""
    best: dict[int, tuple[int, int]] = {}
    for (tb, tn), v in votes.items():
        cur = best.get(tb)
        if cur is None or v > cur[0] or (v == cur[0] and tn < cur[1]):
            best[tb] = (v, tn)
    return sorted((tb, tn) for tb, (_, tn) in best.items())


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


def correlate(base: SymbolIndex, new: SymbolIndex,
              bcode: dict[int, FuncCode], ncode: dict[int, FuncCode]) -> Correlation:
    imap = import_renames(base, new)
    p = _Pairer(base, new, bcode, ncode, imap)
    p.by_name()
    for _ in range(4):
        made = p.by_content() + p.by_votes()
        if not made:
            break
    p.by_order()
    p.by_votes(data=True)  # the data map, from the final pairs

    corr = Correlation(function_map=dict(p.fmap), data_map=p.dmap, import_map=imap)
    nby = new.function_by_rva
    for f in base.functions:
        n = p.fmap.get(f.rva)
        if n is None:
            corr.removed_functions.append(f)
        else:
            corr.functions.append(FunctionPair(f, nby[n], p.method[f.rva]))
    corr.added_functions = [f for f in new.functions if f.rva not in p.rfmap]

    # Globals: by canonical name; __ref_ slots are hot-patch plumbing and pair like any.
    nglob: dict[str, list[Global]] = defaultdict(list)
    for g in new.globals:
        nglob[canonical_name(g.name)].append(g)
    taken: set[int] = set()
    for g in base.globals:
        cands = [c for c in nglob.get(canonical_name(g.name), []) if c.rva not in taken]
        if g.module is not None and len(cands) > 1:
            cands = [c for c in cands if c.module == g.module] or cands
        if cands:
            c = cands[0]
            taken.add(c.rva)
            corr.globals.append(GlobalPair(g, c, "name"))
            corr.global_map[g.rva] = c.rva
        else:
            corr.removed_globals.append(g)
    corr.added_globals = [g for g in new.globals if g.rva not in taken]
    return corr
