"""A progress bar for long single-pair work (load, normalise, correlate, compare), on stderr
when it is a terminal; nothing otherwise or with ``--quiet``.  The library only calls a
``progress(stage, done, total)`` hook (:data:`pehotpatch.diff.Progress`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

STAGES = ("load", "normalise", "correlate", "compare")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar on the terminal.")]
Hook = Callable[[str, int, int], None]


def _silent(stage: str, done: int, total: int) -> None:
    return None


@contextlib.contextmanager
def stage_progress(quiet: bool = False, console: Console | None = None) -> Iterator[Hook]:
    """A hook drawing one bar over the four stages (transient: gone when the work is done)."""
    err = console if console is not None else Console(stderr=True)
    if quiet or not err.is_terminal:
        yield _silent
        return
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.fields[step]}"),
                  TimeElapsedColumn(), console=err, transient=True) as prog:
        task = prog.add_task("load", total=len(STAGES), step=f"1/{len(STAGES)}")

        def hook(stage: str, done: int, total: int) -> None:
            i = STAGES.index(stage) if stage in STAGES else 0
            prog.update(task, completed=i + (done / total if total else 0.0), description=stage,
                        step=f"{i + 1}/{len(STAGES)}", refresh=True)

        hook("load", 0, 1)
        yield hook
