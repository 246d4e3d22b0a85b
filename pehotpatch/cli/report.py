"""`pehp report`: one self-contained HTML file for reviewing a patch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    AllowImports,
    BaseImage,
    FunctionsFile,
    IgnoreMismatch,
    IntermediateImage,
    Jobs,
    Objects,
    Overwrite,
    PdbBase,
    PdbNew,
    Waivers,
    preflight_output,
)
from pehotpatch.cli.progress import Quiet, stage_progress

NAME = "report"


def command(
    base: BaseImage,
    intermediate: IntermediateImage,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    waivers: Waivers = None,
    allow_new_imports: AllowImports = False,
    overwrite: Overwrite = False,
    jobs: Jobs = None,
    quiet: Quiet = False,
) -> None:
    """Write a review report: verdict and findings, changed functions side by side, the patch
    plan as a graph, image changes, pairing and inputs, in one offline HTML file (exit 0)."""
    from pehotpatch.api import report_pair

    preflight_output(output, overwrite, [base, intermediate, pdb_base, pdb, objects, functions_file, waivers])
    with stage_progress(quiet) as progress:
        m = report_pair(base, intermediate, output, pdb_base=pdb_base, pdb=pdb, objects=objects,
                        functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch, waivers=waivers,
                        allow_new_imports=allow_new_imports, overwrite=overwrite, jobs=jobs, progress=progress)
    if not quiet:
        sys.stdout.write(f"{output}: {m.verdict}, {len(m.findings)} finding(s), "
                         f"{len(m.functions)} changed function(s)\n")
