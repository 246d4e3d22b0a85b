"""Small helpers for speed that do not belong to one pipeline stage."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run a block without the cyclic garbage collector.

    Loading and diffing images build hundreds of thousands of small, long-lived and
    acyclic objects (records, tuples of references); each allocation burst makes the
    collector walk all of them again, which cost 15-20 % of a diff's CPU time on the
    numpy pair.  Reference counting still frees everything that is not in a cycle.  The
    previous state is restored afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if FREEZE_AFTER_PAUSE[0]:
            gc.freeze()
        if was:
            gc.enable()


#: Set by the ``pehp`` process (:mod:`pehotpatch._entry`), which ends when its command
#: does: what a paused block built is then frozen (:func:`gc.freeze`), so the collector
#: never walks it again, instead of walking it all once the collector is back on.  A
#: library caller keeps the default: everything stays collectable.
FREEZE_AFTER_PAUSE = [False]
