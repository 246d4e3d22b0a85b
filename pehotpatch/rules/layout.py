"""HP3xx: function signatures and the layout of types that changed code uses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pehotpatch.image.codeview.records import (
    ArgListRecord,
    ArrayRecord,
    ClassRecord,
    MemberFunctionRecord,
    ModifierRecord,
    PointerRecord,
    ProcedureRecord,
)
from pehotpatch.image.symbols import ref_target_name
from pehotpatch.rules import ERROR, NOTE, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.rules.locals import local_types
from pehotpatch.vocab import RefKind, Side

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.image.codeview.types import Field, TypeLayout, TypeTable

define(
    "HP301", "SignatureChanged", "signature of an existing function changed", ERROR,
    """A function present in both images has a different signature (return type,
    parameter types or calling convention, from the PDBs). When the base function is
    redirected, its existing callers in the running image keep passing the old
    arguments; a function that is not patched keeps being called by patched code with
    the new ones. Either way caller and callee disagree.""",
)
define(
    "HP302", "SignaturesUnchecked", "signatures could not be checked", NOTE,
    """One of the two images has no PDB, so function signatures (HP301) and type
    layouts (HP311) could not be compared. Pass --pdb-base / --pdb (or put the PDBs
    next to the images) to have them checked.""",
)
define(
    "HP311", "TypeLayoutChanged", "type layout changed", ERROR,
    """A struct, class or union used by changed code (in a changed function's
    signature, as the type of one of its locals or parameters, including pointers to
    it that cast a byte pool or an opaque handle, as the type of a global it reads or
    writes, or of a global at all) gained, lost, resized or moved a field, changed
    size, or, for a C++ class, gained, lost or moved a virtual method of its own or an
    override. Objects of that type that already exist in the running image (globals,
    heap objects, callers' stack frames) keep the old layout and the old virtual
    function table, and patched code would read them with the new one.""",
)

MAX_TYPE_DEPTH = 4


@checker("HP3xx", emits=("HP301", "HP302", "HP311"))
def check_layout(ctx: Context) -> Iterator[Finding]:
    missing = [side for side, ix in (("base", ctx.bix), ("intermediate", ctx.nix)) if not ix.has_pdb]
    if missing:
        yield finding(
            "HP302", f"signatures and type layouts could not be checked: no PDB for the {' and '.join(missing)}",
            kind="image", evidence={"without_pdb": missing},
            explanation=[f"the {' and the '.join(missing)} {'has' if len(missing) == 1 else 'have'} no PDB",
                         "signatures (HP301) and type layouts (HP311) come from the PDBs"],
        )
        return
    yield from _signatures(ctx)
    yield from _layouts(ctx)


# ---- HP301 ----------------------------------------------------------------------------
def _signatures(ctx: Context) -> Iterator[Finding]:
    callers = _base_callers(ctx)
    patched_base = {fd.base.name for fd in ctx.patched}
    patched_new = {fd.new.rva for fd in ctx.patched}
    named = Counter(f.name for f in ctx.nix.functions)
    for sb, sn, fb, fn in sorted(ctx.signature_changes.values(), key=lambda v: (v[3].name, v[3].rva)):
        name = fn.name
        label = f"{name} ({_module_file(fn.module)})" if named[name] > 1 and fn.module else name
        expl = [f"base: {sb}", f"intermediate: {sn}"]
        who = callers.get(fb.rva, [])
        unpatched = [c for c in who if c not in patched_base]
        if fn.rva in patched_new:
            if unpatched:
                expl.append(f"it is patched, and unpatched callers in the running base ({', '.join(unpatched[:8])}) "
                            "would call the new code with the old arguments")
            elif who:
                expl.append(f"its base callers ({', '.join(who[:8])}) are patched too, but calls already under "
                            "way and callers outside the image still use the old signature")
        elif who:
            expl.append("it is not patched, and patched code calling it passes the new arguments to the old code"
                        if any(c in patched_base for c in who) else f"called by {', '.join(who[:8])}")
        if fb.exported_as:
            expl.append(f"it is exported ({', '.join(fb.exported_as)}): other images call it with the old signature")
        yield finding(
            "HP301", f"signature of {label} changed", symbol=name, kind="function",
            evidence={"base": sb, "intermediate": sn, "base_callers": who,
                      "in_hotpatch_set": ctx.in_set(fn), "base_rva": hx(fb.rva), "new_rva": hx(fn.rva)},
            explanation=expl,
        )


def _module_file(module: str) -> str:
    """The object file's name of a PDB module path."""
    return module.replace("\\", "/").rsplit("/", 1)[-1]


def _base_callers(ctx: Context) -> dict[int, list[str]]:
    want = {v[2].rva for v in ctx.signature_changes.values()}
    out: dict[int, list[str]] = {}
    if not want:
        return out
    for f in ctx.bix.functions:
        for r in ctx.refs(Side.BASE, f):
            if r.kind in (RefKind.CALL, RefKind.JUMP) and r.target in want and r.target != f.rva:
                lst = out.setdefault(r.target, [])
                if f.name not in lst:
                    lst.append(f.name)
    return out


# ---- HP311 ----------------------------------------------------------------------------
def _layouts(ctx: Context) -> Iterator[Finding]:
    bt, nt = ctx.pdb_types(Side.BASE), ctx.pdb_types(Side.NEW)
    if bt is None or nt is None:
        return
    used = used_types(ctx, nt, bt)
    for name in sorted(used):
        why = used[name]
        bti, nti = bt.udt_by_name(name), nt.udt_by_name(name)
        if bti is None or nti is None:
            continue
        lb, ln = bt.layout(bti), nt.layout(nti)
        if lb.is_forward_ref or ln.is_forward_ref:
            continue
        changes = layout_changes(lb, ln)
        if not changes:
            continue
        yield finding(
            "HP311", f"layout of {name} changed: {changes[0]}" + (f" (+{len(changes) - 1} more)" if len(changes) > 1 else ""),
            symbol=name, kind="type",
            evidence={"changes": changes, "used_by": why[:10],
                      "base_size": lb.size, "intermediate_size": ln.size,
                      "base_fields": _fields_json(lb), "intermediate_fields": _fields_json(ln)},
            explanation=[f"{name} is used by changed code: {why[0]}", *changes,
                         f"objects of {name} that the running base already built keep the old layout"],
        )


def used_types(ctx: Context, nt: TypeTable, bt: TypeTable | None = None) -> dict[str, list[str]]:
    """UDT name -> why it counts as used (first reason first).

    Used: the types of changed functions' signatures, of their locals and parameters
    (CodeView S_LOCAL / S_REGREL32 / S_BPREL32 / S_REGISTER, in either build), of the
    globals they use, the signatures and locals of the new functions patched code can
    run (:mod:`pehotpatch.reach`), and of every global the patch shares with the base;
    each followed through pointers, modifiers, arrays and fields."""
    used: dict[str, list[str]] = {}

    def add(ti: int, why: str, types: TypeTable = nt) -> None:
        _collect(types, ti, why, used, 0, set())

    new_names = [fd.new.name for fd in ctx.changed] + [r.name for r in ctx.reach.running_new]
    new_locals = local_types(ctx.nix.pdb, new_names) if ctx.nix.pdb is not None and new_names else {}
    base_names = [fd.base.name for fd in ctx.changed]
    base_locals = (local_types(ctx.bix.pdb, base_names)
                   if bt is not None and ctx.bix.pdb is not None and base_names else {})
    for fd in ctx.changed:
        fn = fd.new
        if fn.type_index:
            for ti in _function_types(nt, fn.type_index):
                add(ti, f"the signature of {fn.name} (changed)")
        for ti in sorted(new_locals.get(fn.name, ())):
            add(ti, f"{fn.name} (changed) has a local or parameter of type {nt.type_name(ti)}")
        for ti in sorted(base_locals.get(fd.base.name, ())):
            assert bt is not None  # base_locals is empty without base types
            add(ti, f"the base version of {fd.base.name} (changed) has a local or parameter of type "
                    f"{bt.type_name(ti)}", bt)
    # New functions that patched code can run handle the running program's objects too.
    for run in ctx.reach.running_new:
        nf = ctx.nix.function_by_rva.get(run.rva)
        if nf is None:
            continue
        if nf.type_index:
            for ti in _function_types(nt, nf.type_index):
                add(ti, f"the signature of {nf.name} (new, run by {run.reached_by})")
        for ti in sorted(new_locals.get(nf.name, ())):
            add(ti, f"{nf.name} (new, run by {run.reached_by}) has a local or parameter of type "
                    f"{nt.type_name(ti)}")
        seen: set[str] = set()
        for r in ctx.refs(Side.NEW, fn):
            if r.kind != RefKind.DATA:
                continue
            g = ctx.nix.global_at(r.target)
            if g is None:
                continue
            target = ref_target_name(g.name)
            if target is not None:
                g = ctx.nix.globals_by_name.get(target)
                if g is None:
                    continue
            if g.name in seen or not g.type_index:
                continue
            seen.add(g.name)
            add(g.type_index, f"{fn.name} (changed) uses the global {g.name}")
    for gp in ctx.diff.correlation.globals:
        g = gp.new
        if g.type_index and not g.is_ref_slot and (g.writable or g.contains_pointers):
            add(g.type_index, f"the type of the global {g.name}, which the patch shares with the base")
    return used


def _function_types(types: TypeTable, ti: int) -> list[int]:
    rec = types.record(ti)
    if not isinstance(rec, (ProcedureRecord, MemberFunctionRecord)):
        return []
    out = [rec.return_type]
    args = types.record(rec.arg_list) if rec.arg_list else None
    if isinstance(args, ArgListRecord):
        out.extend(a for a in args.arg_types if a)
    if isinstance(rec, MemberFunctionRecord) and rec.class_type:
        out.append(rec.class_type)
    return out


def _collect(types: TypeTable, ti: int, why: str, used: dict[str, list[str]], depth: int, active: set[int]) -> None:
    if depth > MAX_TYPE_DEPTH or ti in active or ti < 0x1000:
        return
    active.add(ti)
    try:
        rec = types.record(ti)
        if isinstance(rec, PointerRecord):
            _collect(types, rec.referent_type, why, used, depth, active)
        elif isinstance(rec, ModifierRecord):
            _collect(types, rec.modified_type, why, used, depth, active)
        elif isinstance(rec, ArrayRecord):
            _collect(types, rec.element_type, why, used, depth, active)
        elif isinstance(rec, ClassRecord):
            real = types.resolve(ti)
            rrec = types.record(real)
            if not isinstance(rrec, ClassRecord) or rrec.is_forward_ref or not rrec.name:
                return
            reasons = used.setdefault(rrec.name, [])
            if why not in reasons:
                reasons.append(why)
            lay = types.layout(real)
            for f in (*lay.bases, *lay.fields):
                if f.type_index:
                    _collect(types, f.type_index, f"{why} (through {rrec.name}.{f.name})", used,
                             depth + 1, active)
    finally:
        active.discard(ti)


def layout_changes(lb: TypeLayout, ln: TypeLayout) -> list[str]:
    """What differs between two layouts of the same type, in declaration order."""
    out: list[str] = []
    if lb.size != ln.size:
        out.append(f"size {lb.size} -> {ln.size} bytes")
    for what, bl, nl in (("base class", lb.bases, ln.bases), ("field", lb.fields, ln.fields)):
        bf = {f.name: f for f in bl}
        nf = {f.name: f for f in nl}
        for f in nl:
            if f.name not in bf:
                out.append(f"{what} {f.name} ({f.type_name}) added at +{f.offset:#x}")
        for f in bl:
            if f.name not in nf:
                out.append(f"{what} {f.name} ({f.type_name}) removed (was at +{f.offset:#x})")
        for f in nl:
            b = bf.get(f.name)
            if b is None:
                continue
            if b.offset != f.offset or b.bit_offset != f.bit_offset:
                out.append(f"{what} {f.name} moved from +{_pos(b)} to +{_pos(f)}")
            if b.type_name != f.type_name:
                out.append(f"{what} {f.name} type {b.type_name} -> {f.type_name}")
            elif b.size != f.size or b.bit_size != f.bit_size:
                out.append(f"{what} {f.name} size {b.size} -> {f.size}")
    if lb.has_vfptr != ln.has_vfptr:
        out.append("virtual function table pointer " + ("added" if ln.has_vfptr else "removed"))
    out += _virtual_changes(lb, ln)
    return out


def _virtual_changes(lb: TypeLayout, ln: TypeLayout) -> list[str]:
    """The class's virtual function table as its own virtual methods shape it: a slot it
    introduces added, removed or moved, an override added or removed.  Objects the base
    built hold the base's table, so a call through a new slot reads past it and a new
    override is never called for them."""
    out: list[str] = []
    bi = {n: o for n, o in lb.virtuals if o is not None}
    ni = {n: o for n, o in ln.virtuals if o is not None}
    bo = {n for n, o in lb.virtuals if o is None}
    no = {n for n, o in ln.virtuals if o is None}
    for n, o in ln.virtuals:
        if o is not None and n not in bi:
            out.append(f"virtual method {n} added (vtable slot +{o:#x})")
        elif o is not None and bi[n] != o:
            out.append(f"virtual method {n} moved from vtable slot +{bi[n]:#x} to +{o:#x}")
        elif o is None and n not in bo and n not in bi:
            out.append(f"override of virtual method {n} added")
    for n, o in lb.virtuals:
        if o is not None and n not in ni:
            out.append(f"virtual method {n} removed (was vtable slot +{o:#x})")
        elif o is None and n not in no and n not in ni:
            out.append(f"override of virtual method {n} removed")
    return out


def _pos(f: Field) -> str:
    s = f"{f.offset:#x}"
    if f.bit_offset is not None:
        s += f".{f.bit_offset}"
    return s


def _fields_json(lay: TypeLayout) -> list[dict[str, Any]]:
    return [{"name": f.name, "offset": f.offset, "type": f.type_name, "size": f.size} for f in lay.fields]
