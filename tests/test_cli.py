"""The CLI's shared error path: one line naming the file, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pehotpatch import __version__
from pehotpatch.cli import main

PEHP = [sys.executable, "-m", "pehotpatch.cli"]


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"pehp {__version__}"


def _bad_inputs(tmp_path: Path, real: Path) -> dict[str, Path]:
    data = real.read_bytes()
    cases = {
        "missing": tmp_path / "nope.dll",
        "directory": tmp_path,
        "not_pe": tmp_path / "notes.txt",
        "empty": tmp_path / "empty.dll",
        "truncated_headers": tmp_path / "trunc.dll",
        "truncated_body": tmp_path / "half.dll",
        "wrong_machine": tmp_path / "mips.dll",
    }
    cases["not_pe"].write_text("hello\n")
    cases["empty"].write_bytes(b"")
    cases["truncated_headers"].write_bytes(data[:0x120])
    cases["truncated_body"].write_bytes(data[: len(data) // 2])
    lfanew = int.from_bytes(data[0x3C:0x40], "little")
    mips = bytearray(data)
    mips[lfanew + 4 : lfanew + 6] = (0x166).to_bytes(2, "little")
    cases["wrong_machine"].write_bytes(bytes(mips))
    return cases


EXPECTED = {
    "missing": "no such file",
    "directory": "is a directory",
    "not_pe": "not a PE image",
    "empty": "not a PE image",
    "truncated_headers": "truncated",
    "truncated_body": "truncated",
    "wrong_machine": "unsupported machine 0x0166",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_input_one_line_exit_2(case, tmp_path, msvc_dlls, capsys):
    path = _bad_inputs(tmp_path, msvc_dlls[0])[case]
    code, out, err = run(["info", str(path)], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pehp: error: {path}: ")
    assert EXPECTED[case] in lines[0]


def test_debug_shows_traceback(tmp_path, capsys):
    from pehotpatch.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "info", str(tmp_path / "nope.dll")])


def test_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.dll"
    bad.write_bytes(b"MZ" + b"\0" * 100)
    proc = subprocess.run([*PEHP, "info", str(bad)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_usage_error_exit_2(capsys):
    code, _, err = run(["info"], capsys)
    assert code == 2 and "Missing argument" in err
    code, _, err = run(["no-such-command"], capsys)
    assert code == 2


def test_info_json_matches_image(msvc_dlls, capsys):
    path = msvc_dlls[0]
    code, out, _ = run(["info", "--json", str(path)], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "pehp-info" and doc["machine"] == "x64" and doc["kind"] == "dll"
    assert doc["load_config"]["size"] == "0x140"
    assert doc["authenticode"] is True
    assert doc["checksum"]["valid"] is True  # Microsoft-signed DLLs carry a correct checksum
    assert len(doc["exports"]) > 10 and all("iat_rva" in i for i in doc["imports"])


def test_info_json_output_file_is_atomic_and_refuses_overwrite(msvc_dlls, tmp_path, capsys):
    out_file = tmp_path / "info.json"
    code, _, _ = run(["info", "--json", str(msvc_dlls[0]), "-o", str(out_file)], capsys)
    assert code == 0 and json.loads(out_file.read_text())["machine"] == "x64"
    code, _, err = run(["info", "--json", str(msvc_dlls[0]), "-o", str(out_file)], capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = run(["info", "--json", str(msvc_dlls[0]), "-o", str(msvc_dlls[0]), "--overwrite"], capsys)
    assert code == 2 and "over an input" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["info.json"]  # no temp files left


def test_info_text_names_the_essentials(msvc_dlls, capsys):
    code, out, _ = run(["info", str(msvc_dlls[0])], capsys)
    assert code == 0
    for word in ("machine", "x64", "HotPatchTableOffset", "sections", ".text", "exports"):
        assert word in out


@pytest.mark.parametrize("command", ["diff", "check"])
def test_diff_and_check_bad_inputs_are_one_line(command, tmp_path, capsys):
    import shutil

    from conftest import SAMPLES

    d = SAMPLES / "x64" / "fix_globals"
    shutil.copy(d / "base.dll", tmp_path / "base.dll")
    (tmp_path / "base.pdb").write_bytes((d / "base.pdb").read_bytes()[:5000])  # truncated PDB
    cases = [
        ([str(tmp_path / "base.dll"), str(d / "intermediate.dll")], str(tmp_path / "base.pdb")),
        ([str(d / "base.dll"), str(d / "intermediate.dll"), "--objects", str(tmp_path / "none")],
         str(tmp_path / "none")),
        ([str(d / "base.dll"), str(d / "intermediate.dll"), "--functions-file", str(tmp_path / "f.txt")],
         str(tmp_path / "f.txt")),
        ([str(d / "base.dll"), str(d / "intermediate.dll"), "--json" if command == "diff" else "--format=json",
          "-o", str(tmp_path / "no-dir" / "out.json")], str(tmp_path / "no-dir" / "out.json")),
    ]
    for args, named in cases:
        code, out, err = run([command, *args], capsys)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith(f"pehp: error: {named}: "), err
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.dll", "base.pdb"]  # nothing written
