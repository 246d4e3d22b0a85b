"""pehp as a library: the functions a script calls, one per step of the pipeline.

Every function takes paths (or the results of an earlier step) and keyword-only options,
returns a typed result, and raises :class:`pehotpatch.errors.PehpError` (one line naming the
file and the problem) on bad input.  The `pehp` command line is a thin shell over these.

>>> import pehotpatch as pehp
>>> d = pehp.diff_pair("samples/x64/fix_globals/base.dll",
...                    "samples/x64/fix_globals/intermediate.dll")
>>> [f.new.name for f in d.changed_functions]
['telemetry_record']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.check import CheckResult
    from pehotpatch.diff import DiffResult, Progress
    from pehotpatch.emit.final import EmitResult
    from pehotpatch.emulate.results import SimulationResult
    from pehotpatch.load import LoadedImage
    from pehotpatch.plan.model import PatchPlan
    from pehotpatch.report.model import ReportModel
    from pehotpatch.table.decode import TableReading
    from pehotpatch.tree import TreeEntry
    from pehotpatch.verify import VerifyResult
    from pehotpatch.waivers import Waiver

PathLike = str | os.PathLike[str]


def _p(p: PathLike | None) -> Path | None:
    return None if p is None else Path(p)


def load_image(image: PathLike, *, pdb: PathLike | None = None, objects: PathLike | None = None,
               functions_file: PathLike | None = None,
               ignore_pdb_mismatch: bool = False) -> LoadedImage:
    """One image with its symbols (PDB found next to it unless given), and, for an
    intermediate, its hot-patch set from ``objects`` and ``functions_file``.

    >>> li = load_image("samples/x64/fix_globals/intermediate.dll",
    ...                 functions_file="samples/x64/fix_globals/hotpatch_functions.txt")
    >>> li.pe.machine.value, sorted(li.hotpatch.names)
    ('x64', ['telemetry_record'])
    """
    from pehotpatch.load import load_image as _load

    return _load(Path(image), pdb=_p(pdb), objects=_p(objects), functions_file=_p(functions_file),
                 ignore_pdb_mismatch=ignore_pdb_mismatch)


def load_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
              pdb: PathLike | None = None, objects: PathLike | None = None,
              functions_file: PathLike | None = None,
              ignore_pdb_mismatch: bool = False) -> tuple[LoadedImage, LoadedImage]:
    """The base and the intermediate, loaded (the hot-patch inputs belong to the intermediate).

    >>> b, n = load_pair("samples/x64/fix_globals/base.dll",
    ...                  "samples/x64/fix_globals/intermediate.dll")
    >>> b.pe.machine == n.pe.machine
    True
    """
    b = load_image(base, pdb=pdb_base, ignore_pdb_mismatch=ignore_pdb_mismatch)
    n = load_image(intermediate, pdb=pdb, objects=objects, functions_file=functions_file,
                   ignore_pdb_mismatch=ignore_pdb_mismatch)
    return b, n


def diff_loaded(base: LoadedImage, intermediate: LoadedImage, *, jobs: int | None = None,
                progress: Progress | None = None) -> DiffResult:
    """Correlate and compare two loaded images (see :func:`diff_pair`); ``progress(stage,
    done, total)`` is told of each stage (normalise, correlate, compare)."""
    from pehotpatch.diff import diff_images

    return diff_images(base, intermediate, jobs=jobs, progress=progress)


def diff_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
              pdb: PathLike | None = None, objects: PathLike | None = None,
              functions_file: PathLike | None = None, ignore_pdb_mismatch: bool = False,
              jobs: int | None = None) -> DiffResult:
    """Every function and global of the two builds, paired, and what really changed.

    >>> d = diff_pair("samples/x64/body_fix/base.dll", "samples/x64/body_fix/intermediate.dll")
    >>> [f.new.name for f in d.changed_functions], d.added_functions
    (['telemetry_checksum'], [])
    """
    b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
    return diff_loaded(b, n, jobs=jobs)


def check_diff(diff: DiffResult, *, waivers: PathLike | list[Waiver] | None = None,
               allow_new_imports: bool = False) -> CheckResult:
    """The gate's verdict on a diff: findings with rule IDs, waivers applied."""
    from pehotpatch.check import run_check
    from pehotpatch.rules.options import CheckOptions
    from pehotpatch.waivers import load_waivers

    wv = load_waivers(Path(waivers)) if isinstance(waivers, str | os.PathLike) else waivers
    return run_check(diff, CheckOptions(allow_new_imports=allow_new_imports), wv)


def check_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
               pdb: PathLike | None = None, objects: PathLike | None = None,
               functions_file: PathLike | None = None, ignore_pdb_mismatch: bool = False,
               waivers: PathLike | None = None, allow_new_imports: bool = False,
               jobs: int | None = None) -> CheckResult:
    """Load, diff and check one pair: is the fix hot-patchable onto the base?

    >>> r = check_pair("samples/x64/inline_pulls/base.dll",
    ...                "samples/x64/inline_pulls/intermediate.dll",
    ...                objects="samples/x64/inline_pulls/intermediate.objs",
    ...                functions_file="samples/x64/inline_pulls/hotpatch_functions.txt")
    >>> r.verdict, r.exit_code, "HP501" in r.rule_ids()
    ('rejected', 1, True)
    """
    from pehotpatch.waivers import load_waivers

    wv = load_waivers(Path(waivers)) if waivers is not None else None  # bad waivers fail before loading
    d = diff_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                  functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch, jobs=jobs)
    return check_diff(d, waivers=wv, allow_new_imports=allow_new_imports)


def check_tree(base_dir: PathLike, intermediate_dir: PathLike, *, jobs: int = 1,
               waivers: PathLike | None = None, allow_new_imports: bool = False,
               ignore_pdb_mismatch: bool = False, progress: Any = None, pair_by: str = "auto",
               functions_file: PathLike | None = None, objects: PathLike | None = None) -> list[TreeEntry]:
    """Check every image pair of two build trees (paired by relative path, then, with
    ``pair_by="auto"``, across versioned folders and by unique file name; each pair's PDBs,
    ``<stem>.hotpatch_functions.txt`` and ``<stem>.objs/`` found beside it or in the
    ``functions_file``/``objects`` directories).

    >>> entries = check_tree("samples/x64", "samples/x64")
    >>> sorted({e.status for e in entries})
    ['patchable']
    """
    from pehotpatch.tree import run_tree

    return run_tree(Path(base_dir), Path(intermediate_dir), jobs=jobs, waivers=_p(waivers),
                    allow_new_imports=allow_new_imports, ignore_pdb_mismatch=ignore_pdb_mismatch,
                    progress=progress, pair_by=pair_by, functions_file=_p(functions_file), objects=_p(objects))


@dataclass
class FinalImage:
    """What :func:`emit_final` produced: the check, the plan and the written image."""

    check: CheckResult
    plan: PatchPlan
    emitted: EmitResult


def plan_diff(diff: DiffResult, *, check: CheckResult | None = None, sequence: int = 1,
              allow_new_imports: bool = False) -> PatchPlan:
    """The patch plan of a diff, for the functions the check counts as hot-patched."""
    from pehotpatch.plan.build import build_plan

    if sequence < 1:
        from pehotpatch.errors import UsageError

        raise UsageError(f"--sequence must be at least 1, not {sequence}")
    if check is not None:
        names = sorted(check.hotpatch_set)
    else:
        from pehotpatch.reach import hotpatch_with_evidence

        names = hotpatch_with_evidence(diff).sorted()
    return build_plan(diff, names, sequence=sequence, allow_new_imports=allow_new_imports)


def plan_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
              pdb: PathLike | None = None, objects: PathLike | None = None,
              functions_file: PathLike | None = None, ignore_pdb_mismatch: bool = False,
              sequence: int = 1, allow_new_imports: bool = False, jobs: int | None = None) -> PatchPlan:
    """Every reference that leaves the patched code, and the record that binds it.

    >>> p = plan_pair("samples/x64/fix_globals/base.dll",
    ...               "samples/x64/fix_globals/intermediate.dll",
    ...               functions_file="samples/x64/fix_globals/hotpatch_functions.txt")
    >>> [f.function for f in p.forward], len(p.data), p.applicable
    (['telemetry_record'], 5, True)
    """
    from pehotpatch.plan.build import require_same_machine
    from pehotpatch.plan.scoped import diff_for_plan

    if sequence < 1:
        from pehotpatch.errors import UsageError

        raise UsageError(f"--sequence must be at least 1, not {sequence}")
    b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
    require_same_machine(b, n)  # before the diff, which is the expensive part
    # Only the hot-patch set's pairs are compared: the plan is the one of the whole diff.
    d, _ = diff_for_plan(b, n, jobs=jobs)
    return plan_diff(d, sequence=sequence, allow_new_imports=allow_new_imports)


def emit_final(base: PathLike, intermediate: PathLike, output: PathLike | None, *,
               pdb_base: PathLike | None = None, pdb: PathLike | None = None,
               objects: PathLike | None = None, functions_file: PathLike | None = None,
               ignore_pdb_mismatch: bool = False, waivers: PathLike | None = None,
               allow_new_imports: bool = False, sequence: int = 1, force: bool = False,
               keep_signature: bool = False, previous: PathLike | None = None,
               overwrite: bool = False, jobs: int | None = None) -> FinalImage:
    """Check the pair, plan the patch and write the final image (the intermediate with a
    hot-patch table) to ``output`` (None: build and verify it, write nothing).

    Raises :class:`pehotpatch.errors.Rejected` (nothing written) when the check rejects the
    pair or the plan refuses a reference, unless ``force``.

    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "final.dll")
    >>> s = "samples/x64/fix_globals"
    >>> r = emit_final(f"{s}/base.dll", f"{s}/intermediate.dll", out,
    ...                functions_file=f"{s}/hotpatch_functions.txt")
    >>> r.check.verdict, r.emitted.records["FUNCTION"], inspect_image(out).valid
    ('patchable', 1, True)
    """
    from pehotpatch.diff import describe_target
    from pehotpatch.emit.final import build_final, write_final
    from pehotpatch.emit.image import check_writable
    from pehotpatch.errors import Rejected
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.output import check_destination
    from pehotpatch.plan.build import require_same_machine
    from pehotpatch.waivers import load_waivers

    given = [Path(p) for p in (base, intermediate, pdb_base, pdb, objects, functions_file, waivers, previous)
             if p is not None]
    if output is not None:
        check_destination(output, overwrite=overwrite, inputs=given)
    wv = load_waivers(Path(waivers)) if waivers is not None else None
    b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
    check_writable(n.pe, keep_signature=keep_signature)
    require_same_machine(b, n)  # before the diff, which is the expensive part
    prev = load_pe(Path(previous)) if previous is not None else None
    d = diff_loaded(b, n, jobs=jobs)
    chk = check_diff(d, waivers=wv, allow_new_imports=allow_new_imports)
    if chk.rejected and not force:
        raise Rejected(f"the check rejects this pair ({chk.errors} error(s): "
                       f"{', '.join(sorted(chk.rule_ids()))}); nothing written (--force writes it anyway)",
                       intermediate, detail=chk)
    plan = plan_diff(d, check=chk, sequence=sequence, allow_new_imports=allow_new_imports)
    if not plan.applicable and not force:
        first = plan.refusals[0]
        raise Rejected(f"the plan cannot express {len(plan.refusals)} reference(s), first {first.reference} -> "
                       f"{first.target}: {first.reason}; nothing written", intermediate, detail=plan)
    res = build_final(n.pe, plan, check_verdict=chk.verdict, forced=force and (chk.rejected or not plan.applicable),
                      keep_signature=keep_signature, previous=prev,
                      base_name=lambda rva: describe_target(b.index, rva))
    if output is not None:
        inputs = given + [Path(b.path), Path(n.path)] + [Path(x.pdb_path) for x in (b, n) if x.pdb_path]
        write_final(res, output, overwrite=overwrite, inputs=inputs)
    return FinalImage(chk, plan, res)


def inspect_image(image: PathLike) -> TableReading:
    """Any image's hot-patch table, decoded strictly, with every loader rule it breaks.

    >>> r = inspect_image("samples/x64/fix_globals/intermediate.dll")
    >>> r.present
    False
    """
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.table.decode import read_table

    return read_table(load_pe(Path(image)))


def verify_final(final: PathLike, *, base: PathLike, intermediate: PathLike | None = None,
                 pdb_base: PathLike | None = None, pdb: PathLike | None = None,
                 objects: PathLike | None = None, functions_file: PathLike | None = None,
                 ignore_pdb_mismatch: bool = False, allow_new_imports: bool = False,
                 jobs: int | None = None) -> VerifyResult:
    """Verify a final image against its base: loader rules, base identity, first bytes, and
    exactly the records a fresh plan gives (of the base against ``intermediate`` when given,
    else against the final image itself).

    >>> import tempfile, os
    >>> s = "samples/x64/fix_calls_unchanged"
    >>> out = os.path.join(tempfile.mkdtemp(), "final.dll")
    >>> _ = emit_final(f"{s}/base.dll", f"{s}/intermediate.dll", out,
    ...                functions_file=f"{s}/hotpatch_functions.txt")
    >>> v = verify_final(out, base=f"{s}/base.dll", intermediate=f"{s}/intermediate.dll",
    ...                  functions_file=f"{s}/hotpatch_functions.txt")
    >>> v.ok, v.checked_records
    (True, 3)
    """
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.verify import VerifyFinding, verify_table

    fin = load_pe(Path(final))
    other = intermediate if intermediate is not None else final
    b, n = load_pair(base, other, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
    from pehotpatch.plan.build import require_same_machine
    from pehotpatch.plan.scoped import diff_for_plan

    require_same_machine(b, n)  # before the diff, which is the expensive part
    # The plan needs every function normalised and paired, but only the hot-patch set's
    # pairs compared (the plan is the one of the whole diff: tests/test_verify_fast.py).
    d, _ = diff_for_plan(b, n, jobs=jobs)
    from pehotpatch.table.decode import read_table
    from pehotpatch.table.format import ABSOLUTE

    rd = read_table(fin)
    if intermediate is None and n.pdb_path is None and rd.table is not None and \
            rd.table.records(ABSOLUTE, inverse=True):
        from pehotpatch.errors import UsageError

        raise UsageError("the final image's PDB was not found, and without it its __ref_ slots have no names to "
                         "plan from: give --pdb (the intermediate's PDB) or --intermediate", final)
    seq = rd.table.sequence if rd.table is not None and rd.table.sequence else 1
    plan = plan_diff(d, sequence=seq, allow_new_imports=allow_new_imports)
    res = verify_table(fin, b.pe, d, plan)
    if intermediate is not None:
        from pehotpatch.verify import same_image_but_table

        problem = same_image_but_table(n.pe, fin)
        if problem:
            res.findings.insert(0, VerifyFinding("not-from-intermediate", problem))
    return res


def simulate(base: PathLike, final: PathLike, calls: list[str], *, patch_after: int = 0,
             then: PathLike | None = None, undo: bool = False, budget: int = 2_000_000,
             pdb_base: PathLike | None = None, pdb_final: PathLike | None = None,
             pdb_then: PathLike | None = None) -> SimulationResult:
    """Apply ``final``'s hot-patch table to ``base`` running in an emulator (unicorn), the
    way the Windows loader does, and run ``calls`` through the base's exports before and
    after patching (after ``patch_after`` calls) and in the final image alone; ``then``
    applies a second, cumulative final image over the first, ``undo`` reverts at the end
    (docs/SIMULATE.md).  Findings make ``result.ok`` false (exit code 1).

    >>> import tempfile, os
    >>> s = "samples/x64/fix_globals"
    >>> out = os.path.join(tempfile.mkdtemp(), "final.dll")
    >>> _ = emit_final(f"{s}/base.dll", f"{s}/intermediate.dll", out,
    ...                functions_file=f"{s}/hotpatch_functions.txt")
    >>> r = simulate(f"{s}/base.dll", out, ["telemetry_init()", "telemetry_record(1, 5)",
    ...              "telemetry_count()"], pdb_final=f"{s}/intermediate.pdb", undo=True)
    >>> r.ok, [row.patched.value for row in r.calls], r.undo.identical
    (True, [None, 1, 1], True)
    """
    from pehotpatch.emulate.simulate import simulate as _simulate

    return _simulate(base, final, calls, patch_after=patch_after, then=then, undo=undo,
                     budget=budget, pdb_base=pdb_base, pdb_final=pdb_final, pdb_then=pdb_then)


__all__ = ["load_image", "load_pair", "diff_loaded", "diff_pair", "check_diff", "check_pair", "check_tree",
           "plan_diff", "plan_pair", "emit_final", "inspect_image", "verify_final", "FinalImage",
           "simulate"]


def report_pair(base: PathLike, intermediate: PathLike, output: PathLike | None, *,
                pdb_base: PathLike | None = None, pdb: PathLike | None = None,
                objects: PathLike | None = None, functions_file: PathLike | None = None,
                ignore_pdb_mismatch: bool = False, waivers: PathLike | None = None,
                allow_new_imports: bool = False, overwrite: bool = False, jobs: int | None = None,
                progress: Progress | None = None) -> ReportModel:
    """Check a pair and write its review report (one self-contained HTML file: verdict and
    findings with the rule pages, side-by-side listings of every changed function, the patch
    plan as a graph, image-level changes, pairing, inputs with hashes) to ``output`` (None:
    build it, write nothing).

    >>> import tempfile, os
    >>> s = "samples/x64/fix_globals"
    >>> out = os.path.join(tempfile.mkdtemp(), "report.html")
    >>> m = report_pair(f"{s}/base.dll", f"{s}/intermediate.dll", out,
    ...                 functions_file=f"{s}/hotpatch_functions.txt")
    >>> m.verdict, [f.name for f in m.functions], open(out).read().startswith("<!DOCTYPE html>")
    ('patchable', ['telemetry_record'], True)
    """
    from pehotpatch.output import check_destination
    from pehotpatch.waivers import load_waivers

    given = [Path(p) for p in (base, intermediate, pdb_base, pdb, objects, functions_file, waivers) if p is not None]
    if output is not None:
        check_destination(output, overwrite=overwrite, inputs=given)
    wv = load_waivers(Path(waivers)) if waivers is not None else None
    b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
    d = diff_loaded(b, n, jobs=jobs, progress=progress)
    chk = check_diff(d, waivers=wv, allow_new_imports=allow_new_imports)
    return write_report(d, chk, output, objects=objects, functions_file=functions_file, waivers=waivers,
                        allow_new_imports=allow_new_imports, overwrite=overwrite)


def write_report(diff: DiffResult, check: CheckResult, output: PathLike | None, *,
                 objects: PathLike | None = None, functions_file: PathLike | None = None,
                 waivers: PathLike | None = None, allow_new_imports: bool = False,
                 overwrite: bool = False) -> ReportModel:
    """The review report of a diff and its check (see :func:`report_pair`), written to
    ``output`` unless None; ``objects``, ``functions_file`` and ``waivers`` are listed among
    the inputs with their hashes.

    >>> s = "samples/x64/inline_pulls"
    >>> d = diff_pair(f"{s}/base.dll", f"{s}/intermediate.dll", functions_file=f"{s}/hotpatch_functions.txt")
    >>> m = write_report(d, check_diff(d), None, functions_file=f"{s}/hotpatch_functions.txt")
    >>> m.verdict, [f.rule for f in m.findings], sorted(m.rules)
    ('rejected', ['HP501'], ['HP501'])
    """
    from pehotpatch.report.build import report_model, write_report_file

    model = report_model(diff, check, allow_new_imports=allow_new_imports,
                         inputs=[("objects", _p(objects)), ("functions file", _p(functions_file)),
                                 ("waivers", _p(waivers))])
    if output is not None:
        inputs = [Path(p) for p in (objects, functions_file, waivers) if p is not None]
        inputs += [Path(diff.base.path), Path(diff.new.path)]
        inputs += [Path(x.pdb_path) for x in (diff.base, diff.new) if x.pdb_path]
        write_report_file(model, Path(output), overwrite=overwrite, inputs=inputs)
    return model


__all__ += ["report_pair", "write_report"]
