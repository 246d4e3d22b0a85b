"""`pehp simulate` on the command line: exit codes, JSON, one-line errors, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES
from test_simulate_broken import FUNCTION, broken, set_word
from test_simulate_samples import calls_of, finals  # noqa: F401  (fixture)

from pehotpatch.cli import main

D = SAMPLES / "x64" / "fix_globals"


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_agrees_and_exit_0(finals, capsys):  # noqa: F811
    final = finals(D)
    code, out, err = run(["simulate", D / "base.dll", final, "--calls-file", D / "expect.toml",
                          "--pdb", D / "intermediate.pdb", "--patch-after", "0", "--undo", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True and doc["findings"] == []
    assert [c["call"] for c in doc["calls"]] == calls_of(D)
    for c in doc["calls"]:
        assert (c["patched"]["value"], c["patched"]["fault"]) == (c["intermediate"]["value"],
                                                                   c["intermediate"]["fault"])
        # the same globals written, in the base instead of the intermediate
        assert [(w["image"], w["name"]) for w in c["patched"]["writes"]] == [
            ("base", w["name"]) for w in c["intermediate"]["writes"]]
    assert doc["undo"]["identical"] is True
    assert doc["patches"][0]["records"] == {"INVERSE ABSOLUTE": 5, "INVERSE FUNCTION": 3, "FUNCTION": 1}


def test_output_is_deterministic(finals, capsys):  # noqa: F811
    args = ["simulate", D / "base.dll", finals(D), "--calls-file", D / "expect.toml",
            "--pdb", D / "intermediate.pdb", "-k", "10", "--json"]
    first = run(args, capsys)
    second = run(args, capsys)
    assert first == second and first[0] == 0


def test_text_report(finals, capsys):  # noqa: F811
    code, out, _ = run(["simulate", D / "base.dll", finals(D), "-c", "telemetry_init()",
                        "-c", "telemetry_record(1, 5)", "-c", "telemetry_count()",
                        "--pdb", D / "intermediate.pdb"], capsys)
    assert code == 0
    assert "forward  telemetry_record" in out and "backward ring_push" in out
    assert "base:g_record_count" in out
    assert "no findings" in out


def test_findings_exit_1(finals, capsys, tmp_path: Path):  # noqa: F811
    def edit(data, t):
        rec = t.records(FUNCTION, False)[0]
        set_word(data, rec, 2, rec.words[2] ^ 1)

    bad = broken(finals(D), tmp_path, "bytes", edit)
    code, out, _ = run(["simulate", D / "base.dll", bad, "-c", "telemetry_count()", "--json"], capsys)
    assert code == 1
    doc = json.loads(out)
    assert [f["kind"] for f in doc["findings"]] == ["patch-refused"]


@pytest.mark.parametrize("case", ["missing", "not_final", "no_calls", "bad_call", "no_export",
                                  "patch_after", "other_machine"])
def test_bad_input_is_one_line_exit_2(case: str, finals, capsys, tmp_path: Path):  # noqa: F811
    final = finals(D)
    base = D / "base.dll"
    args = {
        "missing": [base, tmp_path / "nope.dll", "-c", "f()"],
        "not_final": [base, D / "intermediate.dll", "-c", "f()"],
        "no_calls": [base, final],
        "bad_call": [base, final, "-c", "telemetry_record(1, x)"],
        "no_export": [base, final, "-c", "nope()"],
        "patch_after": [base, final, "-c", "telemetry_count()", "-k", "5"],
        "other_machine": [SAMPLES / "x86" / "fix_globals" / "base.dll", final, "-c", "f()"],
    }[case]
    code, out, err = run(["simulate", *args], capsys)
    assert code == 2, (out, err)
    assert err.startswith("pehp: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
