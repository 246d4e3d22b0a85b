"""`pehp check` output: a versioned JSON document and rich text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pehotpatch.check import CheckResult
from pehotpatch.rules import ERROR, NOTE, WARNING, Finding
from pehotpatch.version import __version__

CHECK_SCHEMA_VERSION = 1

_STYLE = {ERROR: "bold red", WARNING: "yellow", NOTE: "cyan"}


def check_to_json(res: CheckResult) -> dict[str, Any]:
    return {
        "schema": "pehp-check",
        "schema_version": CHECK_SCHEMA_VERSION,
        "tool": {"name": "pehp", "version": __version__},
        "base": res.base,
        "intermediate": res.intermediate,
        "machine": res.machine,
        "verdict": res.verdict,
        "exit_code": res.exit_code,
        "summary": {"errors": res.errors, "warnings": res.warnings, "notes": res.notes_count,
                    "waived": len(res.waived)},
        "options": {"allow_new_imports": res.options.allow_new_imports},
        "patched": list(res.patched),
        "hotpatch_set": dict(res.hotpatch_set),
        "findings": [f.to_json() for f in res.findings],
        "waived": [f.to_json() for f in res.waived],
        "unused_waivers": [w.to_json() for w in res.unused_waivers],
        "notes": list(res.notes),
    }


def tree_to_json(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``pehp check-tree`` JSON: one entry per image (a check document, or an error)."""
    counts = {"patchable": 0, "rejected": 0, "error": 0, "unpaired": 0}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    return {
        "schema": "pehp-check-tree",
        "schema_version": CHECK_SCHEMA_VERSION,
        "tool": {"name": "pehp", "version": __version__},
        "summary": counts,
        "images": list(entries),
    }


def _finding_line(f: Finding, *, waived: bool = False) -> Text:
    t = Text()
    t.append(f"{f.severity:<8}", style="dim" if waived else _STYLE.get(f.severity))
    t.append(f"{f.rule}  ", style="dim" if waived else "bold")
    t.append(f.message)
    if waived and f.waiver is not None:
        until = f" until {f.waiver.expires.isoformat()}" if f.waiver.expires else ""
        t.append(f"  (waived{until}: {f.waiver.justification})", style="dim")
    return t


def render_check(res: CheckResult, console: Console, *, show_notes: bool = True) -> None:
    console.print(Text.assemble(("base         ", "bold"), res.base))
    console.print(Text.assemble(("intermediate ", "bold"), f"{res.intermediate}  ({res.machine})"))
    if res.patched:
        console.print(Text.assemble(("patched      ", "bold"), ", ".join(res.patched)))
    for note in res.notes:
        console.print(Text(f"note: {note}", style="dim"))
    if res.findings or res.waived:
        console.print()
    for f in res.findings:
        if f.severity == NOTE and not show_notes:
            continue
        console.print(_finding_line(f))
        for e in f.explanation:
            console.print(Text(f"        - {e}", style="dim" if f.severity == NOTE else ""))
    for f in res.waived:
        console.print(_finding_line(f, waived=True))
    for w in res.unused_waivers:
        console.print(Text(f"note: {w.label} matched no finding", style="dim"))
    console.print()
    summary = (f"{res.errors} error{'s' if res.errors != 1 else ''}, "
               f"{res.warnings} warning{'s' if res.warnings != 1 else ''}, "
               f"{res.notes_count} note{'s' if res.notes_count != 1 else ''}"
               + (f", {len(res.waived)} waived" if res.waived else ""))
    style = "bold red" if res.rejected else "bold green"
    console.print(Text.assemble(("verdict: ", "bold"), (res.verdict.upper(), style), f" ({summary})"))


def render_tree(entries: Sequence[dict[str, Any]], console: Console) -> None:
    """The one summary table of ``pehp check-tree``."""
    t = Table(title="hot-patch check", title_justify="left")
    for col, just in (("image", "left"), ("machine", "left"), ("verdict", "left"), ("errors", "right"),
                      ("warnings", "right"), ("notes", "right"), ("waived", "right"), ("first error", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for e in entries:
        if e["status"] in ("error", "unpaired"):
            t.add_row(Text(e["image"]), "", Text(e["status"], style="bold red" if e["status"] == "error" else "dim"),
                      "", "", "", "", Text(e.get("message", ""), style="dim"))
            continue
        doc = e["check"]
        s = doc["summary"]
        first = next((f for f in doc["findings"] if f["severity"] == ERROR), None)
        t.add_row(
            Text(e["image"]), doc["machine"],
            Text(doc["verdict"], style="bold red" if doc["verdict"] == "rejected" else "green"),
            str(s["errors"]), str(s["warnings"]), str(s["notes"]), str(s["waived"]),
            Text(f"{first['rule']} {first['message']}" if first else ""),
        )
    console.print(t)
    counts = tree_to_json(entries)["summary"]
    console.print(", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no images")
