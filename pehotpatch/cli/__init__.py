"""The `pehp` command: a thin shell over the library API.

Every command funnels failures through :func:`main`: a :class:`PehpError` becomes one
line on stderr naming the file and the problem, and exit code 2; any other exception
is reported the same way (it is a bug in pehp) unless ``--debug`` asks for the
traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
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


def preflight_output(output: Path | None, overwrite: bool, inputs: list[Path | None]) -> None:
    """Refuse a bad ``--output`` before any work (exists, is an input, no directory)."""
    if output is not None:
        from pehotpatch.output import check_destination

        check_destination(output, overwrite=overwrite, inputs=[p for p in inputs if p is not None])


def used_inputs(*loaded: Any, extra: tuple[Path | None, ...] = ()) -> list[Path]:
    """Every file the loaded images were read from (PDBs found next to them included)."""
    out: list[Path] = [p for p in extra if p is not None]
    for li in loaded:
        out.append(Path(li.path))
        if li.pdb_path:
            out.append(Path(li.pdb_path))
        out.extend(Path(o.path) for o in li.objects if getattr(o, "path", None))
    return out


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
    given = [image, pdb, objects, functions_file]
    preflight_output(output, overwrite, given)
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
        inputs = used_inputs(li, extra=tuple(given)) if want_symbols else [image]
        emit_document(doc, output, overwrite=overwrite, inputs=inputs)
    else:
        console = _console()
        render_info(img, console)
        if want_symbols:
            render_symbols(li, console)


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


def load_pair(base: Path, intermediate: Path, pdb_base: Path | None, pdb: Path | None,
              objects: Path | None, functions_file: Path | None, ignore_pdb_mismatch: bool):
    from pehotpatch.image.loader import load_image

    b = load_image(base, pdb=pdb_base, ignore_pdb_mismatch=ignore_pdb_mismatch)
    n = load_image(intermediate, pdb=pdb, objects=objects, functions_file=functions_file,
                   ignore_pdb_mismatch=ignore_pdb_mismatch)
    return b, n


@app.command()
def diff(
    base: BaseImage,
    intermediate: IntermediateImage,
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

    given = (base, intermediate, pdb_base, pdb, objects, functions_file)
    preflight_output(output, overwrite, list(given))
    b, n = load_pair(base, intermediate, pdb_base, pdb, objects, functions_file, ignore_pdb_mismatch)
    res = diff_images(b, n, jobs=jobs)
    if json_out or output is not None:
        emit_document(diff_to_json(res, verbose=verbose), output, overwrite=overwrite,
                      inputs=used_inputs(b, n, extra=given))
    else:
        render_diff(res, _console(), verbose=verbose)


def _register_commands() -> None:
    from pehotpatch import cli_check

    cli_check.register(app)


_register_commands()


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (``finally`` blocks run,
    so a half-written output's temporary file is removed) without typer catching it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_signalled: list[int] = []


def _on_signal(signum: int, _frame: Any) -> None:
    if os.getpid() != _main_pid[0]:
        # A worker process (forked by a pool): leave quietly, the parent reports.
        os._exit(128 + signum)
    first = not _signalled
    _signalled.append(signum)
    if first:
        import multiprocessing

        # A pool whose workers die under it may complain from its manager thread
        # (Python 3.11 sets an exception on futures it had cancelled): the run is over.
        threading.excepthook = _quiet_thread_exception
        for child in multiprocessing.active_children():  # pool workers: do not wait for them
            with contextlib.suppress(OSError):
                os.kill(child.pid or 0, signal.SIGTERM)
        raise Interrupted(signum)


_main_pid = [0]


def _quiet_thread_exception(_args: Any) -> None:
    return None


@contextlib.contextmanager
def _signal_handlers(pending: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while a command runs (a signal
    that was ignored when pehp started, e.g. under ``nohup``, stays ignored).  A signal
    in ``pending`` (received while the CLI was being imported) is raised at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _main_pid[0] = os.getpid()
    _signalled.clear()
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old is signal.SIG_IGN:
            continue
        saved[sig] = old
        signal.signal(sig, _on_signal)
    hook = threading.excepthook
    try:
        if pending:
            _signalled.append(pending[0])
            raise Interrupted(pending[0])
        yield
    finally:
        threading.excepthook = hook
        for sig, old in saved.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None, pending: list[int] | None = None) -> int:
    """Run the `pehp` command line (``argv`` defaults to ``sys.argv[1:]``); returns the
    exit code.  The console script enters through :mod:`pehotpatch._entry`.

    Exit codes: 0 success, 1 rejected (check), 2 bad input or usage, 130 interrupted
    by SIGINT, 143 terminated by SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    try:
        with _signal_handlers(pending or []):
            return _run(args)
    except Interrupted as exc:
        name = signal.Signals(exc.signum).name
        sys.stderr.write(f"pehp: interrupted by {name}\n")
        return exc.exit_code


def _run(args: list[str]) -> int:
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
        if _signalled:  # e.g. a pool broken by the interrupt: report the interrupt
            raise Interrupted(_signalled[0]) from None
        if debug:
            raise
        sys.stderr.write(
            f"pehp: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)\n"
        )
        return EXIT_ERROR
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
