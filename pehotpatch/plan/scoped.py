"""The diff a patch plan needs, and no more.

A plan reads the correlation (which pairs every function of both builds, so every
function is still normalised and paired exactly as in the whole diff), the code of the
patched functions and of what they reach, and the status of the functions in the
hot-patch set (a patched function is one of them that changed).  The status of every
other pair, which the whole diff also works out, is not used: :func:`diff_for_plan`
compares only the pairs whose new function is in the hot-patch set.  The plan built from
its result is the one :func:`pehotpatch.api.plan_diff` builds from the whole diff
(``tests/test_verify_fast.py`` checks this on every sample pair).
"""

from __future__ import annotations

from pehotpatch.diff import DiffResult, compare_correlated, correlate_images
from pehotpatch.hotpatch_set import HotpatchSet
from pehotpatch.image.symbols import Function
from pehotpatch.load import LoadedImage
from pehotpatch.perf import paused_gc
from pehotpatch.reach import hotpatch_set_with, in_hotpatch_set, ref_slot_readers_in, spellings


def diff_for_plan(base: LoadedImage, new: LoadedImage, *, jobs: int | None = None) -> tuple[DiffResult, HotpatchSet]:
    """The diff of ``base`` and ``new`` with only the hot-patch set's pairs compared, and
    that set (the intermediate's, with the code's evidence: see
    :func:`pehotpatch.reach.hotpatch_with_evidence`)."""
    with paused_gc():
        c = correlate_images(base, new, jobs=jobs)
        hs = hotpatch_set_with(c.new.hotpatch, ref_slot_readers_in(c.new.index, c.codes[1]))
        machine = c.new.pe.machine
        names = spellings(hs.sorted(), machine)

        def wanted(fn: Function) -> bool:
            return in_hotpatch_set(fn, names, machine)

        return compare_correlated(c, only=wanted), hs
