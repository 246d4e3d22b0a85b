"""`pehp check`: the patchability gate for CI (exit 0 patchable, 1 rejected, 2 bad input)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    AllowImports,
    BaseImage,
    Format,
    FunctionsFile,
    IgnoreMismatch,
    IntermediateImage,
    Jobs,
    Objects,
    Output,
    OutputFormat,
    Overwrite,
    PdbBase,
    PdbNew,
    Waivers,
    emit_document,
    emit_text,
    preflight_output,
    used_inputs,
)
from pehotpatch.cli.progress import Quiet, stage_progress

NAME = "check"


def command(
    base: BaseImage,
    intermediate: IntermediateImage,
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    fmt: Format = OutputFormat.text,
    output: Output = None,
    overwrite: Overwrite = False,
    waivers: Waivers = None,
    allow_new_imports: AllowImports = False,
    jobs: Jobs = None,
    quiet: Quiet = False,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Also write the review report (HTML, as `pehp report`) to this file.")] = None,
) -> None:
    """Decide whether the intermediate can be hot-patched onto the base (exit 0 patchable, 1 rejected)."""
    from pehotpatch.api import check_diff, diff_loaded, load_pair
    from pehotpatch.waivers import load_waivers

    given = (base, intermediate, pdb_base, pdb, objects, functions_file, waivers)
    preflight_output(output, overwrite, list(given))
    preflight_output(report, overwrite, list(given) + ([output] if output else []))
    wv = load_waivers(waivers) if waivers is not None else None
    with stage_progress(quiet) as progress:
        b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                         functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
        d = diff_loaded(b, n, jobs=jobs, progress=progress)
    res = check_diff(d, waivers=wv, allow_new_imports=allow_new_imports)
    inputs = used_inputs(d.base, d.new, extra=given)
    if report is not None:
        from pehotpatch.api import write_report

        write_report(d, res, report, objects=objects, functions_file=functions_file, waivers=waivers,
                     allow_new_imports=allow_new_imports, overwrite=overwrite)
    if fmt is OutputFormat.json:
        from pehotpatch.render.check import check_to_json

        emit_document(check_to_json(res), output, overwrite=overwrite, inputs=inputs)
    elif fmt is OutputFormat.sarif:
        from pehotpatch.render.sarif import sarif_log

        emit_document(sarif_log([res]), output, overwrite=overwrite, inputs=inputs, kind="sarif")
    else:
        from pehotpatch.render.check import render_check

        emit_text(lambda c: render_check(res, c), output, overwrite, inputs)
    if res.exit_code:
        raise typer.Exit(res.exit_code)
