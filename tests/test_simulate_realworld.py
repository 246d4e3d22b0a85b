"""simulate on a real Microsoft-built DLL: vcruntime140 14.42 -> 14.44 (CFG, no PDB), final
image written with --force and every changed function listed.  Every FUNCTION record is
applied (first bytes checked against the real base), the CFG-target and IAT records
are taken, calls that touch no memory agree, and undo gives the base back byte for byte."""

from __future__ import annotations

import pytest

from pehotpatch.emulate.hptable import read_table
from pehotpatch.image.pe_reader import load_pe
from pehotpatch.table.format import CALL_TARGET, FUNCTION, INDIRECT

pytestmark = pytest.mark.network


def test_forced_final_of_vcruntime140(msvc_pair, tmp_path):
    import pehotpatch as pehp

    base, inter = msvc_pair[0] / "vcruntime140.dll", msvc_pair[1] / "vcruntime140.dll"
    changed = [f.new.name for f in pehp.diff_pair(base, inter).changed_functions]
    ff = tmp_path / "functions.txt"
    ff.write_text("\n".join(changed) + "\n")
    final = tmp_path / "vcruntime140.dll"
    pehp.emit_final(base, inter, final, functions_file=ff, force=True)
    table = read_table(load_pe(final))
    forward = table.records(FUNCTION, inverse=False)
    assert len(forward) == len(changed) > 20
    assert table.records(CALL_TARGET, inverse=True) and table.records(INDIRECT, inverse=True)

    calls = ["memset(0, 0, 0)", "memcmp(0, 0, 0)", "memmove(0, 0, 0)", "memcpy(0, 0, 0)"]
    r = pehp.simulate(base, final, calls, undo=True)
    assert r.ok, [f.message for f in r.findings]
    (p,) = r.patches
    assert p.applied and p.records["FUNCTION"] == len(forward)
    assert sum(x.direction == "forward" for x in p.redirects) == len(forward)
    assert [row.patched.outcome() for row in r.calls] == [row.intermediate.outcome() for row in r.calls]
    assert all(row.base.fault is None for row in r.calls)
    assert r.undo is not None and r.undo.identical and r.undo.restored == len(forward)
