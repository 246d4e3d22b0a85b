"""HP109: a change in code that already ran.

Some code runs only while the image loads: the entry point (``DllMain``'s
process-attach path), TLS callbacks, and the CRT's initialiser tables (``__xi_a`` ..
``__xi_z``, ``__xc_a`` .. ``__xc_z``), together with the functions only they call.  In a
running process that code has already run and will not run again, so a fix there never
takes effect when hot-patched, however it is listed.
"""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.rules import ERROR, Finding, checker, define, finding, hx
from pehotpatch.rules.context import Context
from pehotpatch.vocab import RefKind, Side

define(
    "HP109", "ChangedRunOnceCode", "change in code that runs only at load", ERROR,
    """A function that changed runs only while the image loads or a thread starts: it
    is the entry point (DllMain), a TLS callback or a CRT initialiser, or it is called
    only from those. The running process executed the base's version when it loaded the
    image (process attach) and keeps the state that version set up; at most new threads
    would run the fix. A process that loads the fixed image behaves differently, so the
    patched process does not behave like the intermediate. Move the fix to code that
    runs again (for example initialise lazily on first use), or ship it as a regular
    update.""",
)

#: CRT initialiser table bounds: (start symbol, end symbol, what runs from it).
INIT_TABLES = (("__xi_a", "__xi_z", "a C initialiser"), ("__xc_a", "__xc_z", "a C++ constructor"))


def run_once_roots(ix: SymbolIndex) -> dict[int, str]:
    """Functions the loader or CRT calls at load time: RVA -> what they are."""
    img = ix.image
    out: dict[int, str] = {}
    entry = ix.function_at(img.entry_rva) if img.entry_rva else None
    if entry is not None and entry.rva == img.entry_rva:
        out[entry.rva] = "the entry point"
    for t in img.tls_callbacks:
        f = ix.function_at(t)
        if f is not None:
            out.setdefault(f.rva, "a TLS callback")
    ptr = img.machine.pointer_size
    by_name = ix.globals_by_name
    for lo, hi, what in INIT_TABLES:
        a, b = by_name.get(lo), by_name.get(hi)
        if a is None or b is None or not a.rva < b.rva <= a.rva + 0x10000:
            continue
        for r in img.relocations.within(a.rva, b.rva):
            raw = img.try_read(r, ptr)
            if raw is None:
                continue
            f = ix.function_at(int.from_bytes(raw, "little") - img.image_base)
            if f is not None:
                out.setdefault(f.rva, what)
    return out


def run_once_functions(ctx: Context) -> dict[int, tuple[str, list[str]]]:
    """Base functions that run only at load: RVA -> (the root's description, call path)."""
    ix = ctx.bix
    roots = run_once_roots(ix)
    if not roots:
        return {}
    callees: dict[int, list[int]] = {}
    address_taken: set[int] = set()
    has_caller: set[int] = set()
    for f in ix.functions:
        lst = callees.setdefault(f.rva, [])
        for r in ctx.refs(Side.BASE, f):
            t = ix.function_at(r.target)
            if t is None or t.rva == f.rva:
                continue
            if r.kind in (RefKind.CALL, RefKind.JUMP):
                lst.append(t.rva)
                has_caller.add(t.rva)
            elif r.kind == RefKind.DATA:
                address_taken.add(t.rva)
    address_taken |= stored_function_pointers(ix)
    # Everything that can start running later: exports, taken addresses (in code or as
    # pointers stored in data: vtables, callback tables), functions nobody calls (an
    # unknown way in), and what those call.
    exported = {f.rva for f in ix.functions if f.exported_as}
    starts = (exported | address_taken | {f.rva for f in ix.functions if f.rva not in has_caller}) - set(roots)
    later = _closure(starts, callees, stop=set(roots))
    out: dict[int, tuple[str, list[str]]] = {}
    names = {f.rva: f.name for f in ix.functions}
    for root, what in sorted(roots.items()):
        paths = {root: [names.get(root, hex(root))]}
        queue = [root]
        while queue:
            cur = queue.pop(0)
            if cur in later and cur != root:
                continue
            out.setdefault(cur, (f"{what} {names.get(root, hex(root))}", paths[cur]))
            for c in callees.get(cur, []):
                if c not in paths and c not in later:
                    paths[c] = [*paths[cur], names.get(c, hex(c))]
                    queue.append(c)
    return out


def stored_function_pointers(ix: SymbolIndex) -> set[int]:
    """Function starts stored as relocated pointers outside the code (x86 jump tables
    hold case labels inside functions, not starts, so they do not count)."""
    img = ix.image
    ptr = img.machine.pointer_size
    starts = ix.function_by_rva
    out: set[int] = set()
    for s in img.sections:
        if s.executable or not s.size:
            continue
        for r in img.relocations.within(s.rva, s.rva + s.size - ptr + 1):
            raw = img.try_read(r, ptr)
            if raw is not None:
                t = int.from_bytes(raw, "little") - img.image_base
                if t in starts:
                    out.add(t)
    return out


def _closure(starts: set[int], callees: dict[int, list[int]], stop: set[int]) -> set[int]:
    seen = set(starts)
    queue = sorted(starts)
    while queue:
        cur = queue.pop()
        for c in callees.get(cur, []):
            if c not in seen and c not in stop:
                seen.add(c)
                queue.append(c)
    return seen


@checker("HP1xx", emits=("HP109",))
def check_run_once(ctx: Context) -> Iterator[Finding]:
    if not ctx.changed:
        return
    once = run_once_functions(ctx)
    for fd in ctx.changed:
        hit = once.get(fd.base.rva)
        if hit is None:
            continue
        root, path = hit
        name = fd.new.name
        fb: Function = fd.base
        where = f"called only from {root} ({' -> '.join(path)})" if len(path) > 1 else f"it is {root}"
        expl = [f"{name} changed" + (" (in the hot-patch set)" if ctx.in_set(fd.new) else ""),
                f"it runs only while the image loads or a thread starts: {where}",
                "the running process already executed the base's version when it loaded the image "
                "(process attach), and keeps the state that version set up",
                "so the patched process would not behave like one that loads the intermediate"]
        yield finding(
            "HP109", f"{name} changed, but it runs only at load ({where})", symbol=name, kind="function",
            explanation=expl,
            evidence={"root": root, "path": path, "base_rva": hx(fb.rva), "new_rva": hx(fd.new.rva),
                      "in_hotpatch_set": ctx.in_set(fd.new)},
        )
