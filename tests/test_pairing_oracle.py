"""Structural pairing checked against the PDBs on every sample pair.

Without PDBs the differ pairs functions by exports, content, call graph, call sites
and order.  A wrong pair is the worst outcome (a hot patch would redirect one function
to another's code), so here every pair made from the DLLs alone is named through the
PDBs the samples were built with: both sides must be the same function."""

from __future__ import annotations

import shutil

import pytest
from conftest import scenario_dirs

from pehotpatch.api import diff_pair
from pehotpatch.image.pdb import load_pdb


def _procedures(pdb_path) -> dict[int, str]:
    out: dict[int, str] = {}
    for p in load_pdb(pdb_path).procedures:
        if p.rva is not None:
            out.setdefault(p.rva, f"{(p.module or '').rsplit(chr(92), 1)[-1]}:{p.name}")
    return out


@pytest.mark.parametrize("d", scenario_dirs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_structural_pairs_are_the_same_function(d, tmp_path):
    for name in ("base.dll", "intermediate.dll"):
        shutil.copy(d / name, tmp_path / name)  # alone: no PDB is found next to them
    diff = diff_pair(tmp_path / "base.dll", tmp_path / "intermediate.dll", jobs=1)
    assert diff.base.pdb is None and diff.new.pdb is None
    base_names, new_names = _procedures(d / "base.pdb"), _procedures(d / "intermediate.pdb")
    named = 0
    for p in diff.correlation.functions:
        b, n = base_names.get(p.base.rva), new_names.get(p.new.rva)
        if b is None or n is None:
            continue  # a start the PDB does not have (e.g. an import thunk)
        named += 1
        assert b == n, f"{p.base.name} at {p.base.rva:#x} paired with {p.new.name} at {p.new.rva:#x} " \
                       f"by {p.method}: {b} != {n}"
    assert named, "no pair could be named through the PDBs"
