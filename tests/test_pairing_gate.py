"""The gate on generated pairs without the base PDB: can a wrong structural pair hide a change?

tools/pairgate.py builds tools/pairgen.py's adversarial pairs, and a second intermediate
with one changed function left out of the functions file, and checks each with both PDBs
(the reference), with the base DLL alone, and with both DLLs alone.  In the seeds below
a caller was switched from a removed leaf to a look-alike that exists in both builds, the
pairing without names joined the look-alike with the removed leaf, and the caller, left
out of the functions file, compared equal: HP501 did not name it.  HP706 must (see
docs/DIFFER.md, "The gate on generated pairs without the base PDB")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import have_toolchain, scenario_dirs
from test_check_support import sample_check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import pairgate  # noqa: E402
import pairgen  # noqa: E402


def toolchain(test):
    """Both marks of the generated-pair tests."""
    return pytest.mark.toolchain(
        pytest.mark.skipif(not have_toolchain(), reason="needs clang-cl-22 / lld-link-22")(test))

# seed: the omitted caller, the look-alike it now calls, the removed leaf it called
HIDDEN = {99: ("disp1", "leaf1", "leaf7"), 198: ("call0", "leaf2", "leaf5"), 292: ("fam1_5", "leaf0", "leaf2")}


@pytest.mark.parametrize("seed", sorted(HIDDEN))
@toolchain
def test_a_caller_hidden_by_a_wrong_pair_is_reported(seed, tmp_path):
    caller, alike, removed = HIDDEN[seed]
    outs = pairgate.run_seed(seed, tmp_path)
    omit = next(o for o in outs if o.variant == "omit")
    assert omit.omitted == caller
    a, b, c = (omit.runs[x] for x in pairgate.CONFIGS)
    rva = next(r for r, n in a.names.items() if n == caller)
    # with both PDBs the caller is changed (it calls another function) and not listed
    assert a.hp501.get(rva) == caller
    # without the base PDB its change is hidden from HP501, but HP706 names it (the
    # intermediate alone too, by address)
    for r in (b, c):
        assert rva not in r.hp501
        assert "HP706" in r.named_by.get(rva, set())
    # HP706 never fires when every pair is made by name
    assert all("HP706" not in o.runs["a"].errors for o in outs)
    assert [o.failures for o in outs] == [[], []]


@toolchain
def test_hp706_names_the_wrong_pair_the_base_pdb_disproves(tmp_path):
    """Seed 99: the pair HP706 points at joins the look-alike with the removed leaf, which
    the base PDB (not given to the check) names; given the PDB, HP501 names the caller."""
    from pehotpatch.api import check_pair

    caller, alike, removed = HIDDEN[99]
    pairgate.run_seed(99, tmp_path)
    d = tmp_path / "seed99"
    inter, ff = d / "o" / "intermediate.dll", d / "o" / "hotpatch_functions.txt"
    res = check_pair(d / "base_alone" / "base.dll", inter, functions_file=ff)
    f = next(f for f in res.findings if f.rule == "HP706" and f.symbol == caller)
    assert f.severity == "error"
    through = {t["function"]: t for t in f.evidence["through"]}
    assert through[alike]["pairing"] in ("call-graph", "call-site", "order")
    base_names = pairgen.procedures(d / "b" / "base.pdb")
    assert base_names[int(through[alike]["base_rva"], 16)].endswith(f":{removed}")
    with_pdb = check_pair(d / "b" / "base.dll", inter, pdb_base=d / "b" / "base.pdb", functions_file=ff)
    assert caller in {x.symbol for x in with_pdb.findings if x.rule == "HP501"}
    assert not [x for x in with_pdb.findings if x.rule == "HP706"]


def test_hp706_never_fires_when_the_pairs_are_made_by_name():
    """Every committed sample is checked with both PDBs: every pair it compares is made by
    name, so no unlisted function's "unchanged" rests on a structural pair."""
    for d in scenario_dirs():
        res = sample_check(d.parent.name, d.name)
        assert not [f for f in res.all_findings() if f.rule == "HP706"], d


@toolchain
def test_a_pair_the_call_graph_corroborates_both_ways_names_no_caller(tmp_path):
    """Seed 27: the intermediate renames mid4 to mid4_r, and api0, left out of the
    functions file, calls it.  Without the base PDB the pairing joins mid4_r with mid4 by
    the call graph, rightly: every function that refers to mid4_r is the counterpart of one
    that refers to mid4, and the other way round.  Such a pair cannot hide a switch to a
    look-alike (whose other callers would refer to its own base copy), so HP706 does not
    name api0 (the whole msvc-runtime and numpy corpus went from 1,449 HP706 findings to 32
    with this, docs/REALWORLD.md)."""
    outs = pairgate.run_seed(27, tmp_path)
    omit = next(o for o in outs if o.variant == "omit")
    a, b, _ = (omit.runs[x] for x in pairgate.CONFIGS)
    rva = next(r for r, n in a.names.items() if n == "api0")
    assert a.hp501.get(rva) == "api0"  # with names: it calls a function of another name
    assert rva not in b.hp501 and "HP706" not in b.named_by.get(rva, set())
    assert [o.failures for o in outs] == [[], []]
