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
        if was:
            gc.enable()
