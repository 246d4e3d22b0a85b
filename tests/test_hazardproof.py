"""The gate against behaviour on pairs that carry hot-patch hazards (tools/hazardgen.py).

Every hazard of the generator is built on its own (seed 0), and two seeds combine several:
each pair is checked with both PDBs, a final image is written with --force whatever the
verdict, and the patch is applied to the running base in the emulator with every export
called on tools/patchproof.py's argument list.  No "patchable" verdict may misbehave; a
hazard the gate must reject is rejected by the rule that names it (the table in
tools/hazardgen.py, written from the classes of the gate's rules, not from its output) and
the emulator sees the patch misbehave; a hazard that must be patchable (literals, float
constants, ABI-neutral qualifiers, new globals warned of) is patchable and behaves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import have_toolchain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import hazardgen  # noqa: E402
import patchproof  # noqa: E402

pytestmark = [pytest.mark.toolchain,
              pytest.mark.skipif(not have_toolchain(), reason="needs clang-cl-22 / lld-link-22")]



def _combined_seeds() -> tuple[int, ...]:
    """The first seeds whose seeded choice combines at least five hazards: one whose
    hazards all must be patchable, one with a hazard the gate must reject."""
    firsts: dict[str | None, int] = {}
    for seed in range(200):
        pair = hazardgen.render(seed)
        if len(pair.hazards) >= 5:
            firsts.setdefault(pair.expected, seed)
    return (firsts["patchable"], firsts["rejected"])


COMBINED = _combined_seeds()


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazard-alone")
    return {h: patchproof.run_hazard_seed(0, root / h, [h])[0] for h in hazardgen.HAZARDS}


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazard-combined")
    return {s: patchproof.run_hazard_seed(s, root)[0] for s in COMBINED}


def test_no_patch_the_gate_accepts_misbehaves(alone, combined):
    proofs = [*alone.values(), *combined.values()]
    assert all(p.behaves is not None for p in proofs), [p.problem for p in proofs if p.behaves is None]
    assert not [(p.seed, p.hazards, p.findings[:2]) for p in proofs if p.gate_failure]


@pytest.mark.parametrize("name", [h for h, z in hazardgen.HAZARDS.items() if z.verdict == "rejected"])
def test_hazards_to_reject_are_rejected_and_misbehave(alone, name):
    p, hz = alone[name], hazardgen.HAZARDS[name]
    assert p.hazards == [name]
    assert p.verdict == "rejected" and hz.rule in p.errors, (p.errors, p.findings[:2])
    assert p.behaves is False, f"the calls do not reach {name}"


@pytest.mark.parametrize("name", [h for h, z in hazardgen.HAZARDS.items() if z.verdict == "patchable"])
def test_hazards_to_accept_are_patchable_and_behave(alone, name):
    p, hz = alone[name], hazardgen.HAZARDS[name]
    assert p.verdict == "patchable" and p.errors == [], (name, p.errors)
    assert hz.rule is None or hz.rule not in p.errors
    assert p.behaves is True, p.findings[:3]


def test_a_new_global_lives_in_the_patch_image_as_warned(alone):
    """Its state is in the patch image, as the check's HP404 warning says: with the base's
    PDB showing that the base has no such global, the simulation notes it, it is no
    finding, and the results match the intermediate's."""
    p = alone["new_global"]
    assert p.verdict == "patchable" and p.behaves is True and p.findings == []
    assert any("g_ng_acc" in n and "HP404" in n for n in p.notes), p.notes


def test_pointers_in_new_globals_are_addresses_taken(alone):
    """A new global (a const table, or a mutable pointer with an initialiser) stays in the
    patch image, so the pointers it holds are the patch image's: the address of an
    unpatched function compares unequal to the base's (HP603), a new function it holds
    runs plainly compiled (HP601), and a mutable global's address is the patch image's
    copy (HP601)."""
    for name in ("fnptr_table", "global_fnptr", "callback_table"):
        p = alone[name]
        assert "HP603" in p.errors, name
        assert p.behaves is False and p.findings, name  # the emulator sees the patch misbehave
    assert "HP601" in alone["callback_table"].errors  # cb_new, held by k_cbs, writes g_cb_count
    # a new const table of mutable globals' addresses: they are the patch image's globals
    p = alone["data_pointer_table"]
    assert p.errors == ["HP601"]
    assert any(f.startswith("patch-image-state: dp_bump(") and "g_c" in f for f in p.findings)


def test_combined_seeds_get_the_verdict_their_hazards_settle(combined):
    for seed, p in combined.items():
        assert len(p.hazards) >= 3 and p.expected is not None
        assert p.verdict == p.expected, (seed, p.hazards, p.errors)
        assert p.behaves is (p.verdict == "patchable"), (seed, p.findings[:2])


def test_a_changed_table_behind_a_pointer_in_base_data_is_rejected(alone, tmp_path_factory):
    """k_tp is read-only and pointer-free, but g_tp (mutable, in the base) holds its address:
    the running base's g_tp points at the base's k_tp, so tp_a (patched) and tp_b read the old
    table; HP401 names k_tp and the pointer that holds it."""
    from pehotpatch.api import check_pair

    root = tmp_path_factory.mktemp("hazard-via-pointer")
    hazardgen.generate(0, root, ["table_via_pointer"])
    res = check_pair(root / "base.dll", root / "n" / "intermediate.dll", pdb_base=root / "base.pdb",
                     pdb=root / "n" / "intermediate.pdb", functions_file=root / "n" / "hotpatch_functions.txt")
    errors = [f for f in res.findings if f.severity == "error"]
    assert [(f.rule, f.symbol) for f in errors] == [("HP401", "k_tp")]
    assert errors[0].evidence["held_by"] == ["g_tp"]
    p = alone["table_via_pointer"]
    assert p.behaves is False and any(f.startswith("result-mismatch: tp_b(") for f in p.findings)


def test_simulate_tells_a_new_global_only_with_the_base_pdb(tmp_path):
    """A new mutable global has no base copy: with the base's PDB the simulation notes that
    patched code uses it in the patch image (HP404); with the base DLL alone it cannot tell
    a new global from an unbound one, and reports it."""
    import shutil

    from pehotpatch.api import emit_final, simulate

    hazardgen.generate(0, tmp_path, ["new_global"])
    n = tmp_path / "n"
    final = tmp_path / "final.dll"
    emit_final(tmp_path / "base.dll", n / "intermediate.dll", final, functions_file=n / "hotpatch_functions.txt")
    calls = [f"{e}({x})" for x in (1, 5, 77) for e in patchproof._exports(tmp_path / "base.dll")]
    named = simulate(tmp_path / "base.dll", final, calls, pdb_final=n / "intermediate.pdb")
    assert named.ok and any("g_ng_acc" in note and "HP404" in note for note in named.notes), named.notes
    (tmp_path / "alone").mkdir()
    shutil.copy(tmp_path / "base.dll", tmp_path / "alone" / "base.dll")
    unnamed = simulate(tmp_path / "alone" / "base.dll", final, calls, pdb_final=n / "intermediate.pdb")
    assert not unnamed.ok and any("g_ng_acc" in f.message for f in unnamed.findings)
