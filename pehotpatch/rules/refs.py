"""HP6xx: how patched code reaches globals.

Code compiled for hot-patching reads every mutable global ``G`` through a pointer
``__ref_G`` that the engine points at the base image's ``G``.  An instruction of patched
code that addresses a writable global directly reaches the patch image's own copy,
which the running program never sees.
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.image.symbols import Function
from pehotpatch.rules import ERROR, WARNING, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context

define(
    "HP601", "DirectMutableGlobalAccess", "patched code accesses a mutable global directly", ERROR,
    """A patched function (or a new function that patched code calls) reads or writes a
    mutable global by its address instead of through its __ref_ pointer. After the patch
    is applied that instruction touches the patch image's copy of the global, not the
    running base's, so the program's state and the patched code drift apart. The
    usual cause is a translation unit compiled without -fms-secure-hotpatch-functions-file
    (or -list), or a function missing from that list.""",
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

#: Globals that the CRT/loader manage and that code may address directly.
DIRECT_ACCESS_ALLOWED = frozenset({"__security_cookie", "__security_cookie_complement", "_tls_index",
                                   "__tls_index", "_tls_used"})


def _allowed(name: str) -> bool:
    return name in DIRECT_ACCESS_ALLOWED or name.startswith("??_R")  # MSVC RTTI


def patched_code(ctx: Context) -> list[tuple[Function, str | None]]:
    """Patched functions, plus new functions reachable from them: (function, caller)."""
    out: list[tuple[Function, str | None]] = [(fd.new, None) for fd in ctx.patched]
    added = {f.rva: f for f in ctx.diff.added_functions}
    seen = {f.rva for f, _ in out}
    queue = list(out)
    while queue:
        fn, _ = queue.pop(0)
        for r in ctx.refs(1, fn):
            if r.kind not in ("call", "jump"):
                continue
            callee = added.get(r.target)
            if callee is not None and callee.rva not in seen:
                seen.add(callee.rva)
                item = (callee, fn.name)
                out.append(item)
                queue.append(item)
    return out


@checker("HP6xx")
def check_refs(ctx: Context) -> Iterator[Finding]:
    slots = ctx.nix.imports_by_slot
    img = ctx.nix.image
    for fn, caller in patched_code(ctx):
        direct: dict[str, list[int]] = {}
        ptr_consts: dict[str, list[int]] = {}
        for r in ctx.refs(1, fn):
            if r.kind not in ("data", "indirect_call", "indirect_jump") or r.target in slots:
                continue
            sec = img.section_at(r.target)
            if sec is None or sec.executable:
                continue
            g, off = ctx.global_near(1, r.target) or (None, 0)
            if g is not None and (g.is_ref_slot or _allowed(g.name)):
                continue
            if g is None:
                name = ctx.describe(1, r.target)
            else:
                name = g.name if off == 0 else f"{g.name}+{off:#x}"
            if sec.writable:
                direct.setdefault(name, []).append(r.offset)
            elif g is not None and g.contains_pointers:
                ptr_consts.setdefault(name, []).append(r.offset)
        who = (f"{fn.name} (new, called by {caller})" if caller else f"{fn.name} (patched)")
        if direct:
            names = sorted(direct)
            expl = [f"{who} addresses {', '.join(names)} directly, not through __ref_ pointers",
                    "after the patch is applied it would use the patch image's copy, not the running base's"]
            if caller is None and not ctx.ref_slot_readers.get(fn.name):
                expl.append(f"{fn.name} reads no __ref_ pointer at all: it was probably compiled without "
                            "the hot-patch functions file")
            yield finding(
                "HP601", f"{fn.name} accesses mutable global{'s' if len(names) > 1 else ''} "
                         f"{', '.join(names)} directly",
                symbol=fn.name, kind="function", explanation=expl,
                evidence={"globals": {n: [hx(o) for o in direct[n]] for n in names},
                          "new_rva": hx(fn.rva), "called_by": caller},
            )
        if ptr_consts:
            names = sorted(ptr_consts)
            yield finding(
                "HP602", f"{fn.name} uses constant{'s' if len(names) > 1 else ''} holding pointers "
                         f"{', '.join(names)} directly",
                symbol=fn.name, kind="function",
                explanation=[f"{who} addresses {', '.join(names)} directly",
                             "the pointers inside are the patch image's, not the running base's"],
                evidence={"globals": {n: [hx(o) for o in ptr_consts[n]] for n in names},
                          "new_rva": hx(fn.rva), "called_by": caller},
            )
