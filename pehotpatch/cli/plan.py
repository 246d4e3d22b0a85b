"""`pehp plan`: every reference that leaves the patched code, and the record that binds it
(exit 0 applicable, 1 when some reference cannot be expressed)."""

from __future__ import annotations

from typing import Annotated

import typer

from pehotpatch.cli.common import (
    AllowImports,
    BaseImage,
    FunctionsFile,
    IgnoreMismatch,
    IntermediateImage,
    Jobs,
    JsonFlag,
    Objects,
    Output,
    Overwrite,
    PdbBase,
    PdbNew,
    console,
    emit_document,
    preflight_output,
)

NAME = "plan"
Sequence = Annotated[int, typer.Option("--sequence", help="The patch's sequence number for this base (>= 1).")]


def command(
    base: BaseImage,
    intermediate: IntermediateImage,
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    allow_new_imports: AllowImports = False,
    sequence: Sequence = 1,
    json_out: JsonFlag = False,
    output: Output = None,
    overwrite: Overwrite = False,
    jobs: Jobs = None,
) -> None:
    """Plan the hot-patch records: forward and backward redirections, __ref_ bindings, IAT copies."""
    from pehotpatch.api import plan_pair
    from pehotpatch.render.final import render_plan

    given = [base, intermediate, pdb_base, pdb, objects, functions_file]
    preflight_output(output, overwrite, given)
    plan = plan_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch,
                     sequence=sequence, allow_new_imports=allow_new_imports, jobs=jobs)
    if json_out or output is not None:
        emit_document(plan.to_json(), output, overwrite=overwrite, inputs=[p for p in given if p is not None])
    else:
        render_plan(plan, console())
    if not plan.applicable:
        raise typer.Exit(1)
