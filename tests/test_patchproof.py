"""Patches the gate accepts behave like the fix: tools/patchproof.py on generated pairs.

Each seed's base and intermediates (tools/pairgen.py's generator, and one changed function
left out of the functions file) are checked three ways, a final image is written with
--force whatever the verdict, and the patch is applied to the base in the emulator with
every export called on a fixed argument list (docs/SIMULATE.md).  No check may say
"patchable" for a patch that misbehaves; and the oracle must see the misbehaviour of the
patches the gate rejects for a reason the calls reach (state written in the patch image,
an unlisted change that the running base keeps)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import have_toolchain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import patchproof  # noqa: E402

pytestmark = [pytest.mark.toolchain,
              pytest.mark.skipif(not have_toolchain(), reason="needs clang-cl-22 / lld-link-22")]


@pytest.fixture(scope="module")
def proofs(tmp_path_factory):
    root = tmp_path_factory.mktemp("patchproof")
    return {(p.seed, p.variant, p.config): p for seed in range(6) for p in patchproof.run_seed(seed, root)}


def test_no_patch_the_gate_accepts_misbehaves(proofs):
    assert not [k for k, p in proofs.items() if p.gate_failure]
    assert all(p.behaves is not None for p in proofs.values()), [p.problem for p in proofs.values()]


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_accepted_patches_run_like_the_intermediate(proofs, seed):
    p = proofs[(seed, "full", "a")]
    assert p.verdict == "patchable" and p.errors == []
    assert p.behaves is True and p.findings == []


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_hp601_rejections_are_seen_misbehaving(proofs, seed):
    """A renamed function is new and not in the functions file: compiled plainly, it reaches
    the shared state directly, so the patched base writes the patch image's copy."""
    p = proofs[(seed, "full", "a")]
    assert p.verdict == "rejected" and p.errors == ["HP601"]
    assert p.behaves is False
    assert any(f.startswith("patch-image-state:") and "_r+0x" in f for f in p.findings)


def test_an_unlisted_change_is_seen_misbehaving(proofs):
    """With a changed function left out of the functions file the running base keeps its
    old code: HP501 rejects, and the results differ from the intermediate's."""
    omitted = [p for (seed, variant, config), p in proofs.items() if variant == "omit" and config == "a"]
    assert omitted and all(p.verdict == "rejected" and "HP501" in p.errors for p in omitted)
    assert any(p.behaves is False and any(f.startswith("result-mismatch:") for f in p.findings) for p in omitted)


def test_without_names_the_gate_rejects(proofs):
    """Without the base PDB every seed is rejected (HP705: redirections on pairs no name
    confirms); nothing is simulated as patchable there."""
    for (seed, variant, config), p in proofs.items():
        if config != "a":
            assert p.verdict == "rejected", (seed, variant, config)
