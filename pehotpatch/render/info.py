"""`pehp info`: the image model as JSON-ready data and as rich text."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pehotpatch.image.pe import PEImage
from pehotpatch.load import LoadedImage

INFO_SCHEMA_VERSION = 1


def hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def image_info(img: PEImage) -> dict[str, Any]:
    """The image model as plain data (the ``pehp info --json`` document)."""
    lc = img.load_config
    return {
        "schema": "pehp-info",
        "schema_version": INFO_SCHEMA_VERSION,
        "path": img.path,
        "machine": img.machine.value,
        "kind": img.kind,
        "image_base": hx(img.image_base),
        "entry_point": hx(img.entry_rva),
        "timestamp": hx(img.timestamp),
        "checksum": {
            "stored": hx(img.checksum),
            "computed": hx(img.checksum_computed),
            "valid": img.checksum == img.checksum_computed,
        },
        "size_of_image": hx(img.size_of_image),
        "sections": [
            {
                "name": s.name,
                "rva": hx(s.rva),
                "virtual_size": hx(s.virtual_size),
                "raw_size": hx(s.raw_size),
                "perms": s.perms,
                "characteristics": hx(s.characteristics),
            }
            for s in img.sections
        ],
        "exports": [
            {"ordinal": e.ordinal, "name": e.name, "rva": hx(e.rva) if not e.forwarder else None,
             "forwarder": e.forwarder}
            for e in img.exports
        ],
        "imports": [
            {"dll": i.dll, "name": i.name, "ordinal": i.ordinal, "iat_rva": hx(i.iat_rva),
             "delayed": i.delayed}
            for i in img.imports
        ],
        "relocations": {"count": len(img.relocations)},
        "functions_pdata": {
            "count": len(img.functions),
            "ranges": [[hx(f.begin), hx(f.end)] for f in img.functions],
        },
        "coff_symbols": {
            "count": len(img.coff_symbols),
            "functions": sorted(
                {s.name for s in img.coff_symbols if s.is_function and s.rva is not None}
            ),
        },
        "codeview": None
        if img.codeview is None
        else {"pdb_path": img.codeview.pdb_path, "guid": str(img.codeview.guid), "age": img.codeview.age},
        "ex_dll_characteristics": hx(img.ex_dll_characteristics),
        "hotpatch_compatible": img.hotpatch_compatible,
        "load_config": None
        if lc is None
        else {
            "rva": hx(lc.rva),
            "size": hx(lc.size),
            "hotpatch_table_offset": hx(lc.hotpatch_table_offset),
            "covers_hotpatch_field": lc.covers_hotpatch_field,
            "guard_flags": hx(lc.guard_flags),
            "cfg_function_count": len(lc.cfg_functions),
        },
        "tls_callbacks": [hx(c) for c in img.tls_callbacks],
        "authenticode": img.has_signature,
        "resources_sha256": img.resource_digest,
    }


def render_info(img: PEImage, console: Console, *, verbose: bool = False) -> None:
    lc = img.load_config
    cv = img.codeview
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    ok = img.checksum == img.checksum_computed
    rows = [
        ("image", escape(img.path)),
        ("machine", f"{img.machine.value} ({img.kind})"),
        ("image base", f"{img.image_base:#x}"),
        ("entry point", f"{img.entry_rva:#x}"),
        ("timestamp", f"{img.timestamp:#010x}"),
        ("checksum", f"{img.checksum:#010x} stored, {img.checksum_computed:#010x} computed"
         + ("" if ok else " [yellow](mismatch)[/]")),
        ("codeview", f"{escape(cv.pdb_path)} guid {cv.guid} age {cv.age}" if cv else "none"),
        ("hot-patch compatible", "yes" if img.hotpatch_compatible else "no"
         + ("" if img.ex_dll_characteristics is not None else " (no extended DLL characteristics)")),
        ("load config", "none" if lc is None else
         f"size {lc.size:#x} at RVA {lc.rva:#x}; HotPatchTableOffset "
         + (f"{lc.hotpatch_table_offset:#x}" if lc.hotpatch_table_offset is not None
            else "not covered (size too small)")),
        ("relocations", str(len(img.relocations))),
        (".pdata functions", str(len(img.functions))),
        ("COFF symbols", str(len(img.coff_symbols))),
        ("TLS callbacks", ", ".join(f"{c:#x}" for c in img.tls_callbacks) or "none"),
        ("authenticode", "signed" if img.has_signature else "not signed"),
        ("resources", "none" if img.resource_digest is None else f"sha256 {img.resource_digest[:16]}…"),
    ]
    for k, v in rows:
        head.add_row(k, v)
    console.print(head)

    t = Table(title="sections", title_justify="left")
    for col in ("name", "rva", "vsize", "raw size", "perms"):
        t.add_column(col)
    for s in img.sections:
        t.add_row(escape(s.name), f"{s.rva:#x}", f"{s.virtual_size:#x}", f"{s.raw_size:#x}", s.perms)
    console.print(t)

    if img.exports:
        t = Table(title=f"exports ({len(img.exports)})", title_justify="left")
        for col in ("ordinal", "name", "rva / forwarder"):
            t.add_column(col)
        for e in img.exports:
            t.add_row(str(e.ordinal), escape(e.name or ""), escape(e.forwarder or f"{e.rva:#x}"))
        console.print(t)
    if img.imports:
        t = Table(title=f"imports ({len(img.imports)})", title_justify="left")
        for col in ("dll", "function", "IAT slot"):
            t.add_column(col)
        for i in img.imports:
            fn = i.name if i.name is not None else f"#{i.ordinal}"
            t.add_row(escape(i.dll) + (" (delay)" if i.delayed else ""), escape(fn), f"{i.iat_rva:#x}")
        console.print(t)


def symbols_info(li: LoadedImage) -> dict[str, Any]:
    """Functions, globals and the hot-patch set of a loaded image (``info --json``)."""
    ix = li.index
    hs = li.hotpatch
    return {
        "pdb": li.pdb_path,
        "notes": li.notes,
        "functions": [
            {
                "name": f.name,
                "rva": hx(f.rva),
                "size": f.size,
                "signature": f.signature,
                "module": f.module,
                "static": f.is_static,
                "aliases": sorted(f.aliases),
                "sources": sorted(f.sources),
                "hotpatch_marked": bool(hs and f.name in hs),
            }
            for f in ix.functions
        ],
        "globals": [
            {
                "name": g.name,
                "rva": hx(g.rva),
                "size": g.size,
                "section": g.section,
                "mutable": g.mutable,
                "type": g.type_name,
                "contains_pointers": g.contains_pointers,
                "ref_slot": g.is_ref_slot,
                "sources": sorted(g.sources),
            }
            for g in ix.globals
        ],
        "hotpatch_set": None
        if hs is None
        else {
            "sources_consulted": sorted(hs.available),
            "functions": [{"name": n, "sources": sorted(hs.names[n])} for n in hs.sorted()],
            "disagreements": [{"name": n, "why": w} for n, w in hs.disagreements()],
        },
    }


def render_symbols(li: LoadedImage, console: Console) -> None:
    ix = li.index
    hs = li.hotpatch
    console.print(f"[bold]PDB[/]: {escape(li.pdb_path or 'none')}")
    for note in li.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    t = Table(title=f"functions ({len(ix.functions)})", title_justify="left")
    for col in ("rva", "size", "function", "marked", "from"):
        t.add_column(col)
    for f in ix.functions:
        label = f.signature or f.name
        if f.is_static:
            label = "static " + label
        t.add_row(f"{f.rva:#x}", str(f.size), escape(label), "yes" if hs and f.name in hs else "",
                  escape(",".join(sorted(f.sources))))
    console.print(t)
    t = Table(title=f"globals ({len(ix.globals)})", title_justify="left")
    for col in ("rva", "size", "section", "global", "type", "notes"):
        t.add_column(col)
    for g in ix.globals:
        notes = []
        if g.is_ref_slot:
            notes.append("__ref_ slot")
        elif g.mutable:
            notes.append("mutable")
        if g.contains_pointers:
            notes.append("holds pointers")
        t.add_row(f"{g.rva:#x}", "" if g.size is None else str(g.size), escape(g.section), escape(g.name),
                  escape(g.type_name or ""), ", ".join(notes))
    console.print(t)
    if hs is not None:
        consulted = escape(", ".join(sorted(hs.available)) or "none")
        console.print(f"[bold]hot-patch set[/] ({len(hs)} functions; sources consulted: {consulted})")
        for n in hs.sorted():
            console.print(f"  {escape(n)}  [dim]({escape(', '.join(sorted(hs.names[n])))})[/]")
        for n, why in hs.disagreements():
            console.print(f"  [yellow]disagreement[/]: {escape(n)}: {escape(why)}")
