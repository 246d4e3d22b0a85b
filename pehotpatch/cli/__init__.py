"""The `pehp` command: a thin shell over the library API.

Every command funnels failures through :func:`main`: a :class:`PehpError` becomes one
line on stderr naming the file and the problem, and exit code 2; any other exception
is reported the same way (it is a bug in pehp) unless ``--debug`` asks for the
traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from pehotpatch.errors import EXIT_ERROR, PehpError
from pehotpatch.version import __version__

app = typer.Typer(
    name="pehp",
    help="Secure hot-patch generator for Windows PE images.",
    epilog="Exit codes: 0 ok, 1 rejected or mismatch, 2 bad input. Normalised code and pairings are "
           "cached by content in $PEHP_CACHE_DIR (default $XDG_CACHE_HOME/pehp or ~/.cache/pehp); "
           "PEHP_NO_CACHE=1 turns that off.",
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


# The command table: one module per command, each with NAME and command().  Adding a
# command is adding its module here.
COMMANDS = ("info", "diff", "check", "check_tree", "plan", "emit_final", "inspect", "verify",
            "simulate", "rules", "report")


def _register_commands() -> None:
    import importlib

    for mod_name in COMMANDS:
        mod = importlib.import_module(f"pehotpatch.cli.{mod_name}")
        app.command(mod.NAME)(mod.command)


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
