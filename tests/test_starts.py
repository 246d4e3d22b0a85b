"""Extents of functions known without a PDB (``pehotpatch.diff.starts``), checked against
the PDB of the same DLL: a guessed extent ends where the function's code ends, not
after the ``int3`` padding in front of the next function."""

from __future__ import annotations

import shutil

import pytest
from conftest import SAMPLES

from pehotpatch.diff.starts import split_at_padding
from pehotpatch.load import load_image

EXACT = {"pdb", "pdata"}


@pytest.mark.parametrize("scenario", ["x64/fix_globals", "x64/switch_table"])
def test_guessed_extents_end_where_the_pdb_says(scenario, tmp_path):
    dll = SAMPLES / scenario / "base.dll"
    pdb_size = {f.rva: f.size for f in load_image(dll).index.functions}
    shutil.copy2(dll, tmp_path / "base.dll")
    bare = load_image(tmp_path / "base.dll")
    assert not bare.index.has_pdb
    guessed_before = {f.rva: f.size for f in bare.index.functions if not f.sources & EXACT}
    guessed = [f for f in split_at_padding(bare.index).functions if not f.sources & EXACT]
    assert guessed and all(f.rva in pdb_size for f in guessed)
    assert {f.rva: f.size for f in guessed} == {f.rva: pdb_size[f.rva] for f in guessed}
    # Before, the extents of exported functions reached the next known start, padding
    # included (an exported 6-byte leaf had 16).
    assert any(guessed_before[r] > pdb_size[r] for r in guessed_before)

