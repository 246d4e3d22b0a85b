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
    for f in guessed:
        # the PDB's size, or less where the PDB counts the int3 padding after the code
        # (lld's import thunks: 6 bytes of jump, 16 in the PDB)
        assert f.size == pdb_size[f.rva] or (
            0 < f.size < pdb_size[f.rva]
            and bare.pe.read(f.rva + f.size, pdb_size[f.rva] - f.size) == b"\xcc" * (pdb_size[f.rva] - f.size)
            and bare.pe.read(f.rva + f.size - 1, 1) != b"\xcc"), (hex(f.rva), f.size, pdb_size[f.rva])
    # the gap after the last function is searched too: functions there that nothing
    # names (leaves without .pdata, import thunks), each one the PDB has
    tail = [f for f in guessed if f.rva > max(g.rva for g in bare.index.functions)]
    assert tail and any(bare.pe.read(f.rva, 2) == b"\xff\x25" for f in tail)
    # Before, the extents of exported functions reached the next known start, padding
    # included (an exported 6-byte leaf had 16).
    assert any(guessed_before[r] > pdb_size[r] for r in guessed_before)

