"""The gate: run every patchability rule over a diff and decide.

:func:`run_check` takes a :class:`~pehotpatch.diff.DiffResult` and returns a
:class:`CheckResult` holding plain data only (it can cross process boundaries and be
rendered long after the images are gone).  The verdict is ``rejected`` exactly when some
finding of severity ``error`` is not waived.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pehotpatch.diff import DiffResult
from pehotpatch.errors import EXIT_OK, EXIT_REJECTED
from pehotpatch.rules import (
    ERROR,
    NOTE,
    RULES,
    STABLE,
    WARNING,
    Finding,
    all_rules,
    finding,
    run_rules,
)
from pehotpatch.rules.context import Context
from pehotpatch.rules.options import CheckOptions
from pehotpatch.vocab import Verdict
from pehotpatch.waivers import Waiver, validate

PATCHABLE = Verdict.PATCHABLE
REJECTED = Verdict.REJECTED


@dataclass
class CheckResult:
    base: str
    intermediate: str
    machine: str
    verdict: Verdict
    findings: list[Finding]  # not waived (HP001 included)
    waived: list[Finding] = field(default_factory=list)
    unused_waivers: list[Waiver] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    hotpatch_set: dict[str, list[str]] = field(default_factory=dict)  # name -> sources
    options: CheckOptions = field(default_factory=CheckOptions)

    @property
    def rejected(self) -> bool:
        return self.verdict == REJECTED

    @property
    def exit_code(self) -> int:
        return EXIT_REJECTED if self.rejected else EXIT_OK

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def errors(self) -> int:
        return self.count(ERROR)

    @property
    def warnings(self) -> int:
        return self.count(WARNING)

    @property
    def notes_count(self) -> int:
        return self.count(NOTE)

    def all_findings(self) -> list[Finding]:
        """Unwaived then waived, each in the stable order."""
        return [*self.findings, *self.waived]

    def rule_ids(self) -> set[str]:
        return {f.rule for f in self.findings}

def run_check(diff: DiffResult, options: CheckOptions | None = None,
              waivers: Iterable[Waiver] | None = None) -> CheckResult:
    """Apply every rule to ``diff``; waive what ``waivers`` accept; decide."""
    options = options or CheckOptions()
    today = options.today or _dt.date.today()
    ctx = Context(diff, options)
    raw = run_rules(ctx)
    known = {r.id for r in all_rules() if r.status == STABLE}
    retired = {r.id: r.replaced_by for r in all_rules() if r.status != STABLE}
    checked = validate(waivers or (), known, today, retired)
    usable = [w for w in checked if w.problem is None]
    problems = [_invalid(w) for w in checked if w.problem is not None]
    used: set[int] = set()
    kept: list[Finding] = []
    waived: list[Finding] = []
    for f in raw:
        w = next((w for w in usable if w.matches(f.rule, f.symbol)), None)
        if w is None:
            kept.append(f)
        else:
            used.add(w.index)
            waived.append(replace(f, waiver=w))
    kept.extend(problems)
    kept.sort(key=Finding.sort_key)
    waived.sort(key=Finding.sort_key)
    verdict = REJECTED if any(f.severity == ERROR for f in kept) else PATCHABLE
    notes = sorted(set(diff.base.notes + diff.new.notes))
    if not ctx.has_set_source:
        notes.append("no hot-patch set source (functions file, objects, PDB S_HOTPATCHFUNC records): "
                     "only functions that read __ref_ pointers count as marked")
    return CheckResult(
        base=diff.base.path,
        intermediate=diff.new.path,
        machine=diff.new.pe.machine.value,
        verdict=verdict,
        findings=kept,
        waived=waived,
        unused_waivers=[w for w in usable if w.index not in used],
        notes=notes,
        patched=sorted(ctx.patched_names),
        hotpatch_set={n: sorted(s) for n, s in sorted(ctx.hotpatch.names.items())},
        options=options,
    )


def _invalid(w: Waiver) -> Finding:
    sym = w.symbol
    return finding(
        "HP001", f"{w.label}: {w.problem}", symbol=sym, kind="waiver",
        explanation=[f"{w.label} in {w.source or 'the waivers'} cannot be used: {w.problem}",
                     "it is ignored, so the finding it meant to waive still counts"],
        evidence={"waiver": w.to_json()},
    )


def rule_table() -> list[dict[str, Any]]:
    """Every rule's metadata, for documentation and ``--format json``."""
    return [{"id": r.id, "name": r.name, "title": r.title, "severity": r.severity,
             "description": r.description, "doc": r.doc_path, "status": r.status} for r in all_rules()]


__all__ = ["CheckOptions", "CheckResult", "PATCHABLE", "REJECTED", "RULES", "run_check", "rule_table"]
