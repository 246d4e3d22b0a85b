"""The `pehp` command: a thin shell over the library API.

Every command funnels failures through :func:`main`: a :class:`PehpError` becomes one
line on stderr naming the file and the problem, and exit code 2; any other exception
is reported the same way (it is a bug in pehp) unless ``--debug`` asks for the
traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pehotpatch import __version__
from pehotpatch.errors import EXIT_ERROR, PehpError

app = typer.Typer(
    name="pehp",
    help="Secure hot-patch generator for Windows PE images.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pehp {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)


def emit_document(doc: Any, output: Path | None, *, overwrite: bool, inputs: list[Path]) -> None:
    """Print a JSON/SARIF document, or write it atomically to ``output``."""
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from pehotpatch.output import write_atomic

    write_atomic(output, text.encode(), overwrite=overwrite, inputs=inputs)


@app.command()
def info(
    image: Annotated[Path, typer.Argument(help="PE image (DLL or EXE).")],
    pdb: Annotated[Path | None, typer.Option("--pdb", help="The image's PDB (default: found next to it).")] = None,
    objects: Annotated[Path | None, typer.Option("--objects", help="Directory of the image's .obj files.")] = None,
    functions_file: Annotated[
        Path | None, typer.Option("--functions-file", help="The file given to clang's -fms-secure-hotpatch-functions-file.")
    ] = None,
    symbols: Annotated[bool, typer.Option("--symbols", help="Also list functions, globals and the hot-patch set.")] = False,
    ignore_pdb_mismatch: Annotated[
        bool, typer.Option("--ignore-pdb-mismatch", help="Use a PDB whose GUID/age do not match the image.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSON to a file.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Show what pehp reads from one image: headers, sections, exports, imports, load config;
    with --pdb/--objects/--functions-file (or --symbols), its functions, globals and hot-patch set."""
    from pehotpatch.render.info import image_info, render_info, render_symbols, symbols_info

    want_symbols = symbols or pdb is not None or objects is not None or functions_file is not None
    if want_symbols:
        from pehotpatch.image.loader import load_image

        li = load_image(image, pdb=pdb, objects=objects, functions_file=functions_file,
                        ignore_pdb_mismatch=ignore_pdb_mismatch)
        img = li.pe
    else:
        from pehotpatch.image.pe import load_pe

        img = load_pe(image)
    if json_out or output is not None:
        doc = image_info(img)
        if want_symbols:
            doc["symbols"] = symbols_info(li)
        emit_document(doc, output, overwrite=overwrite,
                      inputs=[p for p in (image, pdb, functions_file) if p is not None])
    else:
        console = _console()
        render_info(img, console)
        if want_symbols:
            render_symbols(li, console)


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


def load_pair(base: Path, intermediate: Path, pdb_base: Path | None, pdb: Path | None,
              objects: Path | None, functions_file: Path | None, ignore_pdb_mismatch: bool):
    from pehotpatch.image.loader import load_image

    b = load_image(base, pdb=pdb_base, ignore_pdb_mismatch=ignore_pdb_mismatch)
    n = load_image(intermediate, pdb=pdb, objects=objects, functions_file=functions_file,
                   ignore_pdb_mismatch=ignore_pdb_mismatch)
    return b, n


@app.command()
def diff(
    base: Annotated[Path, typer.Argument(help="The deployed (base) image.")],
    intermediate: Annotated[Path, typer.Argument(help="The rebuilt image with the fix.")],
    pdb_base: PdbBase = None,
    pdb: PdbNew = None,
    objects: Objects = None,
    functions_file: FunctionsFile = None,
    ignore_pdb_mismatch: IgnoreMismatch = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (docs/diff-schema.md).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Unified normalised listings.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSON to a file.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    jobs: Jobs = None,
) -> None:
    """Show what really changed between two builds, function by function (exit 0)."""
    from pehotpatch.diff import diff_images
    from pehotpatch.render.diff import diff_to_json, render_diff

    b, n = load_pair(base, intermediate, pdb_base, pdb, objects, functions_file, ignore_pdb_mismatch)
    res = diff_images(b, n, jobs=jobs)
    if json_out or output is not None:
        emit_document(diff_to_json(res, verbose=verbose), output, overwrite=overwrite,
                      inputs=[p for p in (base, intermediate, pdb_base, pdb) if p is not None])
    else:
        render_diff(res, _console(), verbose=verbose)


def _register_commands() -> None:
    from pehotpatch import cli_check

    cli_check.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pehp` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="pehp", standalone_mode=True)
    except PehpError as exc:
        if debug:
            raise
        sys.stderr.write(f"pehp: error: {exc}\n")
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("pehp: interrupted\n")
        return 130
    except SystemExit as exc:  # click's own exit (usage errors exit 2)
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        sys.stderr.write(
            f"pehp: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)\n"
        )
        return EXIT_ERROR
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
