"""`pehp emit-final`: check, plan, and write the final image (the intermediate with a
hot-patch table).  Exit 0 written, 1 rejected (nothing written), 2 bad input."""

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
    JsonFlag,
    Objects,
    Overwrite,
    PdbBase,
    PdbNew,
    Waivers,
    console,
    emit_document,
)
from pehotpatch.cli.plan import Sequence

NAME = "emit-final"


def command(
    base: BaseImage,
    intermediate: IntermediateImage,
    output: Annotated[Path, typer.Option("--output", "-o", help="The final image to write.")],
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    waivers: Waivers = None,
    allow_new_imports: AllowImports = False,
    sequence: Sequence = 1,
    force: Annotated[bool, typer.Option("--force", help="Write it even when the check rejects the pair (recorded).")] = False,
    keep_signature: Annotated[bool, typer.Option("--keep-signature", help="Refuse a signed intermediate instead of removing its signature.")] = False,
    previous: Annotated[Path | None, typer.Option("--previous", help="The previous final image for this base: checks the sequence and reports what reverts.")] = None,
    json_out: JsonFlag = False,
    overwrite: Overwrite = False,
    jobs: Jobs = None,
) -> None:
    """Write the final image: a copy of the intermediate carrying the hot-patch table."""
    from pehotpatch.api import emit_final
    from pehotpatch.errors import Rejected
    from pehotpatch.render.final import render_emit

    try:
        res = emit_final(base, intermediate, output, pdb_base=pdb_base, pdb=pdb, objects=objects,
                         functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch,
                         waivers=waivers, allow_new_imports=allow_new_imports, sequence=sequence,
                         force=force, keep_signature=keep_signature, previous=previous,
                         overwrite=overwrite, jobs=jobs)
    except Rejected as exc:
        _explain(exc.detail, json_out)
        raise
    if json_out:
        doc = res.emitted.to_json()
        doc["plan"] = res.plan.to_json()
        emit_document(doc, None, overwrite=False, inputs=[])
    else:
        render_emit(res.emitted, console())


def _explain(detail: object, json_out: bool) -> None:
    """Why nothing was written: the check's findings, or the plan's refusals (on stdout)."""
    from pehotpatch.check import CheckResult
    from pehotpatch.plan.model import PatchPlan

    if isinstance(detail, CheckResult):
        if json_out:
            from pehotpatch.render.check import check_to_json

            emit_document(check_to_json(detail), None, overwrite=False, inputs=[])
        else:
            from pehotpatch.render.check import render_check

            render_check(detail, console())
    elif isinstance(detail, PatchPlan):
        if json_out:
            emit_document(detail.to_json(), None, overwrite=False, inputs=[])
        else:
            from pehotpatch.render.final import render_plan

            render_plan(detail, console())
    sys.stdout.flush()
