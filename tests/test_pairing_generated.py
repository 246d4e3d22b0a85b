"""Structural pairing against the PDBs on generated pairs built to mislead it.

tools/pairgen.py writes a base and an intermediate full of look-alike functions, macro
families, switch tables, renames, removals (callers switched to a look-alike),
additions, bodies moved behind wrappers, inlining changes and reordered calls; both are
built with clang-cl-22 / lld-link-22.  ``pehp diff`` pairs the DLLs alone and every pair
is named through the PDBs: none may join two different functions.  The seeds are ones
that paired wrongly before the fixes they guard (see docs/DIFFER.md, "Generated
pairs"), plus one more."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import have_toolchain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import pairgen  # noqa: E402

pytestmark = [pytest.mark.toolchain,
              pytest.mark.skipif(not have_toolchain(), reason="needs clang-cl-22 / lld-link-22")]

# 0: a __ref_ load shifts every reference of a marked caller by one (positional votes);
# 6, 17: a removed callee replaced by a known look-alike in the gap of a caller's
# aligned calls that holds the other unpaired callees (call sites);
# 33: a switch whose removed case now calls another case's look-alike (call graph);
# 22: a function no longer called where it was, next to an added look-alike called
# only by new code (order);
# 39: a caller whose calls were shuffled, aligned on a few of them (call sites);
# 2: a removed function that called known code beside an added leaf (order).
SEEDS = (0, 2, 6, 17, 22, 33, 39)


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_pairs_join_the_same_functions(seed, tmp_path):
    res = pairgen.run_seed(seed, tmp_path)
    assert res.pairs > 20, "too few pairs named through the PDBs to say anything"
    assert res.wrong == []
    # the oracle itself: most functions present in both builds are paired with themselves
    assert res.found >= 0.8 * res.common


def test_a_jump_table_into_the_trap_after_a_function_is_compared_by_offsets(tmp_path):
    """Generated seed 9: ``for (i < (x & 6))`` becomes a switch whose impossible (odd)
    cases jump to the ``int3`` right after the function, which the PDB's size leaves out.
    The table moved with a new ``__ref_`` slot before it and every relative entry changed;
    compared as offsets into the function, nothing did."""
    from pehotpatch.api import diff_pair

    pairgen.run_seed(9, tmp_path)
    d = tmp_path / "seed9"
    res = diff_pair(d / "base.dll", d / "intermediate.dll", functions_file=d / "n" / "hotpatch_functions.txt")
    status = {f.new.name: f.status for f in res.functions}
    assert "leaf2" not in status  # unchanged (the hot-patch set does not list it)
    assert res.base.index.functions_by_name["leaf2"].rva != res.new.index.functions_by_name["leaf2"].rva
    table = {fd.new.name: fd.data for fd in res.functions}
    assert all(".rdata+0x48" not in str(v) for v in table.values())
