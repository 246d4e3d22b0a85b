"""Final images of real Microsoft-built DLLs (msvc-runtime 14.42 -> 14.44: signed, CFG, load
config of 0x140 bytes, no PDB), written with --force and every changed function listed as
patched: re-read by LIEF, pefile and llvm-readobj-22, verified, the signature removed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pehotpatch.cli import main

pytestmark = pytest.mark.network

DLLS = ["vcruntime140.dll", "msvcp140.dll"]


@pytest.mark.parametrize("name", DLLS)
def test_forced_final_of_a_real_dll(msvc_pair, tmp_path, capsys, name):
    import lief
    import pefile

    import pehotpatch as pehp
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.table.format import CALL_TARGET, FUNCTION, INDIRECT

    base, inter = msvc_pair[0] / name, msvc_pair[1] / name
    assert load_pe(inter).has_signature
    changed = [f.new.name for f in pehp.diff_pair(base, inter).changed_functions]
    assert len(changed) > 20
    ff = tmp_path / "functions.txt"
    ff.write_text("\n".join(changed) + "\n")
    out = tmp_path / name
    assert main(["emit-final", str(base), str(inter), "-o", str(out), "--functions-file", str(ff), "--force"]) == 0
    text = capsys.readouterr().out
    assert "signature was removed" in text

    rd = pehp.inspect_image(out)
    assert rd.valid, rd.violations[:3]
    t = rd.table
    assert t is not None
    assert len(t.records(FUNCTION, inverse=False)) == len(changed)
    assert t.records(FUNCTION, inverse=True) and t.records(INDIRECT, inverse=True)
    assert t.records(CALL_TARGET, inverse=True)  # both images use CFG

    b = lief.PE.parse(str(out))
    assert b is not None and b.load_configuration.hotpatch_table_offset == rd.rva
    assert not b.has_signatures
    pe = pefile.PE(str(out), fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG"]])
    assert pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct.HotPatchTableOffset == rd.rva
    assert pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum()
    tool = shutil.which("llvm-readobj-22")
    if tool:
        ro = subprocess.run([tool, "--coff-load-config", str(out)], capture_output=True, text=True, check=True).stdout
        assert f"HotPatchTableOffset: {rd.rva:#X}".lower() in ro.lower()

    code = main(["verify", str(out), "--base", str(base), "--intermediate", str(inter), "--functions-file", str(ff)])
    assert code == 0, capsys.readouterr().out
