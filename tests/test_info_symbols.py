"""`pehp info` with symbols: functions, globals and the hot-patch set, with their sources."""

from __future__ import annotations

import json
import shutil

from conftest import SAMPLES

from pehotpatch.cli import main

FIX = SAMPLES / "x64" / "fix_globals"


def run_json(args, capsys):
    code = main(["info", "--json", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_symbols_from_pdb_objects_and_functions_file(capsys):
    code, doc, _ = run_json([str(FIX / "intermediate.dll"), "--objects", str(FIX / "intermediate.objs"),
                             "--functions-file", str(FIX / "hotpatch_functions.txt")], capsys)
    assert code == 0
    sym = doc["symbols"]
    assert sym["pdb"].endswith("intermediate.pdb")
    funcs = {f["name"]: f for f in sym["functions"]}
    rec = funcs["telemetry_record"]
    assert rec["signature"] == "int telemetry_record(unsigned int, unsigned int)"
    assert rec["hotpatch_marked"] is True and "pdb" in rec["sources"] and "pdata" in rec["sources"]
    assert funcs["put_str"]["static"] is True and funcs["put_str"]["hotpatch_marked"] is False
    glob = {g["name"]: g for g in sym["globals"]}
    assert glob["g_ring"]["mutable"] and glob["g_ring"]["type"] == "struct pehp_ring"
    assert glob["__ref_g_config"]["ref_slot"] and not glob["__ref_g_config"]["mutable"]
    assert glob["kind_names"]["contains_pointers"] is True and glob["kind_names"]["mutable"] is False
    hs = sym["hotpatch_set"]
    assert hs["sources_consulted"] == ["functions-file", "objects"]  # lld drops S_HOTPATCHFUNC from the PDB
    assert hs["functions"] == [{"name": "telemetry_record", "sources": ["functions-file", "objects"]}]
    assert hs["disagreements"] == []


def test_disagreement_between_functions_file_and_objects(capsys):
    d = SAMPLES / "x64" / "direct_global_access"
    code, doc, _ = run_json([str(d / "intermediate.dll"), "--objects", str(d / "intermediate.objs"),
                             "--functions-file", str(d / "hotpatch_functions.txt")], capsys)
    assert code == 0
    dis = doc["symbols"]["hotpatch_set"]["disagreements"]
    assert [x["name"] for x in dis] == ["report_summary"]
    assert "did not mark it" in dis[0]["why"]


def test_without_pdb_says_so(tmp_path, capsys):
    shutil.copy(FIX / "base.dll", tmp_path / "lonely.dll")
    code, doc, _ = run_json([str(tmp_path / "lonely.dll"), "--symbols"], capsys)
    assert code == 0
    sym = doc["symbols"]
    assert sym["pdb"] is None and any("no PDB" in n for n in sym["notes"])
    names = {f["name"] for f in sym["functions"]}
    assert "telemetry_record" in names  # from the exports
    assert all(f["signature"] is None for f in sym["functions"])
    assert any(n.startswith("sub_") for n in names)  # unnamed .pdata functions


def test_mismatched_pdb_is_refused_unless_asked(capsys):
    other = SAMPLES / "x64" / "body_fix" / "intermediate.pdb"
    code, _, err = run_json([str(FIX / "base.dll"), "--pdb", str(other)], capsys)
    assert code == 2
    assert err.startswith(f"pehp: error: {other}: PDB GUID/age") and "--ignore-pdb-mismatch" in err
    code, doc, _ = run_json([str(FIX / "base.dll"), "--pdb", str(other), "--ignore-pdb-mismatch"], capsys)
    assert code == 0 and any("although" in n for n in doc["symbols"]["notes"])


def test_mismatched_pdb_found_next_to_image_is_ignored_with_a_note(tmp_path, capsys):
    shutil.copy(FIX / "base.dll", tmp_path / "base.dll")
    shutil.copy(SAMPLES / "x64" / "body_fix" / "intermediate.pdb", tmp_path / "base.pdb")
    code, doc, _ = run_json([str(tmp_path / "base.dll"), "--symbols"], capsys)
    assert code == 0
    assert doc["symbols"]["pdb"] is None
    assert any(n.startswith("ignored") and "does not match" in n for n in doc["symbols"]["notes"])
