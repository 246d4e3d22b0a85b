"""`pehp info`: what pehp reads from one image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    FunctionsFile,
    IgnoreMismatch,
    JsonFlag,
    Overwrite,
    console,
    emit_document,
    preflight_output,
    used_inputs,
)

NAME = "info"


def command(
    image: Annotated[Path, typer.Argument(help="PE image (DLL or EXE).")],
    pdb: Annotated[Path | None, typer.Option("--pdb", help="The image's PDB (default: found next to it).")] = None,
    objects: Annotated[Path | None, typer.Option("--objects", help="Directory of the image's .obj files.")] = None,
    functions_file: FunctionsFile = None,
    symbols: Annotated[bool, typer.Option("--symbols", help="Also list functions, globals and the hot-patch set.")] = False,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    json_out: JsonFlag = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSON to a file.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Show what pehp reads from one image: headers, sections, exports, imports, load config;
    with --pdb/--objects/--functions-file (or --symbols), its functions, globals and hot-patch set."""
    from pehotpatch.render.info import image_info, render_info, render_symbols, symbols_info

    want_symbols = symbols or pdb is not None or objects is not None or functions_file is not None
    given = [image, pdb, objects, functions_file]
    preflight_output(output, overwrite, given)
    if want_symbols:
        from pehotpatch.api import load_image

        li = load_image(image, pdb=pdb, objects=objects, functions_file=functions_file,
                        ignore_pdb_mismatch=ignore_pdb_mismatch)
        img = li.pe
    else:
        from pehotpatch.image.pe_reader import load_pe

        img = load_pe(image)
    if json_out or output is not None:
        doc = image_info(img)
        if want_symbols:
            doc["symbols"] = symbols_info(li)
        inputs = used_inputs(li, extra=tuple(given)) if want_symbols else [image]
        emit_document(doc, output, overwrite=overwrite, inputs=inputs)
    else:
        c = console()
        render_info(img, c)
        if want_symbols:
            render_symbols(li, c)
