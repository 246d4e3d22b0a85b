"""HP2xx: the image's interface to other images (exports and imports) must not change."""

from __future__ import annotations

from collections.abc import Iterator

from pehotpatch.rules import ERROR, NOTE, Finding, checker, define, finding
from pehotpatch.rules.context import Context
from pehotpatch.vocab import RefKind, Side

define(
    "HP201", "ExportAdded", "export added", ERROR,
    """The intermediate exports a name the base does not. Other images resolved their
    imports against the running base when they were loaded; a hot-patch does not add
    entries to the base's export table, so nobody could call the new export until a
    reboot, and code that expects it would fail to load against the patched base.""",
)
define(
    "HP202", "ExportRemoved", "export removed", ERROR,
    """The base exports a name the intermediate does not. Images already bound to the
    base keep calling it, and after a reboot they would no longer load.""",
)
define(
    "HP203", "ExportRepointed", "export re-pointed", ERROR,
    """An export names a different function (or forwarder) in the intermediate.
    Callers bound to the base's export keep reaching the old target; only function
    bodies can be redirected, not export table entries.""",
)
define(
    "HP211", "ImportDllAdded", "new import DLL", ERROR,
    """The intermediate imports from a DLL the base does not import from. Applying the
    patch would require loading another DLL into the running process, which the engine
    does not do; classic hot-patching forbids any import table change.""",
)
define(
    "HP212", "ImportAdded", "new function import from an existing DLL", ERROR,
    """The intermediate imports a function the base does not import. The engine fills
    the patch's import slots from the base image's IAT, where the new function has no
    slot. Windows Server 2022 and later engines can resolve new imports: pass
    --allow-new-imports when every target runs such an engine (the finding then becomes
    a note).""",
)


@checker("HP2xx", emits=("HP201", "HP202", "HP203", "HP211", "HP212"))
def check_interface(ctx: Context) -> Iterator[Finding]:
    d = ctx.diff.image
    for name in d.exports_added:
        target = _export_target(ctx, name)
        yield finding("HP201", f"export {name} added", symbol=name, kind="export",
                      evidence={"target": target} if target else {},
                      explanation=[f"the intermediate exports {name}; the base does not"])
    for name in d.exports_removed:
        yield finding("HP202", f"export {name} removed", symbol=name, kind="export",
                      explanation=[f"the base exports {name}; the intermediate does not"])
    for change in d.exports_repointed:
        name, b, n = change.name, change.base, change.new
        yield finding("HP203", f"export {name} re-pointed: {b} -> {n}", symbol=name, kind="export",
                      evidence={"base": b, "intermediate": n},
                      explanation=[f"in the base {name} names {b}", f"in the intermediate it names {n}"])
    new_dlls = set(d.import_dlls_added)
    by_dll: dict[str, list[str]] = {}
    for key in d.imports_added:
        dll, _, fn = key.partition("!")
        by_dll.setdefault(dll, []).append(fn)
    for dll in sorted(new_dlls):
        fns = sorted(by_dll.get(dll, []))
        yield finding("HP211", f"new import DLL {dll}", symbol=dll, kind="import",
                      evidence={"functions": fns},
                      explanation=[f"the intermediate imports {', '.join(fns) or 'from'} {dll}",
                                   f"the base imports nothing from {dll}"])
    users = _import_users(ctx)
    for key in d.imports_added:
        dll, _, fn = key.partition("!")
        if dll in new_dlls:
            continue
        expl = [f"the intermediate imports {fn} from {dll}; the base does not"]
        who = users.get(key, [])
        if who:
            expl.append(f"used by {', '.join(who)}")
        sev = None
        if ctx.options.allow_new_imports:
            sev = NOTE
            expl.append("allowed by --allow-new-imports (the engine resolves new imports)")
        yield finding("HP212", f"new import {fn} from {dll}", symbol=fn, kind="import", severity=sev,
                      evidence={"dll": dll, "import": key, "used_by": who}, explanation=expl)


def _export_target(ctx: Context, name: str) -> str | None:
    for e in ctx.new.pe.exports:
        if (e.name or f"#{e.ordinal}") == name:
            return e.forwarder or ctx.describe(Side.NEW, e.rva)
    return None


def _import_users(ctx: Context) -> dict[str, list[str]]:
    """Import key -> intermediate functions that reference its IAT slot, directly or
    through the import thunk (``jmp [__imp_f]``) the linker made for it."""
    slots = ctx.nix.imports_by_slot
    thunks: dict[int, str] = {}  # thunk start -> import key
    for fn in ctx.nix.functions:
        refs = ctx.refs(Side.NEW, fn)
        if len(refs) == 1 and refs[0].kind == RefKind.INDIRECT_JUMP and refs[0].target in slots:
            thunks[fn.rva] = slots[refs[0].target]
    out: dict[str, list[str]] = {}
    for fn in ctx.nix.functions:
        if fn.rva in thunks:
            continue  # a thunk is not a user
        for r in ctx.refs(Side.NEW, fn):
            key = slots.get(r.target) or thunks.get(r.target)
            if key is not None and fn.name not in out.setdefault(key, []):
                out[key].append(fn.name)
    return out
