"""`pehp diff` output: a versioned JSON document (docs/diff-schema.md) and rich text."""

from __future__ import annotations

import difflib
from typing import Any

from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table
from rich.text import Text

from pehotpatch.diff import (
    CHANGED,
    PADDING_ONLY,
    PROLOGUE_ONLY,
    THROUGH_DATA,
    DiffResult,
    FunctionDiff,
)
from pehotpatch.listing import first_difference, listing, mapped_listing
from pehotpatch.load import LoadedImage

DIFF_SCHEMA_VERSION = 1


def hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def unified(res: DiffResult, fd: FunctionDiff) -> list[str]:
    """Base listing (targets named by their intermediate counterparts) against the new one."""
    a = mapped_listing(res.base.index, res.new.index, res.correlation, fd.base)
    b = listing(res.new.index, fd.new)
    return list(difflib.unified_diff(a, b, f"base/{fd.base.name}", f"intermediate/{fd.new.name}", lineterm="", n=3))


def _image_doc(li: LoadedImage) -> dict[str, Any]:
    return {
        "path": li.path,
        "machine": li.pe.machine.value,
        "pdb": li.pdb_path,
        "functions": len(li.index.functions),
        "globals": len(li.index.globals),
        "notes": li.notes,
    }


def _is_plumbing(name: str) -> bool:
    return name.startswith(("__ref_", "___ref_"))


def diff_to_json(res: DiffResult, *, verbose: bool = False) -> dict[str, Any]:
    funcs = []
    for fd in sorted(res.functions, key=lambda f: (f.status, f.name)):
        entry: dict[str, Any] = {
            "name": fd.name,
            "status": fd.status,
            "reason": fd.reason,
            "base_rva": hx(fd.base.rva),
            "new_rva": hx(fd.new.rva),
            "pairing": fd.method,
        }
        if fd.data:
            entry["data"] = fd.data
        fdiff = first_difference(res, fd)
        if fdiff:
            entry["first_difference"] = {"base": fdiff[0], "new": fdiff[1]}
        if verbose and fd.status == CHANGED:
            entry["unified"] = unified(res, fd)
        funcs.append(entry)
    img = res.image
    added_globals = [g for g in res.added_globals if not _is_plumbing(g.name)]
    return {
        "schema": "pehp-diff",
        "schema_version": DIFF_SCHEMA_VERSION,
        "base": _image_doc(res.base),
        "intermediate": _image_doc(res.new),
        "summary": {
            "paired": len(res.correlation.functions),
            "changed": len(res.by_status(CHANGED)),
            "changed_through_data": len(res.by_status(THROUGH_DATA)),
            "prologue_only": len(res.by_status(PROLOGUE_ONLY)),
            "padding_only": len(res.by_status(PADDING_ONLY)),
            "unchanged": res.unchanged,
            "added": len(res.added_functions),
            "removed": len(res.removed_functions),
            "globals_changed": len(res.globals_changed),
            "globals_added": len(added_globals),
            "globals_removed": len(res.removed_globals),
            "pairing": res.correlation.methods(),
        },
        "functions": funcs,
        "added_functions": [{"name": f.name, "rva": hx(f.rva), "size": f.size} for f in res.added_functions],
        "removed_functions": [{"name": f.name, "rva": hx(f.rva), "size": f.size} for f in res.removed_functions],
        "globals": {
            "changed": [{"name": g.name, "changes": g.changes, "detail": g.detail} for g in res.globals_changed],
            "added": [{"name": g.name, "rva": hx(g.rva), "size": g.size, "section": g.section} for g in added_globals],
            "removed": [{"name": g.name, "rva": hx(g.rva), "size": g.size, "section": g.section}
                        for g in res.removed_globals],
            "ref_slots_added": sorted(g.name for g in res.added_globals if _is_plumbing(g.name)),
        },
        "image": {
            "machine": None if img.machine is None else [img.machine.base, img.machine.new],
            "kind": None if img.kind is None else [img.kind.base, img.kind.new],
            "sections_added": img.sections_added,
            "sections_removed": img.sections_removed,
            "section_permissions_changed": [
                {"section": c.name, "base": c.base, "new": c.new} for c in img.section_perms_changed
            ],
            "exports_added": img.exports_added,
            "exports_removed": img.exports_removed,
            "exports_repointed": [{"name": c.name, "base": c.base, "new": c.new} for c in img.exports_repointed],
            "imports_added": img.imports_added,
            "imports_removed": img.imports_removed,
            "import_dlls_added": img.import_dlls_added,
            "import_dlls_renamed": [{"base": c.base, "new": c.new} for c in img.import_dlls_renamed],
            "entry_point": None if img.entry_point is None else {"base": img.entry_point.base, "new": img.entry_point.new},
            "tls_callbacks": None if img.tls_callbacks is None else {"base": list(img.tls_callbacks.base),
                                                                     "new": list(img.tls_callbacks.new)},
            "resources_changed": img.resources_changed,
        },
    }


def render_diff(res: DiffResult, console: Console, *, verbose: bool = False) -> None:
    doc = diff_to_json(res, verbose=False)
    s = doc["summary"]
    console.print(f"[bold]base[/]         {esc(res.base.path)}  ({res.base.pe.machine.value}, "
                  f"{'PDB' if res.base.pdb_path else 'no PDB'}, {len(res.base.index.functions)} functions)")
    console.print(f"[bold]intermediate[/] {esc(res.new.path)}  ({res.new.pe.machine.value}, "
                  f"{'PDB' if res.new.pdb_path else 'no PDB'}, {len(res.new.index.functions)} functions)")
    for note in sorted(set(res.base.notes + res.new.notes)):
        console.print(f"[dim]note: {esc(note)}[/]")
    t = Table(title="functions", title_justify="left")
    for col in ("changed", "through data", "prologue only", "padding only", "unchanged", "added", "removed"):
        t.add_column(col, justify="right")
    t.add_row(*(str(s[k]) for k in ("changed", "changed_through_data", "prologue_only", "padding_only",
                                     "unchanged", "added", "removed")))
    console.print(t)
    console.print("pairing: " + ", ".join(f"{k} {v}" for k, v in s["pairing"].items()))

    if doc["functions"]:
        t = Table(title="changed functions", title_justify="left")
        for col in ("function", "status", "why", "first difference (base → intermediate)"):
            t.add_column(col)
        for e in doc["functions"]:
            why = e["reason"]
            if e.get("data"):
                why = "reads " + ", ".join(e["data"])
            fdiff = e.get("first_difference")
            t.add_row(Text(e["name"]), e["status"], Text(why),
                      Text(f"{fdiff['base']}  →  {fdiff['new']}" if fdiff else ""))
        console.print(t)
    for title, key in (("added functions", "added_functions"), ("removed functions", "removed_functions")):
        if doc[key]:
            console.print(f"[bold]{title}[/]: " + esc(", ".join(f["name"] for f in doc[key])))
    g = doc["globals"]
    if g["changed"]:
        t = Table(title="changed globals", title_justify="left")
        for col in ("global", "what", "detail"):
            t.add_column(col)
        for e in g["changed"]:
            t.add_row(Text(e["name"]), ", ".join(e["changes"]), Text(e["detail"]))
        console.print(t)
    if g["added"]:
        console.print("[bold]added globals[/]: " + esc(", ".join(e["name"] for e in g["added"])))
    if g["removed"]:
        console.print("[bold]removed globals[/]: " + esc(", ".join(e["name"] for e in g["removed"])))
    if g["ref_slots_added"]:
        console.print(f"[dim]hot-patch __ref_ slots in the intermediate: {esc(', '.join(g['ref_slots_added']))}[/]")
    im = doc["image"]
    lines = []
    for key, label in (("exports_added", "exports added"), ("exports_removed", "exports removed"),
                       ("imports_added", "imports added"), ("imports_removed", "imports removed"),
                       ("sections_added", "sections added"), ("sections_removed", "sections removed")):
        if im[key]:
            lines.append(f"{label}: {', '.join(im[key])}")
    for e in im["import_dlls_renamed"]:
        lines.append(f"import DLL renamed: {e['base']} → {e['new']}")
    for e in im["exports_repointed"]:
        lines.append(f"export {e['name']} re-pointed: {e['base']} → {e['new']}")
    for e in im["section_permissions_changed"]:
        lines.append(f"section {e['section']} permissions {e['base']} → {e['new']}")
    if im["entry_point"]:
        lines.append(f"entry point: {im['entry_point']['base']} → {im['entry_point']['new']}")
    if im["tls_callbacks"]:
        lines.append("TLS callbacks changed")
    if im["resources_changed"]:
        lines.append("resources changed")
    if im["machine"]:
        lines.append(f"machine: {im['machine'][0]} → {im['machine'][1]}")
    if lines:
        console.print("[bold]image[/]")
        for ln in lines:
            console.print(f"  {ln}", markup=False)
    if verbose:
        for fd in res.functions:
            if fd.status == CHANGED:
                console.print(f"\n[bold]{esc(fd.name)}[/]")
                for ln in unified(res, fd):
                    style = "green" if ln.startswith("+") else "red" if ln.startswith("-") else None
                    console.print(ln, style=style, markup=False)
