"""What a review report shows, gathered from a diff, its check and its patch plan.

Plain data (no HTML): the verdict and findings, side-by-side normalised listings of every
changed function (the normalisation `pehp diff -v` uses: base targets named by their
intermediate counterparts), the patch plan, the image-level changes, how the functions
were paired, and the inputs with their SHA-256.  Everything is ordered, nothing depends
on the clock: the same inputs give the same model.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pehotpatch.diff import CHANGED, THROUGH_DATA
from pehotpatch.listing import first_difference, listing, mapped_listing
from pehotpatch.rules import Finding, get_rule
from pehotpatch.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.check import CheckResult
    from pehotpatch.diff import DiffResult, FunctionDiff
    from pehotpatch.image.pe import PEImage
    from pehotpatch.plan.model import PatchPlan

#: Listings longer than this (rows) are cut, and at most this many functions get one:
#: a report stays a file a browser opens.
MAX_ROWS = 1500
MAX_LISTINGS = 150

EQUAL, CHANGE, DELETE, INSERT = "equal", "change", "delete", "insert"


@dataclass(frozen=True)
class Row:
    kind: str  # equal, change, delete (base only), insert (intermediate only)
    left: str | None
    right: str | None


@dataclass
class FunctionView:
    name: str
    base_name: str
    status: str
    reason: str
    pairing: str
    base_rva: int
    new_rva: int
    patched: bool
    first_difference: tuple[str, str] | None
    data: list[str]
    rows: list[Row] = field(default_factory=list)
    truncated: int = 0  # rows left out
    listed: bool = True  # False: beyond MAX_LISTINGS, no listing

    @property
    def anchor(self) -> str:
        return "fn-" + "".join(c if c.isalnum() or c in "_-" else "_" for c in self.name)


@dataclass(frozen=True)
class InputFile:
    role: str
    path: str
    size: int
    sha256: str


@dataclass
class ReportModel:
    title: str
    tool_version: str
    machine: str
    verdict: str
    exit_code: int
    counts: dict[str, int]
    findings: list[Finding]  # unwaived, then waived
    rules: dict[str, str]  # rule ID -> page (Markdown), for every rule a finding names
    functions: list[FunctionView]
    plan: PatchPlan | None
    plan_error: str | None
    image_changes: list[tuple[str, list[str]]]  # (what, items)
    load_config: list[tuple[str, str, str]]  # (field, base, intermediate)
    pairing: dict[str, int]
    summary: dict[str, int]
    hotpatch_set: dict[str, list[str]]
    inputs: list[InputFile]
    notes: list[str]

    @property
    def rejected(self) -> bool:
        return self.verdict == "rejected"


def side_by_side(a: list[str], b: list[str]) -> list[Row]:
    """Rows of two listings aligned by their longest common runs; replaced runs paired line by line."""
    rows: list[Row] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [Row(EQUAL, a[i], b[j]) for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
        elif op == "delete":
            rows += [Row(DELETE, a[i], None) for i in range(i1, i2)]
        elif op == "insert":
            rows += [Row(INSERT, None, b[j]) for j in range(j1, j2)]
        else:
            n = max(i2 - i1, j2 - j1)
            for k in range(n):
                left = a[i1 + k] if i1 + k < i2 else None
                right = b[j1 + k] if j1 + k < j2 else None
                kind = CHANGE if left is not None and right is not None else (DELETE if right is None else INSERT)
                rows.append(Row(kind, left, right))
    return rows


def function_views(diff: DiffResult, patched: set[str]) -> list[FunctionView]:
    """Every changed function (changed code or changed data it reads), by name."""
    out: list[FunctionView] = []
    changed = sorted((fd for fd in diff.functions if fd.status in (CHANGED, THROUGH_DATA)),
                     key=lambda fd: (fd.new.name, fd.new.rva))
    for n, fd in enumerate(changed):
        v = FunctionView(fd.new.name, fd.base.name, fd.status, fd.reason, fd.method, fd.base.rva, fd.new.rva,
                         fd.new.name in patched, first_difference(diff, fd), list(fd.data))
        if n < MAX_LISTINGS:
            rows = _rows(diff, fd)
            v.rows, v.truncated = rows[:MAX_ROWS], max(0, len(rows) - MAX_ROWS)
        else:
            v.listed = False
        out.append(v)
    return out


def _rows(diff: DiffResult, fd: FunctionDiff) -> list[Row]:
    a = mapped_listing(diff.base.index, diff.new.index, diff.correlation, fd.base)
    b = listing(diff.new.index, fd.new)
    return side_by_side(a, b)


def image_changes(diff: DiffResult) -> list[tuple[str, list[str]]]:
    img = diff.image
    out: list[tuple[str, list[str]]] = []

    def add(what: str, items: list[str]) -> None:
        if items:
            out.append((what, items))

    if img.machine:
        add("machine", [f"{img.machine.base} -> {img.machine.new}"])
    if img.kind:
        add("image kind", [f"{img.kind.base} -> {img.kind.new}"])
    if img.entry_point:
        add("entry point", [f"{img.entry_point.base} -> {img.entry_point.new}"])
    if img.tls_callbacks:
        add("TLS callbacks", [f"{', '.join(img.tls_callbacks.base) or 'none'} -> "
                              f"{', '.join(img.tls_callbacks.new) or 'none'}"])
    add("exports added", sorted(img.exports_added))
    add("exports removed", sorted(img.exports_removed))
    add("exports repointed", [f"{c.name}: {c.base} -> {c.new}" for c in sorted(img.exports_repointed)])
    add("import DLLs added", sorted(img.import_dlls_added))
    add("import DLLs renamed", [f"{c.base} -> {c.new}" for c in sorted(img.import_dlls_renamed)])
    add("imports added", sorted(img.imports_added))
    add("imports removed", sorted(img.imports_removed))
    add("sections added", sorted(img.sections_added))
    add("sections removed", sorted(img.sections_removed))
    add("section permissions changed", [f"{c.name}: {c.base} -> {c.new}" for c in sorted(img.section_perms_changed)])
    if img.resources_changed:
        add("resources", ["changed"])
    return out


def load_config_rows(diff: DiffResult) -> list[tuple[str, str, str]]:
    def facts(pe: PEImage) -> dict[str, str]:
        lc = pe.load_config
        if lc is None:
            return {"load configuration": "none"}
        return {
            "load configuration": f"{lc.size:#x} bytes at {lc.rva:#x}",
            "HotPatchTableOffset field": "present" if lc.covers_hotpatch_field else "not covered by Size",
            "HotPatchTableOffset": "-" if lc.hotpatch_table_offset is None else f"{lc.hotpatch_table_offset:#x}",
            "GuardFlags": "-" if lc.guard_flags is None else f"{lc.guard_flags:#x}",
            "CFG functions": str(len(lc.cfg_functions)),
        }

    b, n = facts(diff.base.pe), facts(diff.new.pe)
    keys = list(dict.fromkeys([*b, *n]))
    return [(k, b.get(k, "-"), n.get(k, "-")) for k in keys]


def _hash(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def input_files(diff: DiffResult, extra: list[tuple[str, Path | None]]) -> list[InputFile]:
    """The images, their PDBs, the objects and the other files given, each with its SHA-256."""
    given: list[tuple[str, Path]] = [("base image", Path(diff.base.path)), ("intermediate image", Path(diff.new.path))]
    if diff.base.pdb_path:
        given.append(("base PDB", Path(diff.base.pdb_path)))
    if diff.new.pdb_path:
        given.append(("intermediate PDB", Path(diff.new.pdb_path)))
    for role, p in extra:
        if p is None:
            continue
        if p.is_dir():
            given += [(role, f) for f in sorted(p.iterdir()) if f.is_file()]
        else:
            given.append((role, p))
    out: list[InputFile] = []
    seen: set[str] = set()
    for role, p in given:
        if str(p) in seen or not p.is_file():
            continue
        seen.add(str(p))
        size, digest = _hash(p)
        out.append(InputFile(role, str(p), size, digest))
    return out


def build_model(diff: DiffResult, check: CheckResult, plan: PatchPlan | None, *, plan_error: str | None = None,
                extra_inputs: list[tuple[str, Path | None]] | None = None) -> ReportModel:
    from pehotpatch.report.pages import rule_page

    findings = check.all_findings()
    ids = sorted({f.rule for f in findings})
    pages = {}
    for rid in ids:
        r = get_rule(rid)
        if r is not None:
            pages[rid] = rule_page(r)
    patched = set(check.patched)
    corr = diff.correlation
    summary = {
        "paired functions": len(corr.functions),
        "unchanged": diff.unchanged,
        "changed": sum(1 for f in diff.functions if f.status == CHANGED),
        "changed through data": sum(1 for f in diff.functions if f.status == THROUGH_DATA),
        "other differences (prologue, padding)": sum(1 for f in diff.functions
                                                     if f.status not in (CHANGED, THROUGH_DATA)),
        "added functions": len(diff.added_functions),
        "removed functions": len(diff.removed_functions),
        "changed globals": len(diff.globals_changed),
        "added globals": len(diff.added_globals),
        "removed globals": len(diff.removed_globals),
    }
    return ReportModel(
        title=f"{check.base} \u2192 {check.intermediate}",
        tool_version=__version__,
        machine=check.machine,
        verdict=check.verdict,
        exit_code=check.exit_code,
        counts={"errors": check.errors, "warnings": check.warnings, "notes": check.notes_count,
                "waived": len(check.waived)},
        findings=findings,
        rules=pages,
        functions=function_views(diff, patched),
        plan=plan,
        plan_error=plan_error,
        image_changes=image_changes(diff),
        load_config=load_config_rows(diff),
        pairing=corr.methods(),
        summary=summary,
        hotpatch_set={k: sorted(v) for k, v in sorted(check.hotpatch_set.items())},
        inputs=input_files(diff, extra_inputs or []),
        notes=list(check.notes),
    )
