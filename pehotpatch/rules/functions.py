"""HP5xx: the hot-patch set against what really changed."""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.diff import PROLOGUE_ONLY, THROUGH_DATA, FunctionDiff
from pehotpatch.rules import ERROR, NOTE, WARNING, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import RefKind, Side

define(
    "HP501", "ChangedNotInSet", "function changed but not in the hot-patch set", ERROR,
    """A function's code changed, or the read-only data it reads changed (a constant
    table, the lookup table an optimiser made of its switch, a string), but it was not
    compiled for hot-patching (it is not in the hot-patch set). The running base keeps
    executing its old copy with the old data, so the change does not take effect, and
    the patch image's copy reaches globals directly, in its own storage. The most common
    causes are inlining (a changed function was inlined into callers that were not
    listed) and a changed table that unlisted functions read as well. Add the function
    to the functions file, or stop the change from reaching it (for example mark the
    changed callee noinline).""",
)
define(
    "HP502", "MarkedUnchanged", "marked but unchanged", NOTE,
    """A function is in the hot-patch set but its code is the same as in the base. It
    does not need patching; listing it only enlarges the patch. Remove it from the
    functions file unless you expect it to change.""",
)
define(
    "HP503", "MarkedMissing", "marked but missing from the intermediate", ERROR,
    """A function named in the hot-patch set does not exist in the intermediate: it was
    misspelled, renamed, removed, or fully inlined. Nothing can be patched under that
    name, so the fix it was meant to carry is probably not in the patch.""",
)
define(
    "HP504", "HotpatchSetDisagreement", "hot-patch set sources disagree", WARNING,
    """The sources of the hot-patch set disagree: a function is listed in the functions
    file but the compiler did not mark it (no S_HOTPATCHFUNC record), or the compiler
    marked a function that the file does not list, or a function reads __ref_ pointers
    without being listed anywhere. Each is a build mistake: a stale functions file, or
    a translation unit compiled without the functions file.""",
)


@checker("HP5xx", emits=("HP501", "HP502", "HP503", "HP504"))
def check_functions(ctx: Context) -> Iterator[Finding]:
    yield from _unmarked(ctx)
    yield from _marked(ctx)
    yield from _disagreements(ctx)


# ---- HP501 ----------------------------------------------------------------------------
def _unmarked(ctx: Context) -> Iterator[Finding]:
    if not any(not ctx.in_set(fd.new) for fd in ctx.changed):
        return
    from pehotpatch.listing import first_difference

    for fd in ctx.changed:
        if ctx.in_set(fd.new):
            continue
        if fd.status == THROUGH_DATA:
            yield _unmarked_data(ctx, fd)
            continue
        name = fd.new.name
        causes, ev = explain_change(ctx, fd)
        expl = [f"{name} is not in the hot-patch set", *causes]
        if not ctx.has_set_source:
            expl.append("no hot-patch set source was given (--functions-file, --objects, or a PDB with "
                        "S_HOTPATCHFUNC records): only functions reading __ref_ pointers count as marked")
        try:
            fdiff = first_difference(ctx.diff, fd)
        except Exception:  # noqa: BLE001 - the listing is evidence only
            fdiff = None
        if fdiff:
            ev["first_difference"] = {"base": fdiff[0], "intermediate": fdiff[1]}
        ev.update({"reason": fd.reason, "base_rva": hx(fd.base.rva), "new_rva": hx(fd.new.rva),
                   "pairing": fd.method})
        yield finding("HP501", f"{name} changed but is not in the hot-patch set", symbol=name,
                      kind="function", explanation=expl, evidence=ev)


def _unmarked_data(ctx: Context, fd: FunctionDiff) -> Finding:
    """HP501 for an unlisted function whose code is equal but whose read-only data changed."""
    name = fd.new.name
    data = list(fd.data)
    readers: dict[str, list[str]] = {}
    for other in ctx.changed:
        if other.status == THROUGH_DATA and other is not fd:
            for d in other.data:
                if d in data:
                    readers.setdefault(d, []).append(other.new.name)
    what = ", ".join(_data_label(d) for d in data)
    expl = [f"{name} is not in the hot-patch set",
            f"its code is unchanged, but it reads {what}, whose contents changed: its behaviour changed",
            "the running base keeps executing its own copy with the old data, so the change does not "
            "take effect for it"]
    for d in data:
        others = sorted(readers.get(d, []))
        listed = [n for n in others if n in ctx.patched_names]
        unlisted = [n for n in others if n not in ctx.patched_names]
        if listed:
            expl.append(f"{d} is also read by {', '.join(listed)} (patched): patched and unpatched readers "
                        "would see different data")
        elif unlisted:
            expl.append(f"{d} is also read by {', '.join(unlisted)} (not patched either)")
        else:
            expl.append(f"{d} is read by {name} alone (a table private to it)")
    expl.append(f"add {name} to the functions file")
    return finding(
        "HP501", f"{name} reads changed read-only data {', '.join(data)} but is not in the hot-patch set",
        symbol=name, kind="function", explanation=expl,
        evidence={"reason": "data", "data": data, "other_readers": {d: sorted(v) for d, v in readers.items()},
                  "base_rva": hx(fd.base.rva), "new_rva": hx(fd.new.rva), "pairing": fd.method},
    )


def _data_label(d: str) -> str:
    if d.startswith(("'", '"')):
        return f"the string {d}"
    if "+" in d and d.startswith("."):
        return f"the unnamed table at {d} (for example a switch lookup table)"
    return d


def explain_change(ctx: Context, fd: FunctionDiff) -> tuple[list[str], dict]:
    """Why a function's code changed, as far as the PDBs and the diff show it."""
    name = fd.new.name
    causes: list[str] = []
    ev: dict = {}
    new_sites = ctx.inline_sites(Side.NEW)
    base_sites = ctx.inline_sites(Side.BASE)
    inl = new_sites.get(name, set())
    binl = base_sites.get(fd.base.name, set())
    if inl:
        ev["inlines"] = sorted(inl)
    for x in sorted(inl):
        other = ctx.fdiff_by_name.get(x)
        if other is not None and other.changed:
            causes.append(f"its code changed: it inlines {x}, which changed")
            continue
        hosts = sorted(p for p in ctx.patched_names if x in new_sites.get(p, ()))
        if hosts:
            causes.append(f"its code changed: it inlines {x}, which is also inlined into {', '.join(hosts)} "
                          f"(patched); a change to {x} reaches every function it is inlined into")
    if new_sites or base_sites:
        for x in sorted(inl - binl):
            causes.append(f"it now inlines {x} (the base version did not)")
        for x in sorted(binl - inl):
            causes.append(f"it no longer inlines {x}")
    for r in ctx.refs(Side.NEW, fd.new):
        if r.kind not in (RefKind.CALL, RefKind.JUMP):
            continue
        callee = ctx.nix.function_at(r.target)
        if callee is not None and callee.rva in ctx.signature_changes and callee.rva != fd.new.rva:
            msg = f"it calls {callee.name}, whose signature changed"
            if msg not in causes:
                causes.append(msg)
    if not causes:
        if fd.ref_difference is not None:
            rd = fd.ref_difference
            causes.append(f"its code changed: at +{rd.offset_new:#x} it refers to {rd.new_target} where the "
                          f"base referred to {rd.base_target}")
        elif fd.reason == "code":
            causes.append("its code changed")
        else:
            causes.append(f"its code changed ({fd.reason})")
    return causes, ev


# ---- HP502 / HP503 ----------------------------------------------------------------------
def _marked(ctx: Context) -> Iterator[Finding]:
    hs = ctx.hotpatch
    paired_new = {p.new.rva for p in ctx.diff.correlation.functions}
    seen: set[int] = set()
    for name in hs.sorted():
        srcs = sorted(hs.names[name])
        fn = ctx.find_new_function(name)
        if fn is None:
            yield finding(
                "HP503", f"{name} is in the hot-patch set but not in the intermediate", symbol=name,
                kind="function", evidence={"sources": srcs},
                explanation=[f"{name} is listed by: {', '.join(srcs)}",
                             "the intermediate has no function of that name (misspelled, renamed, removed or "
                             "fully inlined)"],
            )
            continue
        if fn.rva in seen or fn.rva not in paired_new:
            continue  # an alias already handled, or a function new in the intermediate
        seen.add(fn.rva)
        fd = ctx.fdiff_by_new_rva.get(fn.rva)
        if fd is None or fd.status == PROLOGUE_ONLY:
            how = "identical" if fd is None else "identical except for the hot-patch no-op at its entry"
            yield finding(
                "HP502", f"{name} is in the hot-patch set but unchanged", symbol=name, kind="function",
                evidence={"sources": srcs, "new_rva": hx(fn.rva)},
                explanation=[f"{name} is listed by: {', '.join(srcs)}",
                             f"its code is {how} to the base's"],
            )


# ---- HP504 --------------------------------------------------------------------------------
def _disagreements(ctx: Context) -> Iterator[Finding]:
    hs = ctx.hotpatch
    out: dict[str, str] = dict(hs.disagreements())
    listed = hs.available - {"code"}
    if listed:
        for name, slots in sorted(ctx.ref_slot_readers.items()):
            fn = ctx.nix.functions_by_name.get(name)
            listed_by = set(ctx.set_sources(fn)) if fn is not None else set()
            if name not in out and not (listed_by - {"code"}):
                out[name] = (f"reads __ref_ pointers ({', '.join(slots[:4])}) but no consulted source "
                             f"({', '.join(sorted(listed))}) lists it")
    for name in sorted(out):
        fn = ctx.find_new_function(name)
        srcs = ctx.set_sources(fn) if fn is not None else sorted(hs.names.get(name, ()))
        yield finding("HP504", f"hot-patch set sources disagree about {name}", symbol=name, kind="function",
                      evidence={"sources": srcs, "consulted": sorted(hs.available)},
                      explanation=[f"{name}: {out[name]}"])
