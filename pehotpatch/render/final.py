"""Text and JSON for the final-image commands: plan, emit-final, inspect, verify."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pehotpatch.emit.final import EmitResult
from pehotpatch.image.symbols import SymbolIndex
from pehotpatch.plan.model import PatchPlan
from pehotpatch.table.decode import TableReading
from pehotpatch.table.format import HOT_PATCH_BASE, HOT_PATCH_INFO, TYPE_NAMES
from pehotpatch.verify import VerifyResult


def _t(s: str, style: str | None = None) -> Text:
    return Text(s, style=style or "")


# ---- plan ------------------------------------------------------------------------------------
def render_plan(plan: PatchPlan, c: Console) -> None:
    state = "applicable" if plan.applicable else f"NOT applicable ({len(plan.refusals)} refused reference(s))"
    c.print(_t(f"patch plan, sequence {plan.sequence}: {state}", "bold" if plan.applicable else "bold red"))
    c.print(_t(f"  base {plan.base.path} (TimeDateStamp {plan.base.timestamp:#x}, CheckSum {plan.base.checksum:#x}, {plan.base.machine})"))
    c.print(_t(f"  patch {plan.intermediate.path}"))
    rows: list[tuple[str, str, str, str]] = []
    for f in plan.forward:
        rows.append(("forward", f.function, f"base {f.base_rva:#x} -> patch {f.patch_rva:#x}", f"first bytes {f.first_bytes:08x}"))
    for b in plan.backward:
        rows.append(("backward", b.function, f"patch {b.patch_rva:#x} -> base {b.base_rva:#x}", "called by " + ", ".join(b.referenced_by)))
    for d in plan.data:
        rows.append(("data", d.slot, f"patch {d.slot_rva:#x} -> base {d.target} {d.base_rva:#x}", "read by " + ", ".join(d.read_by)))
    for i in plan.imports:
        rows.append(("import", i.name, f"patch IAT {i.patch_slot_rva:#x} <- base IAT {i.base_slot_rva:#x}", "used by " + ", ".join(i.used_by)))
    for o in plan.own_imports:
        rows.append(("own import", o.name, f"patch IAT {o.patch_slot_rva:#x}", "resolved by the patch image"))
    for ct in plan.call_targets:
        rows.append(("CFG target", ct.function, f"patch {ct.patch_rva:#x}", f"valid in base {ct.base_rva:#x}"))
    for g in plan.new_globals:
        rows.append(("new global", g.name, f"patch {g.patch_rva:#x}", f"stays in the patch image{' (via ' + g.slot + ')' if g.slot else ''}"))
    for nf in plan.new_functions:
        rows.append(("new function", nf.name, f"patch {nf.patch_rva:#x}", f"reached by {nf.reached_by} ({nf.reached_how})"))
    if rows:
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("record", "name", "where", "why"):
            t.add_column(col)
        for r in rows:
            t.add_row(*(_t(x) for x in r))
        c.print(t)
    for ref in plan.refusals:
        c.print(_t(f"  refused: {ref.reference} -> {ref.target}: {ref.reason}", "red"))
    for n in plan.notes:
        c.print(_t(f"  note: {n}", "dim"))


# ---- emit-final ------------------------------------------------------------------------------
def render_emit(res: EmitResult, c: Console) -> None:
    recs = ", ".join(f"{n} {k}" for k, n in res.records.items()) or "no records"
    c.print(_t(f"wrote {res.output}: hot-patch table of {res.table_size} bytes at RVA {res.table_rva:#x} "
               f"(section {res.section}), sequence {res.sequence}: {recs}", "bold"))
    for r in res.reverts:
        c.print(_t(f"  reverts: {r} (the previous patch redirected it, this one does not)", "yellow"))
    for n in res.notes:
        c.print(_t(f"  note: {n}", "dim"))


# ---- inspect ---------------------------------------------------------------------------------
def _name(ix: SymbolIndex | None, rva: int) -> str:
    if ix is None:
        return ""
    from pehotpatch.diff import describe_target

    return describe_target(ix, rva)


def inspect_to_json(path: str, rd: TableReading, ix: SymbolIndex | None = None) -> dict[str, Any]:
    from pehotpatch.version import __version__

    doc: dict[str, Any] = {"schema": "pehp-inspect", "schema_version": 1,
                           "tool": {"name": "pehp", "version": __version__},
                           "image": path, "present": rd.present}
    if not rd.present:
        return doc
    doc.update({"rva": f"{rd.rva:#x}", "size": rd.size, "valid": rd.valid,
                "info": dict(rd.info_fields), "base": dict(rd.base_fields),
                "violations": [v.to_json() for v in rd.violations], "chunks": []})
    if rd.table is not None:
        for ch in rd.table.chunks:
            recs = []
            for r in ch.records:
                e = r.to_json()
                if ix is not None and ch.inverse:
                    e["site_name"] = _name(ix, r.site)
                elif ix is not None:
                    e["target_name"] = _name(ix, r.target)
                recs.append(e)
            doc["chunks"].append({"offset": f"{ch.offset:#x}", "type": TYPE_NAMES.get(ch.type, f"{ch.type:#x}"),
                                  "inverse": ch.inverse, "obligatory": ch.obligatory,
                                  "reserved_bits": f"{ch.reserved:#x}", "records": recs})
    return doc


def render_inspect(path: str, rd: TableReading, c: Console, ix: SymbolIndex | None = None) -> None:
    if not rd.present:
        c.print(_t(f"{path}: no hot-patch table (HotPatchTableOffset is 0 or there is no load config)"))
        return
    state = "valid" if rd.valid else f"{len(rd.violations)} loader rule(s) broken"
    c.print(_t(f"{path}: hot-patch table at RVA {rd.rva:#x}, {rd.size} bytes: {state}", "bold" if rd.valid else "bold red"))
    for title, decl, fields in (("IMAGE_HOT_PATCH_INFO", HOT_PATCH_INFO, rd.info_fields),
                                ("IMAGE_HOT_PATCH_BASE", HOT_PATCH_BASE, rd.base_fields)):
        if not fields:
            continue
        c.print(_t(f"  {title}", "bold"))
        for f in decl.fields:
            if f.name in fields:
                c.print(_t(f"    {f.offset:#04x} {f.name:<22} {fields[f.name]:#010x}  {f.meaning}"))
    if rd.table is not None:
        for ch in rd.table.chunks:
            c.print(_t(f"  chunk at {ch.offset:#x}: {ch.type_name}, {len(ch.records)} record(s)", "bold"))
            for r in ch.records:
                extra = " ".join(f"{w:08x}" for w in r.extra)
                nm = _name(ix, r.site if ch.inverse else r.target) if ix is not None else ""
                side = ("patch", "base") if ch.inverse else ("base", "patch")
                c.print(_t(f"    {side[0]} {r.site:#x} -> {side[1]} {r.target:#x}  {extra}  {nm}".rstrip()))
    for v in rd.violations:
        off = f" (table offset {v.offset:#x})" if v.offset is not None else ""
        c.print(_t(f"  violation [{v.code}]: {v.message}{off}", "red"))


# ---- verify ----------------------------------------------------------------------------------
def render_verify(res: VerifyResult, c: Console) -> None:
    if res.ok:
        c.print(_t(f"{res.final}: verified against {res.base}: {res.checked_records} record(s), "
                   f"every one the plan calls for, nothing else", "bold green"))
        return
    c.print(_t(f"{res.final}: {len(res.findings)} problem(s) against {res.base}", "bold red"))
    for f in res.findings:
        c.print(_t(f"  [{f.code}] {f.message}"))
