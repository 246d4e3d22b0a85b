"""`pehp check-tree`: check every image pair of two build trees."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from pehotpatch.cli.common import (
    AllowImports,
    Format,
    IgnoreMismatch,
    Output,
    OutputFormat,
    Overwrite,
    Waivers,
    emit_document,
    emit_text,
    preflight_output,
)
from pehotpatch.errors import UsageError

NAME = "check-tree"


class PairBy(StrEnum):
    auto = "auto"
    path = "path"
    name = "name"


def render_pairings(entries: list[dict[str, Any]], console: Console) -> None:
    """One line per pair not made by the same relative path: which base image it was paired with, and how."""
    how = {"versioned-path": "across versioned folders", "name": "by file name"}
    for e in entries:
        if e.get("pairing") in how:
            console.print(Text(f"{e['image']}: paired {how[e['pairing']]} with base {e['base']}"), soft_wrap=True)


def command(
    base_dir: Annotated[Path, typer.Argument(help="Tree of deployed (base) images.")],
    intermediate_dir: Annotated[Path, typer.Argument(help="Tree of rebuilt images, same relative paths.")],
    fmt: Format = OutputFormat.text,
    output: Output = None,
    overwrite: Overwrite = False,
    waivers: Waivers = None,
    allow_new_imports: AllowImports = False,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Images checked in parallel.")] = 1,
    pair_by: Annotated[PairBy, typer.Option(
        "--pair-by", help="auto: by relative path, then across versioned folders, then by unique file name; "
                          "path or name: only that way.")] = PairBy.auto,
    functions_file: Annotated[Path | None, typer.Option(
        "--functions-file", help="A functions file for every image, or a directory of per-image "
                                 "<stem>.hotpatch_functions.txt (or <stem>.txt).")] = None,
    objects: Annotated[Path | None, typer.Option(
        "--objects", help="A directory of per-image object folders (<stem>.objs/ or <stem>/).")] = None,
) -> None:
    """Check every image pair of two trees (paired by relative path, across versioned folders,
    or by unique file name; PDBs next to the images).

    Exit 1 if any image is rejected, 2 if some pair could not be read."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pehotpatch.api import check_tree
    from pehotpatch.tree import ERROR, tree_exit_code

    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    inputs: list[Path] = [base_dir, intermediate_dir] + [p for p in (waivers, functions_file, objects) if p]
    preflight_output(output, overwrite, list(inputs))
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as prog:
        entries = check_tree(base_dir, intermediate_dir, jobs=jobs, waivers=waivers,
                             allow_new_imports=allow_new_imports, ignore_pdb_mismatch=ignore_pdb_mismatch,
                             progress=prog, pair_by=pair_by.value, functions_file=functions_file, objects=objects)
    for e in entries:
        if e.status == ERROR:
            sys.stderr.write(f"pehp: error: {e.message}\n")
    public = [e.to_json() for e in entries]
    if fmt is OutputFormat.json:
        from pehotpatch.render.check import tree_to_json

        emit_document(tree_to_json(public), output, overwrite=overwrite, inputs=inputs)
    elif fmt is OutputFormat.sarif:
        from pehotpatch.render.sarif import sarif_log

        results = [e.result for e in entries if e.result is not None]
        errors = [(e.image, e.message) for e in entries if e.status == ERROR]
        emit_document(sarif_log(results, errors), output, overwrite=overwrite, inputs=inputs, kind="sarif")
    else:
        from pehotpatch.render.check import render_tree

        def render(c: Console) -> None:
            render_tree(public, c)
            render_pairings(public, c)

        emit_text(render, output, overwrite, inputs)
    code = tree_exit_code(entries)
    if code:
        raise typer.Exit(code)
