"""Call-site evidence for pairing functions: the callees of a paired function whose code
changed, and what the call graph says against a pair.

A function that changed between two builds usually still calls mostly the same
functions in the same order.  Its references are read as a sequence of tokens: a callee
already paired (in the new build's terms), an import, or an unpaired function (a
wildcard).  The known tokens of the two sequences are aligned by a longest common
subsequence; between two consecutive aligned tokens (or the ends), when each side
references exactly one unpaired function, of the same kind of reference, the two are a
vote for a pair.  Votes from all callers are pooled: a pair is made only when its two
functions voted for nothing else (:func:`unanimous`).  Two unpaired callees between the
same two known calls, or a caller that now calls another function in between, give no
vote: ambiguity leaves functions unpaired rather than guessing.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING

from pehotpatch.correlate.lcs import lcs

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.image.pe import PEImage

#: Larger alignments (cells of the LCS table) are skipped; such callers are rare and
#: their callees usually have other evidence.
MAX_CELLS = 40_000

Token = tuple  # ("k", kind, known id) or ("u", kind, target RVA)


def _collapse(tokens: list[Token]) -> list[Token]:
    """Repeated consecutive references to one function count once (a callee called in
    a loop, or on two paths that the compiler laid out one after the other)."""
    out: list[Token] = []
    for t in tokens:
        if not out or out[-1] != t:
            out.append(t)
    return out


def _gaps(btokens: list[Token], ntokens: list[Token], *,
          clean: bool = False) -> list[tuple[list[Token], list[Token]]]:
    """The unpaired functions between consecutive aligned known tokens, per gap: each
    side's distinct wildcards in order of first reference.  With ``clean``, a gap that
    also holds a known token left out of the alignment (a call lost or gained there: a
    removed callee replaced by a known look-alike) comes out empty, and a caller whose
    calls were reordered (a known callee on both sides that the alignment leaves out
    everywhere) has no gaps."""
    bt, nt = _collapse(btokens), _collapse(ntokens)
    bk = [i for i, t in enumerate(bt) if t[0] == "k"]
    nk = [j for j, t in enumerate(nt) if t[0] == "k"]
    if len(bk) * len(nk) > MAX_CELLS:
        return []
    matched = lcs([bt[i] for i in bk], [nt[j] for j in nk])
    if clean:
        aligned = {bt[bk[i]] for i, _ in matched}
        if any(t not in aligned for t in {bt[i] for i in bk} & {nt[j] for j in nk}):
            return []
    bounds = [(-1, -1), *((bk[i], nk[j]) for i, j in matched), (len(bt), len(nt))]
    out: list[tuple[list[Token], list[Token]]] = []
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:], strict=False):
        gb, gn = bt[i0 + 1 : i1], nt[j0 + 1 : j1]
        if clean and any(t[0] == "k" for t in (*gb, *gn)):
            out.append(([], []))
            continue
        out.append((list(dict.fromkeys(t for t in gb if t[0] == "u")),
                    list(dict.fromkeys(t for t in gn if t[0] == "u"))))
    return out


def votes(btokens: list[Token], ntokens: list[Token]) -> list[tuple[int, int, bool]]:
    """``(base target, new target, alone)`` votes from one paired caller's two token
    sequences: in each gap with as many unpaired functions on both sides, referenced by
    the same kinds of reference in the same order, the k-th on one side with the k-th on
    the other; ``alone`` when the gap holds one on each side (the surest vote).

    A vote counts only when the alignment gives it both ways: read from the start
    (ties in the alignment going to the earliest tokens, gaps ordered by first
    reference) and from the end (the latest, by last reference).  A callee whose
    place depends on how a tie is broken, or two callees whose calls interleave, give
    no vote."""
    fwd = _votes(btokens, ntokens)
    back = set(_votes(btokens[::-1], ntokens[::-1]))
    return [v for v in fwd if v in back]


def _votes(btokens: list[Token], ntokens: list[Token]) -> list[tuple[int, int, bool]]:
    out: list[tuple[int, int, bool]] = []
    for ub, un in _gaps(btokens, ntokens, clean=True):
        if ub and len(ub) == len(un) and [t[1] for t in ub] == [t[1] for t in un]:
            out.extend((tb[2], tn[2], len(ub) == 1) for tb, tn in zip(ub, un, strict=True))
    return out


def placed_apart(btokens: list[Token], ntokens: list[Token], tb: int, tn: int, call_kind: int) -> bool:
    """The caller references ``tb`` (base) only in gaps of its aligned call sequences
    where the new side references no unpaired function, and ``tn`` (new) only in gaps
    where the base side references none: the caller calls them at different places, and
    each place lost or gained a call, so they are not one function.  (Gaps with unpaired
    functions on both sides say nothing: the callees may just have been reordered.)
    Apart both ways, as for :func:`votes`."""
    # Anchored on calls only: a tail jump moves with the layout of the blocks.  Apart
    # read from the start and from the end (see votes).
    bt, nt = ([t for t in ts if t[0] == "u" or t[1] == call_kind] for ts in (btokens, ntokens))
    return _apart(_gaps(bt, nt), tb, tn) and _apart(_gaps(bt[::-1], nt[::-1]), tb, tn)


def _apart(gaps: list[tuple[list[Token], list[Token]]], tb: int, tn: int) -> bool:
    gb = [k for k, (ub, _) in enumerate(gaps) if any(t[2] == tb for t in ub)]
    gn = [k for k, (_, un) in enumerate(gaps) if any(t[2] == tn for t in un)]
    return bool(gb and gn and all(not gaps[k][1] for k in gb) and all(not gaps[k][0] for k in gn))


def unanimous(pooled: Iterable[tuple[int, int]], ok: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """The pairs whose base target voted for no other new target and whose new target
    got no vote from another base target, and that ``ok`` accepts."""
    fwd: dict[int, set[int]] = defaultdict(set)
    back: dict[int, set[int]] = defaultdict(set)
    for tb, tn in pooled:
        fwd[tb].add(tn)
        back[tn].add(tb)
    out = []
    for tb, tns in sorted(fwd.items()):
        if len(tns) == 1:
            (tn,) = tns
            if len(back[tn]) == 1 and ok(tb, tn):
                out.append((tb, tn))
    return out


def agreeing(*results: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs of several kinds of votes, each already unanimous on its own, that no
    pair of another kind contradicts (the same function paired with another)."""
    fwd: dict[int, set[int]] = defaultdict(set)
    back: dict[int, set[int]] = defaultdict(set)
    for res in results:
        for tb, tn in res:
            fwd[tb].add(tn)
            back[tn].add(tb)
    return sorted({(tb, tn) for res in results for tb, tn in res
                   if len(fwd[tb]) == 1 and len(back[tn]) == 1})


def callers(code_refs: Iterable[tuple[int, Iterable[tuple[int, int, int]]]], starts: Iterable[int]
            ) -> dict[int, set[int]]:
    """For every function start, the functions that reference it."""
    known = set(starts)
    out: dict[int, set[int]] = defaultdict(set)
    for rva, refs in code_refs:
        for _, _, t in refs:
            if t in known and t != rva:
                out[t].add(rva)
    return out


# -- switch tables ---------------------------------------------------------------------

_MAX_TABLE = 1024


def jump_table(img: PEImage, t: int, lo: int, hi: int) -> list[int] | None:
    """The entries (offsets from ``lo``) of a jump table at ``t`` whose targets all lie
    in the function [lo, hi): 32-bit offsets from the table (clang, x64) or 32-bit RVAs
    (MSVC); the table ends at the first entry outside the function; two entries at least."""
    sec = img.section_at(t)
    if sec is None or sec.executable:
        return None
    blob = img.try_read(t, min(4 * _MAX_TABLE, max(0, sec.rva + sec.size - t)) & ~3)
    if not blob or len(blob) < 8:
        return None
    for relative in (True, False):
        out: list[int] = []
        for (v,) in struct.iter_unpack("<i" if relative else "<I", blob):
            dest = t + v if relative else v
            if not lo <= dest < hi:
                break
            out.append(dest - lo)
        if len(out) >= 2:
            return out
    return None


def case_targets(entries: list[int], refs: Iterable[tuple[int, int, int]], targets: Container[int]
                 ) -> list[tuple[int, int] | None]:
    """For each entry of a switch table, the first reference in its case block to one of
    ``targets`` (as ``(kind, target)``), or None: the block runs from the entry to the
    next entry's block, and the most common entry (the default) has none."""
    common = max(set(entries), key=lambda e: (entries.count(e), -e))
    starts = sorted(set(entries))
    refs = sorted(refs)
    first: dict[int, tuple[int, int] | None] = {}
    for i, e in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else 1 << 40
        first[e] = next(((k, t) for o, k, t in refs if e <= o < end and t in targets), None)
    return [None if e == common else first[e] for e in entries]


def table_votes(bcases: list[list[tuple[int, int] | None]], ncases: list[list[tuple[int, int] | None]],
                ) -> list[tuple[int, int]]:
    """Votes from the switch tables of one paired function: case k of a base table and
    case k of a new table of the same length reach their callees by the same kind of
    reference.  Every pairing of tables votes; a wrong pairing of two tables votes
    against the right one, and :func:`unanimous` drops both."""
    out: list[tuple[int, int]] = []
    for cb in bcases:
        for cn in ncases:
            if len(cb) != len(cn):
                continue
            for x, y in zip(cb, cn, strict=True):
                if x is not None and y is not None and x[0] == y[0]:
                    out.append((x[1], y[1]))
    return out


def majority(votes: dict[tuple[int, int], int], *, strict: bool = False,
             mutual: bool = False) -> list[tuple[int, int]]:
    """For each base address, the new address with the most votes (ties: the lowest;
    with ``strict``, a tie is no answer); with ``mutual``, only when that base address
    is also the new address's answer read the other way."""
    if mutual:
        back = set(majority({(tn, tb): v for (tb, tn), v in votes.items()}, strict=strict))
        return [(tb, tn) for tb, tn in majority(votes, strict=strict) if (tn, tb) in back]
    best: dict[int, tuple[int, int]] = {}
    tied: set[int] = set()
    for (tb, tn), v in votes.items():
        cur = best.get(tb)
        if cur is None or v > cur[0]:
            best[tb] = (v, tn)
            tied.discard(tb)
        elif v == cur[0]:
            tied.add(tb)
            if tn < cur[1]:
                best[tb] = (v, tn)
    return sorted((tb, tn) for tb, (_, tn) in best.items() if not (strict and tb in tied))
