"""HP705, HP706: gate decisions built on function pairs that no name confirms.

Every record of the patch ties a base function to its counterpart in the patch image:
forward (the base function runs the patched one) and backward (patched code calling an
unpatched function is sent to the base's copy).  With names on both sides (a PDB, an
export) the pairing is certain.  Without them the differ pairs by structure (content,
call graph, call sites, address order), which can pick a look-alike; a redirection
built on a wrong pair sends one function's callers into another function's code.
A pair by identical content (the same normalised code and named references, unique on
both sides) is not reported: whichever of two such functions a record names, it runs
the same code.

HP706 is the other side of the same doubt: an unlisted function is left to the base
because it compares equal, and that comparison equates a call in it with a call in the
base only through the pair of a function that changed and was paired by structure.  If
that pair is wrong, the function now calls another function than the base did: it
changed, and HP501 would have said so.
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.reach import CALL, JUMP, UNPATCHED
from pehotpatch.rules import ERROR, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import Side

#: Pairings a redirection may rely on: a name both images give, or identical code.
_CERTAIN = frozenset({"name", "content-hash"})

define(
    "HP705", "RedirectionWithoutName", "redirected function paired without a name", ERROR,
    """A function the patch redirects was paired with its base counterpart by structure,
    not by name: neither a PDB nor an export names it in both images. That holds for a
    patched function (its base copy is redirected to the patch) and for an unpatched
    function that patched code calls or jumps to (the call is sent back to the base's
    copy). Structural pairing (call-graph votes, aligned call sites, address order) can
    take a look-alike for the function; a redirection built on a wrong pair runs one
    function's callers in another function's code. Pairs by identical content are not
    reported (either function runs the same code). Give the base image's PDB (--pdb-base,
    or BASE.pdb next to it) so that every pair is made by name.""",
)

define(
    "HP706", "UnchangedThroughUnnamedPair", "unlisted function unchanged only through a pair made without a name",
    ERROR,
    """A function that is not in the hot-patch set compares equal to its base version,
    but only because a function it calls (or whose address it takes) was paired with
    its base counterpart by structure, not by name, and that function changed. Without
    names, structural pairing (call-graph votes, aligned call sites, address order) can
    take a look-alike for the function: a caller switched from a removed function to a
    look-alike then compares equal, and the change in it is hidden from HP501. If the
    pair is wrong, the running base keeps executing the caller's old code, which calls
    the old function. A pair that the call graph corroborates both ways (every function
    referring to one is the counterpart of one referring to the other) is not doubted.
    Give the base image's PDB (--pdb-base, or BASE.pdb next to it) so
    that every pair is made by name, or add the function to the functions file.""",
)


@checker("HP7xx", emits=("HP705",))
def check_pairing(ctx: Context) -> Iterator[Finding]:
    method = {p.new.rva: p.method for p in ctx.diff.correlation.functions}
    for fd in sorted(ctx.patched, key=lambda fd: (fd.new.name, fd.new.rva)):
        how = method.get(fd.new.rva, fd.method)
        if how not in _CERTAIN:
            yield _finding(fd.new.name, "forward", how, fd.base.rva, fd.new.rva,
                           f"it is patched: the base function at {fd.base.rva:#x} would run it")
    seen: set[int] = set()
    for e in sorted(ctx.reach.edges, key=lambda e: (e.function_rva, e.source_rva, e.offset)):
        if e.target_class != UNPATCHED or e.kind not in (CALL, JUMP) or e.function_rva in seen:
            continue
        paired_by = method.get(e.function_rva)
        if paired_by is None or paired_by in _CERTAIN:
            continue
        seen.add(e.function_rva)
        name = e.target.split("+", 1)[0]
        yield _finding(name, "backward", paired_by, e.base_rva, e.function_rva,
                       f"patched code ({e.source}) {'calls' if e.kind == CALL else 'jumps to'} it: the "
                       f"call would be sent to the base function at {hx(e.base_rva)}")


def _finding(name: str, direction: str, how: str, base_rva: int | None, new_rva: int, why: str) -> Finding:
    return finding(
        "HP705", f"{name} is redirected on a pairing made without a name ({how})", symbol=name,
        kind="function",
        explanation=[why, f"it was paired with the base function by {how} evidence, not by a name both "
                     "images give it", "a look-alike paired by mistake would be redirected instead; give "
                     "the base image's PDB so that the pair is made by name"],
        evidence={"direction": direction, "pairing": how, "base_rva": hx(base_rva), "new_rva": hx(new_rva)},
    )


@checker("HP7xx", emits=("HP706",))
def check_unchanged_callers(ctx: Context) -> Iterator[Finding]:
    pairs = ctx.diff.correlation.functions
    method = {p.new.rva: p.method for p in pairs}
    doubtful = {fd.new.rva: fd for fd in ctx.changed if method.get(fd.new.rva, fd.method) not in _CERTAIN}
    if not doubtful:
        return
    # A pair that the call graph corroborates both ways cannot hide a switch: the functions
    # that refer to the new function are exactly the counterparts of those that refer to
    # the base one.  A caller switched from a removed function to a look-alike breaks
    # that: the look-alike's other referrers refer to its own base copy.
    fmap = ctx.diff.correlation.function_map
    rb, rn = _referrers(ctx, Side.BASE), _referrers(ctx, Side.NEW)
    doubtful = {t: fd for t, fd in doubtful.items()
                if _mapped(rb.get(fd.base.rva, set()), fmap) != rn.get(t, set())}
    if not doubtful:
        return
    changed = {fd.new.rva for fd in ctx.changed}
    for p in sorted(pairs, key=lambda p: (p.new.name, p.new.rva)):
        if p.new.rva in changed or ctx.in_set(p.new):
            continue
        through: dict[int, int] = {}  # callee rva -> first offset
        for r in ctx.refs(Side.NEW, p.new):
            fd = doubtful.get(r.target)
            if fd is not None and r.target != p.new.rva:
                through.setdefault(r.target, r.offset)
        if through:
            callees = [(doubtful[t].new.name, method.get(t, doubtful[t].method), doubtful[t].base.rva, t, off)
                       for t, off in sorted(through.items(), key=lambda x: x[1])]
            yield _unchanged_through(p.new.name, p.base.rva, p.new.rva, callees)


def _referrers(ctx: Context, side: Side) -> dict[int, set[int]]:
    """Function start -> the starts of the other functions of ``side`` that refer to it."""
    ix = ctx.index(side)
    starts = ix.function_by_rva
    out: dict[int, set[int]] = {}
    for fn in ix.functions:
        for r in ctx.refs(side, fn):
            if r.target in starts and r.target != fn.rva:
                out.setdefault(r.target, set()).add(fn.rva)
    return out


def _mapped(rvas: set[int], fmap: dict[int, int]) -> set[int] | None:
    """The new counterparts of base functions ``rvas``; None when one has none."""
    out = set()
    for r in rvas:
        n = fmap.get(r)
        if n is None:
            return None
        out.add(n)
    return out


def _unchanged_through(name: str, base_rva: int, new_rva: int,
                       callees: list[tuple[str, str, int, int, int]]) -> Finding:
    what = ", ".join(f"{callee} (paired by {how} with the base function at {hx(b)})" for callee, how, b, _, _ in callees)
    first, first_how = callees[0][0], callees[0][1]
    return finding(
        "HP706", f"{name} is taken as unchanged through a pairing made without a name ({first}, {first_how})",
        symbol=name, kind="function",
        explanation=[f"{name} is not in the hot-patch set and compares equal to the base function at "
                     f"{hx(base_rva)}",
                     f"it refers to {what}, which changed",
                     "if that pair is wrong (a look-alike), the base version refers to another function: "
                     f"{name} changed, and the running base keeps its old code",
                     "give the base image's PDB so that the pair is made by name, or list the function"],
        evidence={"base_rva": hx(base_rva), "new_rva": hx(new_rva),
                  "through": [{"function": callee, "pairing": how, "base_rva": hx(b), "new_rva": hx(n),
                               "offset": hx(off)} for callee, how, b, n, off in callees]},
    )
