"""One input: run a case in-process under a time limit and classify what happened (ok, a
one-line error, or a failure with its signature), shrink a failing case while it keeps its
signature, and replay a recorded case."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pehotpatch.errors import PehpError

from .cases import ROOT, Case, Seeds, materialize
from .contract import check_cli
from .targets import run_case_inprocess

FAILURES = ("crash", "timeout", "memory")
CLI_TIMEOUT = 60.0  # seconds the real CLI may take on one input
STATUSES = ("ok", "error", *FAILURES)


class HarnessTimeout(BaseException):
    """Raised by SIGALRM inside the input that exceeded the time limit (a BaseException,
    so that no ``except Exception`` in the code under test swallows it)."""


@dataclass
class Outcome:
    status: str  # one of STATUSES
    signature: str | None = None
    detail: str = ""
    seconds: float = 0.0


# ---- one input ----------------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: float):
    def fire(signum, frame):
        raise HarnessTimeout(f"input exceeded {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_PROJECT = str(ROOT / "pehotpatch") + os.sep


def signature_of(exc: BaseException) -> str:
    """Exception type and the innermost pehotpatch frame (function only for timeouts,
    which stop wherever the clock ran out)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not (f.filename == __file__ and f.name == "fire")]  # the SIGALRM handler
    ours = [f for f in frames if f.filename.startswith(_PROJECT)] or frames
    where = "?"
    if ours:
        f = ours[-1]
        rel = os.path.relpath(f.filename, ROOT)
        where = f"{rel}:{f.name}" if isinstance(exc, HarnessTimeout) else f"{rel}:{f.lineno}:{f.name}"
    kind = "timeout" if isinstance(exc, HarnessTimeout) else type(exc).__name__
    return f"{kind} at {where}"


def execute(case: Case, seeds: Seeds, workdir: Path, limit: float) -> Outcome:
    """Write ``case`` under ``workdir``, run it in-process, classify the result."""
    root = workdir / "case"
    if root.exists():
        shutil.rmtree(root)
    inp = materialize(case, seeds, root)
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            status = run_case_inprocess(case, inp)
        out = Outcome(status or "ok")
    except PehpError as exc:
        out = Outcome("error", detail=str(exc))
    except HarnessTimeout as exc:
        out = Outcome("timeout", signature_of(exc), "".join(traceback.format_exception(exc)))
    except MemoryError as exc:
        out = Outcome("memory", signature_of(exc), "".join(traceback.format_exception(exc)))
    except Exception as exc:  # noqa: BLE001 - anything else is what we are looking for
        out = Outcome("crash", signature_of(exc), "".join(traceback.format_exception(exc)))
    out.seconds = time.perf_counter() - t0
    shutil.rmtree(root, ignore_errors=True)
    return out


def minimize(case: Case, seeds: Seeds, workdir: Path, limit: float, signature: str,
             budget: int = 120) -> Case:
    """Drop edits (and then options) while the failure keeps its signature."""
    items = [(role, e) for role in sorted(case.edits) for e in case.edits[role]]

    def build(its: list, options: dict[str, Any]) -> Case:
        edits: dict[str, list] = {}
        for role, e in its:
            edits.setdefault(role, []).append(e)
        return Case(case.command, case.seed, dict(options), edits)

    tries = 0

    def same(c: Case) -> bool:
        nonlocal tries
        tries += 1
        return execute(c, seeds, workdir, limit).signature == signature

    chunks = 2
    while len(items) >= 2 and tries < budget:
        size = -(-len(items) // chunks)
        for start in range(0, len(items), size):
            cand = items[:start] + items[start + size :]
            if cand and same(build(cand, case.options)):
                items = cand
                chunks = max(chunks - 1, 2)
                break
        else:
            if chunks >= len(items):
                break
            chunks = min(len(items), chunks * 2)
    options = dict(case.options)
    simpler = {"format": "json", "symbols": False, "verbose": False, "objects": False, "functions_file": False,
               "waivers": False, "explicit_pdb": False, "unpaired": False}
    for key, value in simpler.items():
        if tries >= budget:
            break
        if key in options and options[key] != value:
            cand_opts = dict(options, **{key: value})
            if same(build(items, cand_opts)):
                options = cand_opts
    return build(items, options)


def scratch_dir() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="pehp-fuzz-", dir=base))


# ---- replay -----------------------------------------------------------------------------------


def replay(case: Case, seeds: Seeds, limit: float = 30.0, cli: bool = True) -> tuple[Outcome, list[str]]:
    """Run one recorded case in-process and (optionally) through the CLI."""
    scratch = scratch_dir()
    try:
        out = execute(case, seeds, scratch, limit)
        problems = check_cli(case, seeds, scratch / "cli") if cli else []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out, problems
