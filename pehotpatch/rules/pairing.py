"""HP705: redirections built on function pairs that no name confirms.

Every record of the patch ties a base function to its counterpart in the patch image:
forward (the base function runs the patched one) and backward (patched code calling an
unpatched function is sent to the base's copy).  With names on both sides (a PDB, an
export) the pairing is certain.  Without them the differ pairs by structure (content,
call graph, call sites, address order), which can pick a look-alike; a redirection
built on a wrong pair sends one function's callers into another function's code.
A pair by identical content (the same normalised code and named references, unique on
both sides) is not reported: whichever of two such functions a record names, it runs
the same code.
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.reach import CALL, JUMP, UNPATCHED
from pehotpatch.rules import ERROR, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context

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
