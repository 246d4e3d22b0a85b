"""Function discovery where no symbol source gives extents: an export (or COFF symbol)
without ``.pdata`` once covered everything up to the next symbol; direct call targets
found in the code bytes now start functions of their own."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from pehotpatch.image.pdb import load_pdb
from pehotpatch.image.pe_reader import load_pe
from pehotpatch.image.symbols import build_index, call_scan_targets

X86_IMAGES = sorted(SAMPLES.glob("x86/*/*.dll"))


@pytest.mark.parametrize("dll", X86_IMAGES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_call_targets_split_guessed_extents(dll):
    # x86 images have no .pdata: without the PDB only the exports are known.
    img = load_pe(dll)
    truth = {p.rva for p in load_pdb(dll.with_suffix(".pdb")).procedures if p.rva is not None}
    ix = build_index(img, None)
    found = [f for f in ix.functions if "call-scan" in f.sources]
    assert found, "no function discovered"
    # Every discovered start is a real procedure start (the PDB says so) ...
    assert {f.rva for f in found} <= truth
    # ... and no function now swallows a procedure that some code calls directly.
    for f in ix.functions:
        inner = [t for t in truth if f.rva < t < f.end and t in call_scan_targets(img)]
        assert not inner, f"{f.name} still covers called procedures {inner}"


def test_images_with_full_extents_are_not_split():
    # x64 images list every non-leaf function in .pdata; call targets are not needed.
    for dll in sorted(SAMPLES.glob("x64/*/base.dll")):
        ix = build_index(load_pe(dll), None)
        assert not [f for f in ix.functions if "call-scan" in f.sources]
