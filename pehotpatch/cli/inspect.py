"""`pehp inspect`: any image's hot-patch table, decoded strictly (exit 0; 1 when the table
breaks a loader rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    JsonFlag,
    Output,
    Overwrite,
    console,
    emit_document,
    preflight_output,
)

NAME = "inspect"


def command(
    image: Annotated[Path, typer.Argument(help="Any PE image (a final image carries a table).")],
    pdb: Annotated[Path | None, typer.Option("--pdb", help="The image's PDB, for names (default: found next to it).")] = None,
    json_out: JsonFlag = False,
    output: Output = None,
    overwrite: Overwrite = False,
) -> None:
    """Decode the image's hot-patch table: every field, chunk and record, and each loader rule it breaks."""
    from pehotpatch.api import inspect_image
    from pehotpatch.render.final import inspect_to_json, render_inspect

    preflight_output(output, overwrite, [image, pdb])
    rd = inspect_image(image)
    ix = None
    if rd.present:
        from pehotpatch.api import load_image
        from pehotpatch.errors import PehpError

        try:  # names are a courtesy: a missing or mismatched PDB leaves addresses only
            ix = load_image(image, pdb=pdb).index
        except PehpError:
            if pdb is not None:
                raise
    if json_out or output is not None:
        emit_document(inspect_to_json(str(image), rd, ix), output, overwrite=overwrite,
                      inputs=[p for p in (image, pdb) if p is not None])
    else:
        render_inspect(str(image), rd, console(), ix)
    if rd.present and not rd.valid:
        raise typer.Exit(1)
