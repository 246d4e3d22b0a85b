"""`pehp simulate`: apply a final image's table to the running base in an emulator and
run calls before and after (exit 0 no findings, 1 findings, 2 bad input)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer

from pehotpatch.cli.common import (
    BaseImage,
    JsonFlag,
    Output,
    Overwrite,
    PdbBase,
    emit_document,
    emit_text,
    preflight_output,
)
from pehotpatch.errors import InputError, UsageError, read_input_text

NAME = "simulate"

FinalImage = Annotated[Path, typer.Argument(help="The final image (the intermediate with a hot-patch table).")]


def _calls_from(path: Path) -> list[str]:
    text = read_input_text(path, "calls file")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not TOML: {exc}", path) from None
    calls = doc.get("run", {}).get("calls") if isinstance(doc.get("run"), dict) else None
    if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
        raise InputError("no [run] calls = [\"f(1, 2)\", ...] list", path)
    return calls


def command(
    base: BaseImage,
    final: FinalImage,
    call: Annotated[list[str] | None, typer.Option(
        "--call", "-c", help="A call through the base's exports, e.g. 'telemetry_record(1, 5)' (repeat); "
                 "buffer arguments: bytes(N[, SEED]), zeros(N), \"text\".")] = None,
    calls_file: Annotated[Path | None, typer.Option(
        "--calls-file", help="TOML with [run] calls = [...] (a sample's expect.toml).")] = None,
    patch_after: Annotated[int, typer.Option(
        "--patch-after", "-k", help="Apply the patch after this many calls (0: before the first).")] = 0,
    then: Annotated[Path | None, typer.Option(
        "--then", help="A second, cumulative final image (higher sequence number) applied over the first.")] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Revert the patch at the end and compare the base.")] = False,
    budget: Annotated[int, typer.Option("--budget", help="Instructions per call.")] = 2_000_000,
    pdb_base: PdbBase = None,
    pdb: Annotated[Path | None, typer.Option("--pdb", help="PDB of the final image (the intermediate's).")] = None,
    pdb_then: Annotated[Path | None, typer.Option("--pdb-then", help="PDB of the --then image.")] = None,
    json_out: JsonFlag = False,
    output: Output = None,
    overwrite: Overwrite = False,
) -> None:
    """Apply FINAL's hot-patch table to BASE running in an emulator; run the calls before and
    after patching and in the intermediate alone (exit 0 no findings, 1 findings)."""
    from pehotpatch.api import simulate
    from pehotpatch.emulate.report import render_simulation
    from pehotpatch.emulate.results import to_json

    given = [base, final, then, pdb_base, pdb, pdb_then, calls_file]
    preflight_output(output, overwrite, given)
    calls = list(call or [])
    if calls_file is not None:
        calls = _calls_from(calls_file) + calls
    if not calls:
        raise UsageError("give at least one --call (or --calls-file)")
    res = simulate(base, final, calls, patch_after=patch_after, then=then, undo=undo, budget=budget,
                   pdb_base=pdb_base, pdb_final=pdb, pdb_then=pdb_then)
    inputs = [p for p in given if p is not None]
    if json_out:
        emit_document(to_json(res), output, overwrite=overwrite, inputs=inputs)
    else:
        emit_text(lambda c: render_simulation(res, c), output, overwrite, inputs)
    if res.exit_code:
        raise typer.Exit(res.exit_code)
