"""Running a case in-process: the library calls each `pehp` command makes, in its order.

Each target reads the materialised inputs, computes the command's result and renders
it in the case's format (JSON documents are serialised as the CLI does, text goes
through a rich Console into a string).  A :class:`~pehotpatch.errors.PehpError` is the
documented outcome for bad input and propagates; anything else is a finding.
"""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console

from .cases import Case, Inputs, symbols_wanted


class TreeInternalError(Exception):
    """check-tree reported an image pair as an internal error (its worker caught it)."""


def _console() -> Console:
    return Console(file=io.StringIO(), width=120, color_system=None, highlight=False, soft_wrap=False)


def _document(doc: Any) -> None:
    json.dumps(doc, indent=2, sort_keys=False)


def run_info(case: Case, inp: Inputs) -> None:
    from pehotpatch.render.info import image_info, render_info, render_symbols, symbols_info

    assert inp.image is not None
    o = case.options
    if symbols_wanted(case):
        from pehotpatch.api import load_image

        li = load_image(inp.image, pdb=inp.pdb, objects=inp.objects, functions_file=inp.functions_file,
                        ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")))
        img = li.pe
    else:
        from pehotpatch.image.pe_reader import load_pe

        img = load_pe(inp.image)
    if o["format"] == "json":
        doc = image_info(img)
        if symbols_wanted(case):
            doc["symbols"] = symbols_info(li)
        _document(doc)
    else:
        console = _console()
        render_info(img, console)
        if symbols_wanted(case):
            render_symbols(li, console)


def run_diff(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import diff_loaded, load_pair
    from pehotpatch.render.diff import diff_to_json, render_diff

    assert inp.base is not None and inp.intermediate is not None
    o = case.options
    b, n = load_pair(inp.base, inp.intermediate, pdb_base=inp.pdb_base, pdb=inp.pdb,
                     objects=inp.objects, functions_file=inp.functions_file,
                     ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")))
    res = diff_loaded(b, n, jobs=1)
    verbose = bool(o.get("verbose"))
    if o["format"] == "json":
        _document(diff_to_json(res, verbose=verbose))
    else:
        render_diff(res, _console(), verbose=verbose)


def run_check(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import check_pair
    from pehotpatch.render.check import check_to_json, render_check
    from pehotpatch.render.sarif import sarif_log

    assert inp.base is not None and inp.intermediate is not None
    o = case.options
    res = check_pair(inp.base, inp.intermediate, pdb_base=inp.pdb_base, pdb=inp.pdb,
                     objects=inp.objects, functions_file=inp.functions_file,
                     ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")), waivers=inp.waivers,
                     allow_new_imports=bool(o.get("allow_new_imports")), jobs=1)
    fmt = o["format"]
    if fmt == "json":
        _document(check_to_json(res))
    elif fmt == "sarif":
        _document(sarif_log([res]))
    else:
        render_check(res, _console())


def run_check_tree(case: Case, inp: Inputs) -> str | None:
    from pehotpatch.api import check_pair, check_tree
    from pehotpatch.render.check import render_tree, tree_to_json
    from pehotpatch.render.sarif import sarif_log
    from pehotpatch.tree import sidecars

    assert inp.base is not None and inp.intermediate is not None
    o = case.options
    entries = check_tree(inp.base, inp.intermediate, jobs=1, waivers=inp.waivers,
                       allow_new_imports=bool(o.get("allow_new_imports")),
                       ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")))
    for e in entries:
        msg = e.message
        if e.status == "error" and msg.startswith(("internal error", "worker failed")):
            # Reproduce it outside the tree worker, which turned it into a message.
            b, n = inp.base / e.image, inp.intermediate / e.image
            ff, objs = sidecars(n, 1)
            check_pair(b, n, objects=objs, functions_file=ff, waivers=inp.waivers,
                       ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")),
                       allow_new_imports=bool(o.get("allow_new_imports")), jobs=1)
            raise TreeInternalError(f"{e.image}: {msg}")
    public = [e.to_json() for e in entries]
    fmt = o["format"]
    if fmt == "json":
        _document(tree_to_json(public))
    elif fmt == "sarif":
        results = [e.result for e in entries if e.result is not None]
        errors = [(e.image, e.message) for e in entries if e.status == "error"]
        _document(sarif_log(results, errors))
    else:
        render_tree(public, _console())
    return "error" if any(e.status == "error" for e in entries) else None


def run_simulate(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import simulate
    from pehotpatch.emulate.report import render_simulation
    from pehotpatch.emulate.results import to_json

    assert inp.base is not None and inp.final is not None
    o = case.options
    res = simulate(inp.base, inp.final, o["calls"], patch_after=o["patch_after"], undo=bool(o["undo"]),
                   budget=o["budget"], pdb_base=inp.pdb_base, pdb_final=inp.pdb)
    if o["format"] == "json":
        _document(to_json(res))
    else:
        render_simulation(res, _console())


def run_inspect(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import inspect_image, load_image
    from pehotpatch.errors import PehpError
    from pehotpatch.render.final import inspect_to_json, render_inspect

    assert inp.final is not None
    rd = inspect_image(inp.final)
    ix = None
    if rd.present:
        try:
            ix = load_image(inp.final, pdb=inp.pdb).index
        except PehpError:
            if inp.pdb is not None:
                raise
    if case.options["format"] == "json":
        _document(inspect_to_json(str(inp.final), rd, ix))
    else:
        render_inspect(str(inp.final), rd, _console(), ix)


def run_verify(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import verify_final
    from pehotpatch.render.final import render_verify

    assert inp.final is not None and inp.base is not None
    res = verify_final(inp.final, base=inp.base, pdb=inp.pdb, functions_file=inp.functions_file, jobs=1)
    if case.options["format"] == "json":
        _document(res.to_json())
    else:
        render_verify(res, _console())


def run_emit_final(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import emit_final, inspect_image
    from pehotpatch.errors import Rejected
    from pehotpatch.render.final import render_emit

    assert inp.base is not None and inp.intermediate is not None
    o = case.options
    out = inp.root / "final-out.dll"
    try:
        res = emit_final(inp.base, inp.intermediate, out, pdb_base=inp.pdb_base, pdb=inp.pdb,
                         objects=inp.objects, functions_file=inp.functions_file,
                         ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")),
                         allow_new_imports=bool(o.get("allow_new_imports")), sequence=o["sequence"],
                         force=bool(o.get("force")), jobs=1)
    except Rejected:
        if out.exists():
            raise AssertionError("a final image was written for a rejected pair") from None
        return
    rd = inspect_image(out)
    if not rd.valid:
        raise AssertionError(f"emit-final wrote a table that breaks a rule: {[v.code for v in rd.violations]}")
    if o["format"] == "json":
        _document(res.emitted.to_json())
    else:
        render_emit(res.emitted, _console())


def run_plan(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import plan_pair
    from pehotpatch.plan.model import PatchPlan
    from pehotpatch.render.final import render_plan

    assert inp.base is not None and inp.intermediate is not None
    o = case.options
    plan = plan_pair(inp.base, inp.intermediate, pdb_base=inp.pdb_base, pdb=inp.pdb, objects=inp.objects,
                     functions_file=inp.functions_file, ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")),
                     sequence=o["sequence"], allow_new_imports=bool(o.get("allow_new_imports")), jobs=1)
    doc = plan.to_json()
    if PatchPlan.from_json(json.loads(json.dumps(doc))).to_json() != doc:
        raise AssertionError("the plan's JSON does not read back as the same plan")
    if o["format"] == "json":
        _document(doc)
    else:
        render_plan(plan, _console())


def run_report(case: Case, inp: Inputs) -> None:
    from pehotpatch.api import check_diff, diff_loaded, load_pair, write_report
    from pehotpatch.report.build import validate_html
    from pehotpatch.report.html import render_html
    from pehotpatch.waivers import load_waivers

    assert inp.base is not None and inp.intermediate is not None
    o = case.options
    wv = load_waivers(inp.waivers) if inp.waivers is not None else None
    b, n = load_pair(inp.base, inp.intermediate, pdb_base=inp.pdb_base, pdb=inp.pdb,
                     objects=inp.objects, functions_file=inp.functions_file,
                     ignore_pdb_mismatch=bool(o.get("ignore_pdb_mismatch")))
    d = diff_loaded(b, n, jobs=1)
    chk = check_diff(d, waivers=wv, allow_new_imports=bool(o.get("allow_new_imports")))
    model = write_report(d, chk, None, objects=inp.objects, functions_file=inp.functions_file,
                         waivers=inp.waivers, allow_new_imports=bool(o.get("allow_new_imports")))
    validate_html(render_html(model).encode("utf-8"))


TARGETS = {"info": run_info, "diff": run_diff, "check": run_check, "check-tree": run_check_tree,
           "simulate": run_simulate, "inspect": run_inspect, "verify": run_verify,
           "emit-final": run_emit_final, "report": run_report, "plan": run_plan}


def run_case_inprocess(case: Case, inp: Inputs) -> str | None:
    """Run the case; "error" when check-tree reported an unreadable pair (its exit 2)."""
    return TARGETS[case.command](case, inp)  # type: ignore[operator]


def output_suffix(case: Case) -> str:
    fmt = case.options.get("format", "json")
    if case.command == "emit-final":
        return ".dll"
    if case.command == "report":
        return ".html"
    if case.command in ("inspect", "verify", "plan"):
        return ".json"
    if case.command in ("info", "diff"):
        return ".json"
    return {"json": ".json", "sarif": ".sarif", "text": ".txt"}[fmt]


def is_document(case: Case) -> bool:
    return output_suffix(case) in (".json", ".sarif")

