"""`pehp diff`: what really changed between two builds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    BaseImage,
    FunctionsFile,
    IgnoreMismatch,
    IntermediateImage,
    Jobs,
    Objects,
    Overwrite,
    PdbBase,
    PdbNew,
    console,
    emit_document,
    preflight_output,
    used_inputs,
)
from pehotpatch.cli.progress import Quiet, stage_progress

NAME = "diff"


def command(
    base: BaseImage,
    intermediate: IntermediateImage,
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (docs/diff-schema.md).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Unified normalised listings.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSON to a file.")] = None,
    overwrite: Overwrite = False,
    jobs: Jobs = None,
    quiet: Quiet = False,
) -> None:
    """Show what really changed between two builds, function by function (exit 0)."""
    from pehotpatch.api import diff_loaded, load_pair
    from pehotpatch.render.diff import diff_to_json, render_diff

    given = (base, intermediate, pdb_base, pdb, objects, functions_file)
    preflight_output(output, overwrite, list(given))
    with stage_progress(quiet) as progress:
        b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                         functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
        res = diff_loaded(b, n, jobs=jobs, progress=progress)
    if json_out or output is not None:
        emit_document(diff_to_json(res, verbose=verbose), output, overwrite=overwrite,
                      inputs=used_inputs(res.base, res.new, extra=given))
    else:
        render_diff(res, console(), verbose=verbose)
