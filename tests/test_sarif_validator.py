"""SARIF logs of `pehp check` and `pehp check-tree` pass Microsoft's SARIF validator
(`Sarif.Multitool validate`, npm package @microsoft/sarif-multitool; `make test` installs it
into .cache/npm) with no error and no warning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI, ROOT, SAMPLES

from pehotpatch.cli import main

MULTITOOL = Path(os.environ.get(
    "PEHP_SARIF_MULTITOOL",
    ROOT / ".cache" / "npm" / "node_modules" / "@microsoft" / "sarif-multitool-linux" / "Sarif.Multitool"))


@pytest.fixture(scope="module")
def multitool() -> Path:
    if not (MULTITOOL.is_file() and os.access(MULTITOOL, os.X_OK)):
        if IN_CI:
            raise AssertionError(f"{MULTITOOL} missing: make test installs it")
        pytest.skip("Sarif.Multitool not installed (make test installs it)")
    return MULTITOOL


def validate(tool: Path, logs: list[Path], out: Path) -> list[dict]:
    """Every result the validator reports on ``logs`` (errors, warnings and notes)."""
    proc = subprocess.run([str(tool), "validate", *map(str, logs), "--output", str(out),
                           "--level", "Error", "Warning", "Note"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text(encoding="utf-8-sig"))
    return [r for run in doc["runs"] for r in run.get("results", [])]


def problems(results: list[dict]) -> list[str]:
    return [f"{r['ruleId']} {r.get('level', 'warning')}: {r['message'].get('arguments')}" for r in results
            if r.get("level", "warning") in ("error", "warning")]


def _hp(d: Path) -> list[str]:
    return ["--objects", str(d / "intermediate.objs"), "--functions-file", str(d / "hotpatch_functions.txt")]


def test_validator_catches_a_relative_help_uri(multitool, tmp_path):
    """The validator really checks: the relative helpUri pehp used to write is an error."""
    d = SAMPLES / "x64" / "body_fix"
    log = tmp_path / "check.sarif"
    assert main(["check", str(d / "base.dll"), str(d / "intermediate.dll"), *_hp(d), "-f", "sarif",
                 "-o", str(log)]) == 0
    doc = json.loads(log.read_text())
    for r in doc["runs"][0]["tool"]["driver"]["rules"]:
        r["helpUri"] = f"docs/rules/{r['id']}.md"
    del doc["runs"][0]["tool"]["driver"]["informationUri"]
    bad = tmp_path / "bad.sarif"
    bad.write_text(json.dumps(doc))
    found = problems(validate(multitool, [bad], tmp_path / "bad.out.sarif"))
    assert sum(p.startswith("SARIF1005 error") for p in found) == len(doc["runs"][0]["tool"]["driver"]["rules"])
    assert any(p.startswith("SARIF2005 warning") for p in found), found


def test_check_and_check_tree_logs_pass_cleanly(multitool, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # relative artifact URIs, as in CI
    logs: list[Path] = []
    for arch, scenario, code in [("x64", "inline_pulls", 1), ("x64", "fix_globals", 0),
                                 ("x86", "direct_global_access", 1), ("arm64", "body_fix", 0)]:
        d = Path("samples") / arch / scenario
        out = tmp_path / f"{arch}-{scenario}.sarif"
        assert main(["check", str(d / "base.dll"), str(d / "intermediate.dll"), *_hp(d), "-f", "sarif",
                     "-o", str(out)]) == code
        logs.append(out)
    # waived findings carry suppressions
    d = Path("samples") / "x64" / "new_export"
    waivers = tmp_path / "w.toml"
    waivers.write_text('[[waiver]]\nrule = "HP201"\nsymbol = "telemetry_clear_error"\n'
                       'justification = "probed dynamically"\n')
    out = tmp_path / "waived.sarif"
    main(["check", str(d / "base.dll"), str(d / "intermediate.dll"), *_hp(d), "--waivers", str(waivers),
          "-f", "sarif", "-o", str(out)])
    assert "suppressions" in out.read_text()
    logs.append(out)
    # check-tree, with an image that cannot be read (a tool execution notification)
    base, new = tmp_path / "b", tmp_path / "n"
    for arch, scenario in [("x64", "body_fix"), ("x86", "new_import")]:
        for side, root in (("base", base), ("intermediate", new)):
            (root / arch).mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLES / arch / scenario / f"{side}.dll", root / arch / "lib.dll")
            shutil.copy(SAMPLES / arch / scenario / f"{side}.pdb", root / arch / "lib.pdb")
    (base / "broken.dll").write_bytes(b"MZ not really")
    (new / "broken.dll").write_bytes(b"MZ not really")
    out = tmp_path / "tree.sarif"
    assert main(["check-tree", str(base), str(new), "-f", "sarif", "-o", str(out)]) == 2
    tree = json.loads(out.read_text())
    assert tree["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    logs.append(out)
    # the library's one-run-per-image form, with an image that could not be read
    from test_check_support import sample_check

    from pehotpatch.render.sarif import sarif_log

    per = tmp_path / "per-image.sarif"
    doc = sarif_log([sample_check("x64", "new_export"), sample_check("x86", "new_import")],
                    errors=[("broken/x.dll", "not a PE image")], per_image_runs=True)
    assert len(doc["runs"]) == 3
    per.write_text(json.dumps(doc, indent=2))
    logs.append(per)
    results = validate(multitool, logs, tmp_path / "validation.sarif")
    assert problems(results) == []
