"""Text output of ``pehp simulate``: the patches applied, each call's result in the three
worlds with the globals it wrote, undo, findings.  Names read from inputs are printed
literally (no markup)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pehotpatch.emulate.results import CallResult, SimulationResult


def _cell(r: CallResult) -> Text:
    if r.fault is not None:
        return Text(f"fault: {r.fault.text()}")
    value = "-" if r.value is None else f"{r.value} ({r.value:#x})"
    # each buffer argument's contents after the call, as a short digest
    return Text(value + "".join(f" buf:{b[:8]}" for b in r.buffers))


def _writes(r: CallResult) -> Text:
    return Text(", ".join(f"{w.image}:{w.name or f'{w.section}+{w.rva:#x}'}" for w in r.writes))


def render_simulation(res: SimulationResult, console: Console) -> None:
    console.print(Text(f"base   {res.base}\nfinal  {res.final}\nmachine {res.machine}, "
                       f"patch after call {res.patch_after}"))
    for p in res.patches:
        recs = ", ".join(f"{k} {v}" for k, v in p.records.items()) or "no records"
        state = "applied" if p.applied else f"REFUSED: {p.refused}"
        console.print(Text(f"{p.role} {p.final} (sequence {p.sequence}): {recs}; {state}"))
        for x in p.redirects:
            arrow = "base -> patch" if x.direction == "forward" else "patch copy -> base"
            console.print(Text(f"  {x.direction:8} {x.function} ({arrow}, RVA {x.site_rva:#x} -> "
                               f"{x.target_rva:#x})"))
        if p.restored:
            console.print(Text(f"  restored to the base's code: {', '.join(p.restored)}"))
    table = Table(show_edge=False, pad_edge=False, box=None)
    for col in ("#", "call", "", "base", "patched", "intermediate", "patched wrote"):
        table.add_column(col, overflow="fold")
    for row in res.calls:
        same = "" if row.patched.outcome() == row.intermediate.outcome() else "≠"
        table.add_row(str(row.index), Text(row.call), "before" if row.phase == "before" else same,
                      _cell(row.base), _cell(row.patched), _cell(row.intermediate),
                      _writes(row.patched))
    console.print(table)
    if res.undo is not None:
        u = res.undo
        state = "identical to before patching" if u.identical else (
            f"DIFFERENT at {len(u.differences)} byte(s), first RVA {u.differences[0]:#x}")
        console.print(Text(f"undo: {u.restored} function(s) restored; base code and read-only "
                           f"data {state}"))
    for n in res.notes:
        console.print(Text(f"note: {n}"))
    if res.findings:
        console.print(Text(f"{len(res.findings)} finding(s):"))
        for f in res.findings:
            where = f" [call {f.call}]" if f.call is not None else ""
            console.print(Text(f"  {f.kind}{where}: {f.message}"))
    else:
        console.print(Text("no findings: the patched base agrees with the intermediate"
                           if res.patch_after == 0 else "no findings"))
