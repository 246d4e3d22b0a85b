"""The `pehp` console script.

Importing the CLI (typer, rich) takes a few tenths of a second.  A SIGINT or SIGTERM in
that time is only remembered here; :func:`pehotpatch.cli.main` reports it as soon as it
runs (one line, exit 130 or 143), as it does for a signal during the command itself.
Once the command has finished, later signals are ignored: its exit code stands.
"""

from __future__ import annotations

import gc
import signal
import sys


def main() -> int:
    pending: list[int] = []

    def remember(signum: int, _frame: object) -> None:
        pending.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, remember)
    # One command is one short process that builds many long-lived, acyclic objects
    # (images, symbol indexes, code maps): the cyclic collector walks them again at each
    # allocation burst.  Collect rarely, never the modules imported so far, nor what the
    # stages build with the collector paused (pehotpatch.perf.paused_gc).
    gc.set_threshold(50_000, 20, 100)
    from pehotpatch.cli import main as cli_main
    from pehotpatch.perf import FREEZE_AFTER_PAUSE

    gc.freeze()
    FREEZE_AFTER_PAUSE[0] = True
    code = cli_main(pending=pending)
    # The command is over and its output complete: a signal now must not turn the exit
    # code into a death by signal while the interpreter shuts down.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
