"""Pair the functions and globals of two builds.

Order of evidence, strongest first; every pair records how it was made:

1. ``name``: the same (canonical) name on both sides, from PDB, publics, COFF
   symbols or exports; identical-code-folded aliases share a function.
2. ``content-hash``: an unpaired function whose normalised body and resolvable
   references (imports, named targets) occur exactly once on each side.
3. ``call-graph``: paired functions with the same shape reference unpaired
   functions at the same positions; those targets pair up (majority vote).
4. ``call-site``: paired functions whose code changed still call mostly the same
   functions; their call sequences are aligned on the callees already known, and an
   unpaired callee that is the only one between the same two known calls on both
   sides pairs with its counterpart, when every such vote agrees
   (:mod:`pehotpatch.correlate.callsites`).
5. ``order``: between two paired neighbours, runs of unpaired functions pair in
   address order (equal runs one to one, others along functions of similar size that
   have no other candidate of similar size in the run).

Every evidence but the name needs the code to be comparable (``comparable``: sizes,
and instruction counts when known, within a factor of two, with 16 bytes of slack for
alignment); order also refuses a pair that the call graph contradicts (the two are
called by different paired functions, or call disjoint sets of known functions).  A
function left unpaired is reported removed and added, which the gate treats
conservatively; a wrong pair would compare a function with another's code.

The same alignment votes induce a map for unnamed data (``data_map``), so data
referenced without a symbol compares by identity rather than by address; data reached
only through pointers in mapped data is added by those pointers (:mod:`pehotpatch.correlate.datamap`).
"""

from __future__ import annotations

import bisect
from collections import defaultdict

import pehotpatch.cache as cache
from pehotpatch.codemap import KIND_CODES, FuncCode
from pehotpatch.correlate import callsites
from pehotpatch.correlate.apart import named_apart, thunk_import, within
from pehotpatch.correlate.datamap import pointer_targets
from pehotpatch.correlate.dllrenames import import_renames
from pehotpatch.correlate.globals import module_key, pair_globals, reference_votes
from pehotpatch.correlate.model import Correlation, FunctionPair, GlobalPair, canonical_name
from pehotpatch.correlate.order import align, in_order, sole_match
from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.vocab import RefKind


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
        self._sites_done: set[int] = set()  # the same, for call-site votes
        self._case_cache: tuple[dict, dict] = ({}, {})
        self._fn_targets: dict[int, tuple[int, ...]] = {}  # base function -> functions it references
        # functions whose call graph names a counterpart too unlike to pair (base, new)
        self._spoken_b: set[int] = set()
        self._spoken_n: set[int] = set()
        self._callers: tuple[dict[int, set[int]], dict[int, set[int]]] | None = None

    def pair(self, b: Function, n: Function, method: str, *, likeness: bool = True) -> bool:
        """Pair ``b`` with ``n`` unless either is paired already or, for any evidence
        but the name itself, both have names and no name in common (a function renamed
        between the builds is removed and added, not changed); call-graph, call-site and
        order evidence also need comparable code (:meth:`comparable`), unless ``likeness``
        is off."""
        if b.rva in self.fmap or n.rva in self.rfmap:
            return False
        if method != "name" and (named_apart(b, n) or self._other_imports(b.rva, n.rva)):
            return False
        if method in _NEEDS_LIKENESS and likeness and not self.comparable(b, n):
            # The call graph names a counterpart too unlike to be the same function (a
            # rename that kept its callers): neither is for order to pair with a third.
            self._spoken_b.add(b.rva)
            self._spoken_n.add(n.rva)
            return False
        self.fmap[b.rva] = n.rva
        self.rfmap[n.rva] = b.rva
        self.method[b.rva] = method
        return True

    def comparable(self, b: Function, n: Function) -> bool:
        """Code similar enough to be one function in two builds: sizes, and instruction
        counts where both are known, within a factor of two, with a slack of 32 bytes and
        8 instructions (a small function that grows by a few instructions is still itself:
        Brotli's `SaveErrorCode`, 15 bytes and 6 instructions, has 50 and 13 in 1.1.0;
        the function that replaced `BrotliInitEncoderDictionary` at its one call site has
        323 bytes for its 100)."""
        if not within(b.size, n.size, 2, 32):
            return False
        cb, cn = self.bcode.get(b.rva), self.ncode.get(n.rva)
        return cb is None or cn is None or cb.digest == cn.digest or within(cb.n_insns, cn.n_insns, 2, 8)

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
            # Same name in several modules (static functions): by module (its object's
            # file name: the builds may be in different directories), then order.
            by_mod = defaultdict(list)
            for f in nl:
                by_mod[module_key(f.module)].append(f)
            rest_b = []
            for f in bl:
                cand = [c for c in by_mod.get(module_key(f.module), []) if c.rva not in self.rfmap]
                if f.module is not None and len(cand) == 1:
                    self.pair(f, cand[0], "name")
                else:
                    rest_b.append(f)
            rest_n = [f for f in nl if f.rva not in self.rfmap]
            if len(rest_b) == len(rest_n):
                for b, n in zip(rest_b, rest_n, strict=True):
                    self.pair(b, n, "name")

    def _other_imports(self, brva: int, nrva: int) -> bool:
        """Both are import thunks (a jump through an import slot, ``__imp_`` stubs the
        linker makes) of different imports: however alike the code and callers, never
        one function."""
        kb = thunk_import(self.base, self.bcode.get(brva))
        kn = thunk_import(self.new, self.ncode.get(nrva))
        return kb is not None and kn is not None and self.import_map.get(kb, kb) != kn

    # -- a pairing read back from the cache ------------------------------------------
    def state(self) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]]]:
        """The function pairs (in the order made) and the data map, as plain tuples."""
        return [(b, n, self.method[b]) for b, n in self.fmap.items()], list(self.dmap.items())

    def restore(self, state: object) -> bool:
        """Take the pairing :meth:`state` gave, if it fits these indexes."""
        try:
            pairs: list[tuple[int, int, str]]
            dmap: list[tuple[int, int]]
            pairs, dmap = state  # type: ignore[misc]
            bby, nby = self.base.function_by_rva, self.new.function_by_rva
            if not all(b in bby and n in nby and isinstance(m, str) for b, n, m in pairs):
                return False
            fmap = {b: n for b, n, _ in pairs}
            if len(fmap) != len(pairs) or len(set(fmap.values())) != len(pairs):
                return False
            self.fmap, self.method = fmap, {b: m for b, _, m in pairs}
            self.rfmap = {n: b for b, n in fmap.items()}
            self.dmap = {int(b): int(n) for b, n in dmap}
            return True
        except (TypeError, ValueError):
            return False

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
        fsame: dict[tuple[int, int], int] = defaultdict(int)  # the votes of unchanged code
        # data votes of pairs with the same code, and of the others (see below)
        dvotes: tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]] = (defaultdict(int), defaultdict(int))
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
            aligned = self._aligned(cb, cn)
            if not aligned and not data:
                self._settled.add(brva)
                continue
            pending = False
            for (_, kb, tb), (_, kn, tn) in zip(cb.refs, cn.refs, strict=True):
                if kb != kn:
                    continue
                if tb in bstarts:
                    if aligned and tn in nstarts and tb not in fmap and tn not in rfmap:
                        fvotes[tb, tn] += 1
                        if cb.digest == cn.digest:
                            fsame[tb, tn] += 1
                        pending = True
                elif data and tn not in nstarts:
                    dvotes[cb.digest != cn.digest][tb, tn] += 1
            if not pending:
                self._settled.add(brva)
        made = 0
        # Code that is the same in both builds references the same function at the same
        # place, however much that function changed: cmark-gfm's `postprocess` callback
        # grows from 193 to 1,900 bytes (it absorbs a helper), and the unchanged
        # `create_autolink_extension` that registers it says which one it is. So these
        # votes pair without the likeness that other call-graph votes need.
        # Both ways: a new function that is the majority of two base ones (a caller
        # switched from a removed function to its look-alike) pairs with neither unless
        # one of them has the most votes for it.
        for tb, tn in callsites.majority(fsame, strict=True, mutual=True):
            if tb not in fmap and tn not in rfmap:
                made += self.pair(bstarts[tb], nstarts[tn], "call-graph", likeness=False)
        # A tie is two callers that disagree (cmark-gfm's `cmark_parser_finish` inlines a
        # changed helper whose calls shift by one; `cmark_parser_free` still calls the
        # same function where it did): no evidence either way.
        for tb, tn in callsites.majority(fvotes, strict=True, mutual=True):
            if tb not in fmap and tn not in rfmap:
                made += self.pair(bstarts[tb], nstarts[tn], "call-graph")
        if data:
            # Code that is the same in both builds names the same data at the same place;
            # changed code may not (a patched function reads a global through its
            # __ref_ slot where the base read it directly), so its votes only count for
            # data that no unchanged code names.
            same = dict(callsites.majority(dvotes[0]))
            self.dmap = {tb: tn for tb, tn in callsites.majority(dvotes[1]) if tb not in same} | same
        return made

    def _aligned(self, cb: FuncCode, cn: FuncCode) -> bool:
        """Reference lists that can be read position by position: every position with a
        paired function on either side pairs those two.  Changed code can keep its count
        of references and still shift them: a function marked for hot patching loads its
        ``__ref_`` slot first where the base read the global last, and a positional vote
        would then pair each callee with its neighbour."""
        fmap, rfmap = self.fmap, self.rfmap
        for (_, _, tb), (_, _, tn) in zip(cb.refs, cn.refs, strict=True):
            if (tb in fmap or tn in rfmap) and fmap.get(tb) != tn:
                return False
        return True

    # -- 4. call sites ----------------------------------------------------------------------
    def _tokens(self, ix: SymbolIndex, code: FuncCode, mapped: dict[int, int] | None,
                paired: dict[int, int], starts: dict[int, Function]) -> list[tuple]:
        slots = ix.imports_by_slot
        imap = self.import_map if mapped is not None else {}
        out: list[tuple] = []
        for _, kind, t in code.refs:
            if t in slots:
                out.append(("k", kind, "i", imap.get(slots[t], slots[t])))
            elif t in paired:
                out.append(("k", kind, "f", mapped[t] if mapped is not None else t))
            elif t in starts:
                out.append(("u", kind, t))
        return out

    def by_call_sites(self, revise: frozenset[str] = frozenset()) -> int:
        """Pair unpaired callees by the aligned call sequences of paired callers
        (:mod:`pehotpatch.correlate.callsites`); only unanimous votes between comparable code.

        Pairs made by a method in ``revise`` count as unpaired here, and a vote against
        one of them undoes it: run after ``order``, the call sites of callers paired by
        order correct look-alikes that order paired the wrong way round."""
        bstarts, nstarts = self.base.function_by_rva, self.new.function_by_rva
        fmap, rfmap = self.fmap, self.rfmap
        if revise:
            known = {b: n for b, n in fmap.items() if self.method[b] not in revise}
            rknown = {n: b for b, n in known.items()}
        else:
            known, rknown = fmap, rfmap
        sites: list[tuple[int, int]] = []
        sure: set[tuple[int, int]] = set()  # votes from gaps with one callee on each side
        cases: list[tuple[int, int]] = []
        for brva, nrva in list(fmap.items()):
            cb, cn = self.bcode.get(brva), self.ncode.get(nrva)
            if cb is None or cn is None or (not revise and brva in self._sites_done):
                continue
            ft = self._fn_targets.get(brva)
            if ft is None:
                ft = self._fn_targets[brva] = tuple({t for _, _, t in cb.refs if t in bstarts})
            if all(t in known for t in ft):
                if not revise:
                    self._sites_done.add(brva)
                continue
            bt = self._tokens(self.base, cb, known, known, bstarts)
            nt = self._tokens(self.new, cn, None, rknown, nstarts)
            bcases, ncases = self._cases(True, brva, cb), self._cases(False, nrva, cn)
            if bcases and ncases:
                cases.extend((tb, tn) for tb, tn in callsites.table_votes(bcases, ncases)
                             if tb in bstarts and tn in nstarts and tb not in known and tn not in rknown)
            for tb, tn, alone in callsites.votes(bt, nt):
                sites.append((tb, tn))
                if alone:
                    sure.add((tb, tn))

        def ok(tb: int, tn: int) -> bool:
            if tb in known or tn in rknown:
                return False
            if fmap.get(tb) == tn or self.comparable(bstarts[tb], nstarts[tn]):
                return True  # (order and call sites agreeing are two pieces of evidence)
            if (tb, tn) in sure:
                # The call sites name a counterpart too unlike to pair: neither is for
                # order to pair with a third, and an order pair of either is undone.
                self._spoken_b.add(tb)
                self._spoken_n.add(tn)
                self._unpair(tb, tn)
            return False

        made = 0
        for tb, tn in callsites.agreeing(callsites.unanimous(sites, ok), callsites.unanimous(cases, ok)):
            if fmap.get(tb) == tn:
                continue
            self._unpair(tb, tn)
            made += self.pair(bstarts[tb], nstarts[tn], "call-site")
        return made

    def _unpair(self, tb: int, tn: int) -> None:
        """Undo the pairs of base ``tb`` and of new ``tn`` (only ever order pairs: the
        callers make sure stronger ones are known and never voted on)."""
        for old in (tb, self.rfmap.get(tn)):
            if old is not None and old in self.fmap:
                del self.rfmap[self.fmap.pop(old)]
                del self.method[old]

    def _cases(self, base: bool, rva: int, code: FuncCode) -> list[list[tuple[int, int] | None]]:
        """The case targets of each switch table of a function (cached)."""
        cache = self._case_cache[0 if base else 1]
        got = cache.get(rva)
        if got is None:
            ix = self.base if base else self.new
            f = ix.function_by_rva[rva]
            starts = ix.function_by_rva.keys()
            got = []
            for t in sorted({t for _, k, t in code.refs if k == _DATA and t not in starts}):
                entries = callsites.jump_table(ix.image, t, f.rva, f.end)
                if entries is not None:
                    got.append(callsites.case_targets(entries, code.refs, starts))
            cache[rva] = got
        return got

    # -- 5. order --------------------------------------------------------------------------
    def by_order(self) -> int:
        """Between two paired neighbours (pairs in the same order on both sides), unpaired
        functions pair in address order: equal runs of up to 64 one to one when their
        sizes are within a factor of 4; other runs by the longest in-order sequence of
        functions of similar size (within 25 %)."""
        anchors = in_order(sorted(self.fmap.items()))
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
                pairs = [(b, n) for b, n in align(bi, ni)
                         if sole_match(b, n, bi, ni) or self._near_twins(b, n)]
            else:
                continue
            for b, n in pairs:
                if not self._contradicted(b, n, placement=not self._same_shape(b, n)):
                    made += self.pair(b, n, "order")
        return made

    def _near_twins(self, b: Function, n: Function) -> bool:
        """Instruction counts within 4 % (at least 2): among look-alikes of similar size,
        what an unchanged or barely changed function shifted by its neighbours looks
        like.  (In Brotli 1.1.0 the instantiations of one template that order would
        confuse differ by 5 % and more; a run of BLAS kernels moved by an inserted
        function differs by up to 4 %.)"""
        cb, cn = self.bcode.get(b.rva), self.ncode.get(n.rva)
        if cb is None or cn is None:
            return False
        return abs(cb.n_insns - cn.n_insns) <= max(2, 0.04 * max(cb.n_insns, cn.n_insns))

    def _same_shape(self, b: Function, n: Function) -> bool:
        """The same size and instruction count: a function whose code changed only in
        what it references (or not at all), at its place in the run."""
        cb, cn = self.bcode.get(b.rva), self.ncode.get(n.rva)
        return cb is not None and cn is not None and b.size == n.size and cb.n_insns == cn.n_insns

    def _contradicted(self, b: Function, n: Function, *, placement: bool = True) -> bool:
        """The call graph speaks against pairing ``b`` with ``n``: both are referenced by
        paired functions but by no common pair, or both reference known functions
        (paired ones, imports) but no common one; with ``placement``, also when every
        common caller calls them at different places (:func:`callsites.placed_apart`).
        That last one reads the order of calls, which a large caller full of inlined
        code can shuffle: cmark-gfm's `cmark_parse_inlines` calls `make_literal` and
        `adjust_subj_node_newlines`, unchanged in size and instruction count, two known
        calls earlier in 0.29.0.gfm.13; so it does not veto a pair of the same shape."""
        if self._callers is None:
            bs, ns = self.base.function_by_rva, self.new.function_by_rva
            self._callers = (callsites.callers(((r, c.refs) for r, c in self.bcode.items()), bs),
                             callsites.callers(((r, c.refs) for r, c in self.ncode.items()), ns))
        callers_b, callers_n = self._callers
        by_b = {self.fmap[c] for c in callers_b.get(b.rva, ()) if c in self.fmap}
        by_n = {c for c in callers_n.get(n.rva, ()) if c in self.rfmap}
        if by_b and by_n and not by_b & by_n:
            return True
        # One side's callers all paired, the other's all unpaired: called from elsewhere
        # (a removed function next to an added look-alike called by new code).
        if (by_b and not by_n and callers_n.get(n.rva)) or (by_n and not by_b and callers_b.get(b.rva)):
            return True
        if b.rva in self._spoken_b or n.rva in self._spoken_n:
            return True
        bs, ns = self.base.function_by_rva, self.new.function_by_rva
        apart = []
        for c in sorted(by_b & by_n) if placement else ():
            cb, cn = self.bcode[self.rfmap[c]], self.ncode[c]
            if (any(x and x[1] == b.rva for t in self._cases(True, self.rfmap[c], cb) for x in t)
                    or any(x and x[1] == n.rva for t in self._cases(False, c, cn) for x in t)):
                continue  # a case of a switch: the compiler lays out case blocks in any order
            bt = self._tokens(self.base, cb, self.fmap, self.fmap, bs)
            nt = self._tokens(self.new, cn, None, self.rfmap, ns)
            apart.append(callsites.placed_apart(bt, nt, b.rva, n.rva, _CALL))
        if apart and all(apart):
            return True
        kb, kn = self._known_callees(b.rva, True), self._known_callees(n.rva, False)
        if (kb and not self._calls_any(n.rva, False)) or (kn and not self._calls_any(b.rva, True)):
            return True
        return bool(kb and kn and not kb & kn)

    def _calls_any(self, rva: int, base: bool) -> bool:
        """References any function or import at all."""
        ix = self.base if base else self.new
        code = (self.bcode if base else self.ncode).get(rva)
        return code is None or any(t in ix.function_by_rva or t in ix.imports_by_slot for _, _, t in code.refs)

    def _known_callees(self, rva: int, base: bool) -> set:
        code = (self.bcode if base else self.ncode).get(rva)
        if code is None:
            return set()
        toks = self._tokens(self.base if base else self.new, code, self.fmap if base else None,
                            self.fmap if base else self.rfmap,
                            (self.base if base else self.new).function_by_rva)
        return {t for t in toks if t[0] == "k"}


_MAX_ALIGN_CELLS = 250_000
_CALL = KIND_CODES[RefKind.CALL]
_DATA = KIND_CODES[RefKind.DATA]
_NEEDS_LIKENESS = frozenset({"call-graph", "call-site"})


def correlate(base: SymbolIndex, new: SymbolIndex,
              bcode: dict[int, FuncCode], ncode: dict[int, FuncCode], *,
              cache_key: str | None = None) -> Correlation:
    """Pair the functions and globals of ``base`` and ``new``.  ``cache_key`` names the
    pairing's entry in :mod:`pehotpatch.cache` (the caller makes it from everything the
    indexes and code maps are made from): the function pairs and the data map are read
    from it when present, else worked out and stored there."""
    imap = import_renames(base, new)
    p = _Pairer(base, new, bcode, ncode, imap)
    if not (cache_key and p.restore(cache.get(cache_key))):
        _pair_functions(p)
        if cache_key:
            cache.put(cache_key, p.state())
    corr = Correlation(function_map=dict(p.fmap), data_map=p.dmap, import_map=imap)
    nby = new.function_by_rva
    for f in base.functions:
        n = p.fmap.get(f.rva)
        if n is None:
            corr.removed_functions.append(f)
        else:
            corr.functions.append(FunctionPair(f, nby[n], p.method[f.rva]))
    corr.added_functions = [f for f in new.functions if f.rva not in p.rfmap]

    # Globals: by name; homonyms in one module by the functions that reference them.
    gp = pair_globals(base, new, canonical_name, reference_votes(base, new, p.fmap, bcode, ncode, canonical_name))
    corr.globals = [GlobalPair(b, n, "name") for b, n in gp.pairs]
    corr.global_map = {b.rva: n.rva for b, n in gp.pairs}
    corr.removed_globals, corr.added_globals = gp.removed, gp.added
    # Unnamed data that only other data points at, by those pointers.
    corr.data_map.update(pointer_targets(base, new, {**corr.data_map, **corr.global_map}))
    return corr


def _pair_functions(p: _Pairer) -> None:
    p.by_name()
    for _ in range(4):
        made = p.by_content() + p.by_votes()
        made = made or p.by_call_sites()
        if not made:
            break
    for _ in range(3):
        if not p.by_order():
            break
        # Call sites again: first those of callers paired by order, which may undo order
        # pairs of look-alikes; then with the order pairs as known callees; and order
        # again between the anchors that made, if any.
        made = p.by_call_sites(revise=frozenset({"order"}))
        for _ in range(4):
            step = p.by_votes() or p.by_call_sites()
            made += step
            if not step:
                break
        if not made:
            break
    p.by_votes(data=True)  # the data map, from the final pairs
