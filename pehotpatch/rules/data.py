"""HP4xx: globals and data.

When a patch is applied, patched code reaches mutable globals (and constant globals
that hold pointers) through ``__ref_`` pointers that the engine points at the *base*
image's storage: the running values live there.  Everything else the patch image
reads (string literals, numeric tables) is its own copy.
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.diff.image import GlobalDiff
from pehotpatch.image.symbols import Global
from pehotpatch.rules import ERROR, NOTE, RETIRED, WARNING, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import RefKind, Side

define(
    "HP401", "GlobalInitializerChanged", "mutable global initializer changed", ERROR,
    """The initial value of a global whose storage the patch shares with the base (a
    mutable global, or a constant one holding pointers) changed. The running value
    lives in the base image and was initialised when the base was loaded; patched code
    reaches that storage through its __ref_ pointer, so the new initializer never takes
    effect until a reboot. The same holds for a read-only global whose address is held
    by such storage (a constant table behind a pointer in base data): code that reads it
    through that pointer reads the base's copy.""",
)
define(
    "HP402", "GlobalLayoutChanged", "global size or type changed", ERROR,
    """A global whose storage the patch shares with the base changed size or type.
    Patched code would access the base's object, which still has the old size and
    layout.""",
)
define(
    "HP403", "GlobalRemoved", "global removed", ERROR,
    """A global of the base has no counterpart in the intermediate. When the base
    version of a patched function used it, the state it carried is abandoned: the
    running base's unpatched code may keep updating it and nothing in the patch reads
    it (error). When only unpatched code used it, the running base keeps it (note).""",
)
define(
    "HP404", "GlobalAdded", "new mutable global", WARNING,
    """The intermediate has a mutable global the base does not. The base has no storage
    for it, so it lives in the patch image and starts from its initializer when the
    patch is applied, not from any state the running program built up. That is fine
    when the patch's code expects exactly that; an exported __PatchMainCallout__ can
    initialise it.""",
)
define(
    "HP405", "ReadOnlyDataChangedUnpatched", "changed read-only data read by an unpatched function",
    WARNING,
    """Retired: a function outside the hot-patch set whose only change is the read-only
    data it reads (a constant table, a switch lookup table, a string) changed behaviour
    all the same, and the running base keeps the old behaviour. That is now HP501, an
    error naming the data.""",
    status=RETIRED, replaced_by="HP501",
)


def shares_storage(g: Global) -> bool:
    """Patched code reaches this global in the base image (through a __ref_ pointer)."""
    if g.is_ref_slot:
        return False
    return g.writable or bool(g.contains_pointers)


@checker("HP4xx", emits=("HP401", "HP402", "HP403", "HP404"))
def check_data(ctx: Context) -> Iterator[Finding]:
    users_new = _data_users(ctx, Side.NEW)
    users_base = _data_users(ctx, Side.BASE)
    held = _held_by_shared(ctx)
    for gd in ctx.diff.globals_changed:
        g = gd.new
        if not shares_storage(g) and not shares_storage(gd.base):
            if held.get(gd.base.name):
                yield _reached_through(ctx, gd, held[gd.base.name])
            continue
        who = users_new.get(g.name, [])
        patched_users = [n for n in who if n in ctx.patched_names]
        common = {"base_rva": hx(gd.base.rva), "new_rva": hx(g.rva), "section": g.section,
                  "detail": gd.detail, "used_by_patched": patched_users}
        if "size" in gd.changes or "type" in gd.changes:
            expl = [f"{g.name}: {gd.detail}", "its running instance lives in the base image, with the old "
                    "size and type"]
            if patched_users:
                expl.append(f"patched code uses it: {', '.join(patched_users)}")
            yield finding("HP402", f"global {g.name} changed {' and '.join(c for c in gd.changes if c != 'initializer')}",
                          symbol=g.name, kind="global", explanation=expl,
                          evidence={**common, "base_size": gd.base.size, "new_size": g.size,
                                    "base_type": gd.base.type_name, "new_type": g.type_name})
        elif "initializer" in gd.changes:
            expl = [f"the initial value of {g.name} changed ({gd.detail})",
                    f"its running value lives in the base image ({g.section}), initialised when the base loaded",
                    "the new initializer never takes effect in a running process"]
            ev = {**common, **_bytes_evidence(ctx, gd.base, g)}
            yield finding("HP401", f"initializer of mutable global {g.name} changed", symbol=g.name,
                          kind="global", explanation=expl, evidence=ev)
    for g in ctx.diff.removed_globals:
        if g.is_ref_slot:
            continue
        who = users_base.get(g.name, [])
        patched_base = {fd.base.name for fd in ctx.patched}
        via_patched = [n for n in who if n in patched_base]
        expl = [f"{g.name} exists in the base but not in the intermediate"]
        constant = pointer_free_constant(ctx, g)
        if constant:
            expl.append(f"it is a read-only constant without pointers ({constant}): it carries no state, "
                        "and code that used it keeps its own copy")
            if via_patched:
                expl.append(f"the base version of {', '.join(via_patched)} (patched) used it; the patch "
                            "uses its own constants")
            sev = NOTE
        elif via_patched:
            expl.append(f"the base version of {', '.join(via_patched)} (patched) used it; "
                        "the state it carried is abandoned")
            sev = ERROR
        else:
            expl.append("no patched function used it; the running base keeps it")
            sev = NOTE
        yield finding("HP403", f"{'constant' if constant else 'global'} {g.name} removed", symbol=g.name,
                      kind="global", severity=sev, explanation=expl,
                      evidence={"base_rva": hx(g.rva), "section": g.section, "used_by_base": who[:20],
                                "constant": bool(constant)})
    for g in ctx.diff.added_globals:
        if not g.writable or g.is_ref_slot:
            continue
        who = users_new.get(g.name, [])
        expl = [f"{g.name} exists only in the intermediate",
                "it lives in the patch image and starts from its initializer when the patch is applied"]
        if who:
            expl.append(f"used by {', '.join(who[:8])}")
        yield finding("HP404", f"new mutable global {g.name}", symbol=g.name, kind="global",
                      explanation=expl,
                      evidence={"new_rva": hx(g.rva), "section": g.section, "size": g.size, "used_by": who[:20]})


def _reached_through(ctx: Context, gd: GlobalDiff, holders: list[str]) -> Finding:
    """A changed global of the patch image's own (read-only, pointer-free) that the running
    program reaches through a pointer held in storage it shares with the base."""
    g = gd.new
    names = ", ".join(sorted(set(holders))[:8])
    layout = "size" in gd.changes or "type" in gd.changes
    expl = [f"{g.name} changed ({gd.detail})",
            f"it is read-only, but its address is held by {names}, which lives in the base image: every "
            f"function that reads {g.name} through {names}, patched or not, reads the base's copy",
            "the new contents never take effect in a running process"]
    ev = {"base_rva": hx(gd.base.rva), "new_rva": hx(g.rva), "section": g.section, "detail": gd.detail,
          "held_by": sorted(set(holders))}
    if layout:
        return finding("HP402", f"global {g.name}, reached through {names}, changed "
                                f"{' and '.join(c for c in gd.changes if c != 'initializer')}",
                       symbol=g.name, kind="global", explanation=expl, evidence=ev)
    return finding("HP401", f"initializer of {g.name}, reached through {names} in the base, changed",
                   symbol=g.name, kind="global", explanation=expl, evidence={**ev, **_bytes_evidence(ctx, gd.base, g)})


def _held_by_shared(ctx: Context) -> dict[str, list[str]]:
    """Base global name -> the base globals sharing storage with the patch (mutable, or
    constant with pointers) that hold a relocated pointer into it."""
    import bisect

    ix = ctx.bix
    img = ix.image
    ptr = ctx.machine.pointer_size
    spans = sorted((g.rva, g.rva + (g.size or 1), g.name) for g in ix.globals if not g.is_ref_slot)
    starts = [s[0] for s in spans]
    out: dict[str, list[str]] = {}
    for h in ix.globals:
        if not h.size or not shares_storage(h):
            continue
        for r in img.relocations.within(h.rva, h.rva + h.size):
            raw = img.try_read(r, ptr)
            if raw is None:
                continue
            t = int.from_bytes(raw, "little") - img.image_base
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0 and spans[i][0] <= t < spans[i][1] and spans[i][2] != h.name:
                out.setdefault(spans[i][2], []).append(h.name)
    return out


#: Decorated names of compiler-made literals and constants (MSVC/clang-cl spellings).
CONSTANT_PREFIXES = {"??_C@": "a string literal", "__real@": "a floating-point constant",
                     "__xmm@": "a vector constant", "__ymm@": "a vector constant",
                     "__zmm@": "a vector constant", "__int64@": "an integer constant"}


def pointer_free_constant(ctx: Context, g: Global) -> str | None:
    """What kind of pointer-free read-only constant the base global ``g`` is, or None.

    Read-only, not holding pointers (per the PDB type, or, without one, no base
    relocation inside it), and either a compiler literal by name or a global whose PDB
    type says it is const."""
    if g.writable or g.is_ref_slot or g.contains_pointers:
        return None
    sec = ctx.bix.image.section_at(g.rva)
    if sec is None or sec.writable or sec.executable:
        return None
    size = g.size or ctx.machine.pointer_size
    if ctx.bix.image.relocations.within(g.rva, g.rva + size):
        return None
    for prefix, what in CONSTANT_PREFIXES.items():
        if g.name.startswith(prefix):
            return what
    if g.contains_pointers is False and g.is_const:
        return "a constant table"
    return None


def _data_users(ctx: Context, side: Side) -> dict[str, list[str]]:
    """Global name -> functions that reference it (directly, or through its __ref_ slot)."""
    from pehotpatch.image.symbols import ref_target_name

    ix = ctx.index(side)
    out: dict[str, list[str]] = {}
    for fn in ix.functions:
        for r in ctx.refs(side, fn):
            if r.kind != RefKind.DATA:
                continue
            g = ix.global_at(r.target)
            if g is None:
                continue
            name = ref_target_name(g.name) or g.name
            lst = out.setdefault(name, [])
            if fn.name not in lst:
                lst.append(fn.name)
    return out


def _bytes_evidence(ctx: Context, gb: Global, gn: Global) -> dict[str, str]:
    n = min(x for x in (gb.size or 0, gn.size or 0, 64) if x) if (gb.size or gn.size) else 0
    if not n:
        return {}
    db = ctx.bix.image.try_read(gb.rva, n)
    dn = ctx.nix.image.try_read(gn.rva, n)
    if db is None or dn is None:
        return {}
    return {"base_bytes": db.hex(), "new_bytes": dn.hex()}


# ---- read-only data, compared with relocated pointers resolved -------------------------
