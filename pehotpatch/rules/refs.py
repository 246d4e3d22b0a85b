"""HP6xx: what patched code reaches outside itself.

Code compiled for hot-patching reads every mutable global ``G`` through a pointer
``__ref_G`` that the engine points at the base image's ``G``.  An instruction of code
that runs from the patch image and addresses a writable global directly reaches the
patch image's own copy, which the running program never sees.  The code that runs from
the patch image is every patched function and, transitively, every new function that
such code calls, jumps to or takes the address of (:mod:`pehotpatch.reach`).
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.image.symbols import Function
from pehotpatch.reach import ADDRESS, NEW, RunningFunction
from pehotpatch.rules import ERROR, WARNING, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import RefKind, Side

define(
    "HP601", "DirectMutableGlobalAccess", "patched code accesses a mutable global directly", ERROR,
    """A patched function, or a new function that patched code can run (it calls or
    jumps to it, or takes its address and stores it, directly or through other new
    functions), reads or writes a mutable global by its address instead of through its
    __ref_ pointer. After the patch is applied that instruction touches the patch
    image's copy of the global, not the running base's, so the program's state and the
    patched code drift apart. The usual causes are a translation unit compiled without
    -fms-secure-hotpatch-functions-file (or -list), or a function missing from that
    list: a new function that patched code reaches must be listed too. A new global
    that patched code reads holding the address of a mutable global (a table of
    counters' addresses) is reported too: it stays in the patch image, with the patch
    image's addresses.""",
)
define(
    "HP602", "DirectPointerConstAccess", "patched code uses a constant holding pointers directly",
    WARNING,
    """A patched function uses a constant global whose type contains pointers (a table
    of strings or function pointers) by its address. The compiler reaches such constants
    through __ref_ pointers so that the pointers inside them are the base image's; a
    direct use reads the patch image's copy, whose pointers point into the patch image.
    That is usually harmless for strings but wrong for anything compared by address or
    holding state.""",
)
define(
    "HP603", "FunctionAddressIdentity", "patched code takes the address of an existing function", ERROR,
    """Code that runs from the patch image takes the address of a function the base
    also has (lea, an immediate, a pointer in data it reads directly, or a pointer held
    by a new global, which stays in the patch image), to compare it, to call through it
    or to store it. In the patch image that address is the patch's copy of the function,
    while the running program's data holds the base's address of the same function:
    comparisons with pointers the base stored fail, and pointers the patch stores name
    a different copy than the ones the base stores. Calls are redirected to the base by
    the engine; a taken address is not. Unless the patch plan binds the reference to
    the base's function, the patch would not behave like the intermediate.""",
)
define(
    "HP604", "RefSlotThreadLocal", "a __ref_ pointer of patched code targets thread-local storage",
    ERROR,
    """A __ref_ pointer that patched code reads points into the TLS template (the .tls
    section), because the variable it stands for is thread-local (__declspec(thread)).
    The template is only the initial image of each thread's copy: code that reads or
    writes the variable through that pointer uses the template, not the running
    thread's variable. The intermediate is already wrong on its own, and binding the
    pointer to the base's template is just as wrong. Keep thread-local variables out of
    hot-patched functions (move the access into an unpatched helper).""",
)

#: Globals that the CRT/loader manage and that code may address directly.
DIRECT_ACCESS_ALLOWED = frozenset({"__security_cookie", "__security_cookie_complement", "_tls_index",
                                   "__tls_index", "_tls_used"})


def _allowed(name: str) -> bool:
    return name in DIRECT_ACCESS_ALLOWED or name.startswith("??_R")  # MSVC RTTI


def patched_code(ctx: Context) -> list[tuple[Function, RunningFunction]]:
    """Every patch-image function that can run: (function, how it was reached)."""
    out = []
    for r in ctx.reach.running:
        fn = ctx.nix.function_by_rva.get(r.rva)
        if fn is not None:
            out.append((fn, r))
    return out


def _who(r: RunningFunction) -> str:
    if r.target_class != NEW:
        return f"{r.name} (patched)"
    how = {"call": "called by", "jump": "jumped to by", ADDRESS: "its address taken by"}.get(r.reached_how or "",
                                                                                               "reached from")
    return f"{r.name} (new, {how} {r.reached_by})"


@checker("HP6xx", emits=("HP601", "HP602", "HP603", "HP604"))
def check_refs(ctx: Context) -> Iterator[Finding]:
    yield from _direct_access(ctx)
    yield from _through_new_globals(ctx)
    yield from _address_identity(ctx)
    yield from _thread_local(ctx)


def _direct_access(ctx: Context) -> Iterator[Finding]:
    slots = ctx.nix.imports_by_slot
    img = ctx.nix.image
    for fn, run in patched_code(ctx):
        direct: dict[str, list[int]] = {}
        ptr_consts: dict[str, list[int]] = {}
        for r in ctx.refs(Side.NEW, fn):
            if r.kind not in (RefKind.DATA, RefKind.INDIRECT_CALL, RefKind.INDIRECT_JUMP) or r.target in slots:
                continue
            sec = img.section_at(r.target)
            if sec is None or sec.executable:
                continue
            g, off = ctx.global_near(Side.NEW, r.target) or (None, 0)
            if g is not None and (g.is_ref_slot or _allowed(g.name)):
                continue
            if g is None:
                name = ctx.describe(Side.NEW, r.target)
            else:
                name = g.name if off == 0 else f"{g.name}+{off:#x}"
            if sec.writable:
                direct.setdefault(name, []).append(r.offset)
            elif g is not None and g.contains_pointers:
                ptr_consts.setdefault(name, []).append(r.offset)
        who = _who(run)
        new = run.target_class == NEW
        ev_common = {"new_rva": hx(fn.rva), "called_by": run.reached_by if new else None,
                     "reached_by": run.reached_by, "reached_how": run.reached_how}
        if direct:
            names = sorted(direct)
            expl = [f"{who} addresses {', '.join(names)} directly, not through __ref_ pointers",
                    "after the patch is applied it would use the patch image's copy, not the running base's"]
            if new:
                expl.append(f"{fn.name} is new and runs from the patch image once the patch is applied: "
                            "list it in the functions file so that it is compiled for hot-patching")
            elif not ctx.ref_slot_readers.get(fn.name):
                expl.append(f"{fn.name} reads no __ref_ pointer at all: it was probably compiled without "
                            "the hot-patch functions file")
            yield finding(
                "HP601", f"{fn.name} accesses mutable global{'s' if len(names) > 1 else ''} "
                         f"{', '.join(names)} directly",
                symbol=fn.name, kind="function", explanation=expl,
                evidence={"globals": {n: [hx(o) for o in direct[n]] for n in names}, **ev_common},
            )
        if ptr_consts:
            names = sorted(ptr_consts)
            yield finding(
                "HP602", f"{fn.name} uses constant{'s' if len(names) > 1 else ''} holding pointers "
                         f"{', '.join(names)} directly",
                symbol=fn.name, kind="function",
                explanation=[f"{who} addresses {', '.join(names)} directly",
                             "the pointers inside are the patch image's, not the running base's"],
                evidence={"globals": {n: [hx(o) for o in ptr_consts[n]] for n in names}, **ev_common},
            )


def _through_new_globals(ctx: Context) -> Iterator[Finding]:
    """Running code that reads a new global through its ``__ref_`` slot: the global has no
    base counterpart and stays in the patch image, so the addresses of mutable globals it
    holds (``static u32 *const k_counters[] = {&g_a, &g_b};``) are the patch image's copies."""
    img = ctx.nix.image
    ptr = ctx.machine.pointer_size
    new = {g.rva for g in ctx.diff.added_globals}
    held: dict[tuple[str, str], list[str]] = {}
    for r in ctx.reach.ref_reads:
        if r.target_rva is None or r.thread_local or r.target_is_code:
            continue
        g = ctx.nix.global_at(r.target_rva)
        if g is None or g.rva not in new or (r.source, g.name) in held:
            continue
        names: list[str] = []
        for rel in img.relocations.within(g.rva, g.rva + (g.size or ptr)):
            raw = img.try_read(rel, ptr)
            v = int.from_bytes(raw, "little") - img.image_base if raw is not None else -1
            sec = img.section_at(v) if v >= 0 else None
            if sec is None or not sec.writable or sec.executable:
                continue
            t, off = ctx.global_near(Side.NEW, v) or (None, 0)
            if t is not None and (t.is_ref_slot or _allowed(t.name) or t.rva == g.rva):
                continue
            name = ctx.describe(Side.NEW, v) if t is None else t.name if off == 0 else f"{t.name}+{off:#x}"
            if name not in names:
                names.append(name)
        held[(r.source, g.name)] = names
    for (source, via), names in sorted(held.items()):
        if not names:
            continue
        yield finding(
            "HP601", f"{source} reaches mutable global{'s' if len(names) > 1 else ''} {', '.join(names)} through "
                     f"{via}, a new global holding {'their addresses' if len(names) > 1 else 'its address'}",
            symbol=source, kind="function",
            explanation=[f"{source} reads {via} through its __ref_ pointer; {via} is new: it exists only in the "
                         "patch image",
                         f"{via} holds the address of {', '.join(names)} in the patch image, not the running "
                         "base's: what is written through it is the patch image's state"],
            evidence={"via": via, "globals": names},
        )


def _address_identity(ctx: Context) -> Iterator[Finding]:
    by_source: dict[str, list] = {}
    for e in ctx.reach.edges:
        if e.kind == ADDRESS and e.target_class != NEW:
            by_source.setdefault(e.source, []).append(e)
    for source in sorted(by_source):
        edges = by_source[source]
        targets = sorted({e.target for e in edges})
        expl = [f"{source} takes the address of {', '.join(targets)}"
                + (f" (through {', '.join(sorted({e.via for e in edges if e.via}))})"
                   if any(e.via for e in edges) else "")]
        for t in targets:
            e = next(x for x in edges if x.target == t)
            expl.append(f"that address is the patch image's copy of {t}, while the running program's data holds "
                        f"the base image's {t}"
                        + (" (patched: the base copy is redirected, but its address is not the patch's)"
                           if e.target_class == "patched" else ""))
        expl.append("comparisons with pointers the base stored fail, and pointers the patch stores name another "
                    "copy; the engine redirects calls, not taken addresses, so nothing rebinds this reference to "
                    "the base's function")
        yield finding(
            "HP603", f"{source} takes the address of existing function{'s' if len(targets) > 1 else ''} "
                     f"{', '.join(targets)}",
            symbol=source, kind="function", explanation=expl,
            evidence={"functions": targets,
                      "references": [{"offset": hx(e.offset), "target": e.target, "new_rva": hx(e.target_rva),
                                      "base_rva": hx(e.base_rva), "class": e.target_class, "via": e.via}
                                     for e in edges]},
        )


def _thread_local(ctx: Context) -> Iterator[Finding]:
    seen: set[tuple[str, str]] = set()
    for r in ctx.reach.ref_reads:
        if not r.thread_local or (r.source, r.slot) in seen:
            continue
        seen.add((r.source, r.slot))
        yield finding(
            "HP604", f"{r.source} reaches thread-local {r.target} through {r.slot}, which points at the TLS template",
            symbol=r.source, kind="function",
            explanation=[f"{r.target} is thread-local; {r.source} (patched) reads it through {r.slot}",
                         f"{r.slot} holds RVA {r.target_rva:#x}, in {r.target_section}: the TLS template, not a "
                         "thread's copy" if r.target_rva is not None else f"{r.slot} points at the TLS template",
                         "every access goes to the template: wrong in the intermediate already, and wrong "
                         "against the base"],
            evidence={"slot": r.slot, "slot_rva": hx(r.slot_rva), "target": r.target,
                      "target_rva": hx(r.target_rva), "section": r.target_section},
        )
