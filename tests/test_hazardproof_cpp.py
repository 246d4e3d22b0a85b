"""The gate against behaviour on C++ pairs with virtual dispatch (tools/hazardgen_cpp.py).

Every hazard of the generator is built on its own (seed 0) and two seeded combinations:
each pair is checked with both PDBs, a final image is written with --force, and the patch
is applied to the running base in the emulator with every export called on
tools/patchproof.py's argument list.  The verdict each hazard must get is the one the
running process settles (objects built by the base's DllMain keep the base's vtable
pointers): an override whose body changes, an object constructed by patched code (its
vtable read through a ``__ref_`` slot bound to the base's vtable) and a vtable-pointer
comparison are patchable and behave; a class that gains an override or a virtual method
in the middle of its vtable, and a member-function pointer compared with
``&Shape::twice``, are rejected and misbehave; so is a virtual method added at the end of
the vtable and called by patched code on an object the base built (the call reads past
the base's vtable: HP311 compares a class's virtual methods, which the check once missed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import have_toolchain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import hazardgen_cpp  # noqa: E402
import patchproof  # noqa: E402

pytestmark = [pytest.mark.toolchain,
              pytest.mark.skipif(not have_toolchain(), reason="needs clang-cl-22 / lld-link-22")]

def _combined_seeds() -> tuple[int, ...]:
    """The first seeds combining at least four hazards: one whose hazards all must be
    patchable, one with a hazard the gate must reject."""
    firsts: dict[str | None, int] = {}
    for seed in range(200):
        pair = hazardgen_cpp.render(seed)
        if len(pair.hazards) >= 4:
            firsts.setdefault(pair.expected, seed)
    return (firsts["patchable"], firsts["rejected"])


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazard-cpp-alone")
    return {h: patchproof.run_hazard_seed(0, root / h, [h], "hazard-cpp")[0] for h in hazardgen_cpp.HAZARDS}


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazard-cpp-combined")
    return [patchproof.run_hazard_seed(s, root, None, "hazard-cpp")[0] for s in _combined_seeds()]


def test_no_patch_the_gate_accepts_misbehaves(alone, combined):
    proofs = [*alone.values(), *combined]
    assert all(p.behaves is not None for p in proofs), [p.problem for p in proofs if p.behaves is None]
    assert not [(p.seed, p.hazards, p.findings[:2]) for p in proofs if p.gate_failure]
    assert [p.verdict for p in combined] == ["patchable", "rejected"], [(p.seed, p.errors) for p in combined]
    assert [p.behaves for p in combined] == [True, False]


def test_hazards_to_reject_are_rejected_and_misbehave(alone):
    for name, hz in hazardgen_cpp.HAZARDS.items():
        if hz.verdict != "rejected":
            continue
        p = alone[name]
        assert p.verdict == "rejected", (name, p.errors)
        assert p.behaves is False, name  # the emulator sees what the rejection is about
        if hz.rule:
            assert hz.rule in p.errors, (name, p.errors)


def test_hazards_to_accept_are_patchable_and_behave(alone):
    for name, hz in hazardgen_cpp.HAZARDS.items():
        if hz.verdict == "patchable":
            p = alone[name]
            assert (p.verdict, p.errors, p.behaves) == ("patchable", [], True), (name, p.findings[:2])


def test_vtable_grown_at_the_end_is_rejected(alone):
    """The listed caller calls the new slot on an object the base built: it reads past the
    base's vtable.  HP311 names the class's new virtual method."""
    p = alone["vtable_grow_end"]
    assert p.behaves is False
    assert p.verdict == "rejected" and p.errors == ["HP311"], p.errors
