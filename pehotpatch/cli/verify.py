"""`pehp verify`: a final image against its base (exit 0 ok, 1 mismatch, 2 bad input)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    AllowImports,
    FunctionsFile,
    IgnoreMismatch,
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

NAME = "verify"


def command(
    final: Annotated[Path, typer.Argument(help="The final image (intermediate + hot-patch table).")],
    base: Annotated[Path, typer.Option("--base", help="The base image the table patches.")],
    intermediate: Annotated[Path | None, typer.Option("--intermediate", help="The intermediate the final image was made from.")] = None,
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    allow_new_imports: AllowImports = False,
    json_out: JsonFlag = False,
    output: Output = None,
    overwrite: Overwrite = False,
    jobs: Jobs = None,
) -> None:
    """Check the table against the loader's rules, the base, and a fresh plan: nothing missing, nothing extra."""
    from pehotpatch.api import verify_final
    from pehotpatch.render.final import render_verify

    given = [final, base, intermediate, pdb_base, pdb, objects, functions_file]
    preflight_output(output, overwrite, given)
    res = verify_final(final, base=base, intermediate=intermediate, pdb_base=pdb_base, pdb=pdb,
                       objects=objects, functions_file=functions_file,
                       ignore_pdb_mismatch=ignore_pdb_mismatch, allow_new_imports=allow_new_imports, jobs=jobs)
    if json_out or output is not None:
        emit_document(res.to_json(), output, overwrite=overwrite, inputs=[p for p in given if p is not None])
    else:
        render_verify(res, console())
    if not res.ok:
        raise typer.Exit(1)
