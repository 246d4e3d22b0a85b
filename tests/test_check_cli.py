"""`pehp check` / `pehp check-tree` through pehotpatch.cli.main: exit codes, formats, outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_check_support import register_cli, sample_dir


@pytest.fixture(scope="module")
def main():
    return register_cli().main


def args(arch, scenario, *extra):
    d = sample_dir(arch, scenario)
    return ["check", str(d / "base.dll"), str(d / "intermediate.dll"), "--objects", str(d / "intermediate.objs"),
            "--functions-file", str(d / "hotpatch_functions.txt"), *extra]


def run(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_patchable_exits_0(main, capsys):
    code, out, _ = run(main, args("x64", "body_fix"), capsys)
    assert code == 0 and "verdict: PATCHABLE" in out and "telemetry_checksum" in out


def test_rejected_exits_1_with_explanation(main, capsys):
    code, out, _ = run(main, args("x64", "inline_pulls"), capsys)
    assert code == 1 and "verdict: REJECTED" in out
    assert "HP501" in out and "scale_value" in out


def test_allow_new_imports_flag(main, capsys):
    assert run(main, args("x64", "new_import"), capsys)[0] == 1
    assert run(main, args("x64", "new_import", "--allow-new-imports"), capsys)[0] == 0


def test_json_format(main, capsys):
    code, out, _ = run(main, args("x64", "signature_change", "--format", "json"), capsys)
    doc = json.loads(out)
    assert code == 1 and doc["schema"] == "pehp-check" and doc["verdict"] == "rejected"
    assert {(f["rule"], f["symbol"]) for f in doc["findings"]} >= {("HP301", "config_set")}
    assert doc["hotpatch_set"]["config_set"] and doc["exit_code"] == 1


def test_sarif_output_file_and_overwrite(main, capsys, tmp_path):
    out = tmp_path / "r.sarif"
    code, stdout, _ = run(main, args("x64", "new_export", "--format", "sarif", "--output", str(out)), capsys)
    assert code == 1 and stdout == ""
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.1.0" and any(r["ruleId"] == "HP201" for r in doc["runs"][0]["results"])
    code, _, err = run(main, args("x64", "new_export", "--format", "sarif", "--output", str(out)), capsys)
    assert code == 2 and "--overwrite" in err
    assert run(main, args("x64", "new_export", "--format", "sarif", "--output", str(out), "--overwrite"),
               capsys)[0] == 1


def test_text_output_file(main, capsys, tmp_path):
    out = tmp_path / "r.txt"
    assert run(main, args("x64", "body_fix", "-o", str(out)), capsys)[0] == 0
    assert "verdict: PATCHABLE" in out.read_text()


def test_waivers_option(main, capsys, tmp_path):
    w = tmp_path / "w.toml"
    w.write_text('[[waiver]]\nrule = "HP201"\nsymbol = "telemetry_clear_error"\n'
                 'justification = "found with GetProcAddress"\nexpires = 2999-01-01\n')
    code, out, _ = run(main, args("x64", "new_export", "--waivers", str(w)), capsys)
    assert code == 0 and "waived" in out
    w.write_text('[[waiver]]\nrule = "HP201"\nsymbol = "telemetry_clear_error"\n')
    code, out, _ = run(main, args("x64", "new_export", "--waivers", str(w)), capsys)
    assert code == 1 and "HP001" in out
    w.write_text("[[waiver]\n")
    code, _, err = run(main, args("x64", "new_export", "--waivers", str(w)), capsys)
    assert code == 2 and "w.toml" in err


@pytest.mark.parametrize("argv_tail", [["--format", "xml"], ["--no-such-option"]])
def test_usage_errors_exit_2(main, capsys, argv_tail):
    assert run(main, args("x64", "body_fix", *argv_tail), capsys)[0] == 2


def test_input_errors_exit_2(main, capsys, tmp_path):
    code, _, err = run(main, ["check", str(tmp_path / "nope.dll"), str(tmp_path / "nope2.dll")], capsys)
    assert code == 2 and "nope.dll" in err and "no such file" in err
    bad = tmp_path / "bad.dll"
    bad.write_text("hello")
    d = sample_dir("x64", "body_fix")
    code, _, err = run(main, ["check", str(d / "base.dll"), str(bad)], capsys)
    assert code == 2 and "not a PE image" in err


# ---- check-tree -------------------------------------------------------------------------
def _tree(root: Path, pairs: dict[str, tuple[str, str]]) -> tuple[Path, Path]:
    """Lay out base/ and intermediate/ trees: each sample pair as <rel>/pehplib.dll."""
    b, n = root / "base", root / "intermediate"
    for rel, (arch, scenario) in pairs.items():
        d = sample_dir(arch, scenario)
        for side, kind in ((b, "base"), (n, "intermediate")):
            dest = side / rel
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(d / f"{kind}.dll", dest / "pehplib.dll")
            shutil.copy(d / f"{kind}.pdb", dest / "pehplib.pdb")
        shutil.copy(d / "hotpatch_functions.txt", n / rel / "pehplib.hotpatch_functions.txt")
        shutil.copytree(d / "intermediate.objs", n / rel / "pehplib.objs")
    return b, n


def test_check_tree_all_patchable(main, capsys, tmp_path):
    b, n = _tree(tmp_path, {"a": ("x64", "body_fix"), "b": ("arm64", "fix_globals")})
    code, out, _ = run(main, ["check-tree", str(b), str(n)], capsys)
    assert code == 0 and "a/pehplib.dll" in out and "b/pehplib.dll" in out and "2 patchable" in out


def test_check_tree_rejected_and_unreadable(main, capsys, tmp_path):
    b, n = _tree(tmp_path, {"a": ("x64", "body_fix"), "b": ("x64", "inline_pulls"), "c": ("x86", "fix_globals")})
    (n / "c" / "pehplib.dll").write_bytes(b"MZ not really")
    (b / "only_base.dll").write_bytes(b"")
    code, out, err = run(main, ["check-tree", str(b), str(n), "-j", "2", "--format", "json"], capsys)
    assert code == 2  # an unreadable pair wins over a rejected one
    doc = json.loads(out)
    status = {e["image"]: e["status"] for e in doc["images"]}
    assert status == {"a/pehplib.dll": "patchable", "b/pehplib.dll": "rejected", "c/pehplib.dll": "error",
                      "only_base.dll": "unpaired"}
    assert "c/pehplib.dll" in err or "pehplib.dll" in err
    b_entry = next(e for e in doc["images"] if e["image"] == "b/pehplib.dll")
    assert any(f["rule"] == "HP501" for f in b_entry["check"]["findings"])


def test_check_tree_rejected_exits_1_and_sarif(main, capsys, tmp_path):
    b, n = _tree(tmp_path, {"a": ("x64", "body_fix"), "b": ("x64", "new_export")})
    out = tmp_path / "tree.sarif"
    code, _, _ = run(main, ["check-tree", str(b), str(n), "--format", "sarif", "-o", str(out)], capsys)
    assert code == 1
    doc = json.loads(out.read_text())
    (r,) = doc["runs"]
    assert len(r["artifacts"]) == 2
    assert any(x["ruleId"] == "HP201" and x["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
               .endswith("b/pehplib.dll") for x in r["results"])


def test_check_tree_usage(main, capsys, tmp_path):
    assert run(main, ["check-tree", str(tmp_path / "x"), str(tmp_path)], capsys)[0] == 2
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    code, _, err = run(main, ["check-tree", str(tmp_path / "e1"), str(tmp_path / "e2")], capsys)
    assert code == 2 and "no PE images" in err
