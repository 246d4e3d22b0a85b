"""What every `pehp` command shares: the console, option declarations, output handling."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.load import LoadedImage


def console() -> Console:
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)


def emit_document(doc: Any, output: Path | None, *, overwrite: bool, inputs: list[Path],
                  kind: str = "json") -> None:
    """Print a JSON (``kind="json"``) or SARIF (``"sarif"``) document, or write it to
    ``output`` atomically, renamed into place only once it re-parses."""
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from pehotpatch.output import validate_json, validate_sarif, write_atomic

    write_atomic(output, text.encode(), overwrite=overwrite, inputs=inputs,
                 validate=validate_sarif if kind == "sarif" else validate_json)


def emit_text(render: Callable[[Console], None], output: Path | None, overwrite: bool,
              inputs: list[Path]) -> None:
    """Render text to the terminal, or to ``output`` atomically (plain, 120 columns)."""
    if output is None:
        render(console())
        return
    from pehotpatch.output import validate_text, write_atomic

    buf = io.StringIO()
    render(Console(file=buf, width=120, color_system=None, highlight=False, soft_wrap=False))
    write_atomic(output, buf.getvalue().encode("utf-8"), overwrite=overwrite, inputs=inputs,
                 validate=validate_text)


def preflight_output(output: Path | None, overwrite: bool, inputs: list[Path | None]) -> None:
    """Refuse a bad ``--output`` before any work (exists, is an input, no directory)."""
    if output is not None:
        from pehotpatch.output import check_destination

        check_destination(output, overwrite=overwrite, inputs=[p for p in inputs if p is not None])


def used_inputs(*loaded: LoadedImage, extra: tuple[Path | None, ...] = ()) -> list[Path]:
    """Every file the loaded images were read from (PDBs found next to them included)."""
    out: list[Path] = [p for p in extra if p is not None]
    for li in loaded:
        out.append(Path(li.path))
        if li.pdb_path:
            out.append(Path(li.pdb_path))
        out.extend(Path(o.path) for o in li.objects if getattr(o, "path", None))
    return out


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


BaseImage = Annotated[Path, typer.Argument(help="The deployed (base) image.")]
IntermediateImage = Annotated[Path, typer.Argument(help="The rebuilt image with the fix.")]
PdbBase = Annotated[Path | None, typer.Option("--pdb-base", help="PDB of the base image.")]
PdbNew = Annotated[Path | None, typer.Option("--pdb", help="PDB of the intermediate image.")]
Objects = Annotated[Path | None, typer.Option("--objects", help="Directory of the intermediate's .obj files.")]
FunctionsFile = Annotated[
    Path | None, typer.Option("--functions-file", help="The file given to clang's -fms-secure-hotpatch-functions-file.")
]
IgnoreMismatch = Annotated[
    bool, typer.Option("--ignore-pdb-mismatch", help="Use a PDB whose GUID/age do not match the image.")
]
Jobs = Annotated[int | None, typer.Option("--jobs", "-j", help="Worker processes (default: 2).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to a file.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
Format = Annotated[OutputFormat, typer.Option("--format", "-f", help="text, json, or sarif (SARIF 2.1.0).")]
Waivers = Annotated[Path | None, typer.Option("--waivers", help="TOML file of accepted findings.")]
AllowImports = Annotated[
    bool, typer.Option("--allow-new-imports", help="New function imports are notes, not errors (HP212).")
]
