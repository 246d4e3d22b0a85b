"""Acceptance: `pehp check` gives every sample scenario the verdict and the findings its
expect.toml requires.

A required finding (``[[check.findings]]``) names its ``rule`` and ``symbol``; it may
also give the ``severity`` it must have and ``mentions``: words that its message and
explanation must contain (the names that make the explanation concrete).  ``absent``
lists rules that must not fire at all."""

from __future__ import annotations

import pytest
from conftest import load_expect, scenario_dirs
from test_check_support import sample_check

from pehotpatch.check import PATCHABLE, REJECTED

SCENARIOS = scenario_dirs()


@pytest.mark.parametrize("d", SCENARIOS, ids=[f"{d.parent.name}/{d.name}" for d in SCENARIOS])
def test_verdict_and_required_findings(d):
    exp = load_expect(d)["check"]
    res = sample_check(d.parent.name, d.name)
    got = [(f.rule, f.symbol) for f in res.findings]
    assert res.verdict == exp["verdict"], f"findings: {got}"
    for req in exp.get("findings", []):
        rule, symbol = req["rule"], req.get("symbol")
        hits = [f for f in res.findings if f.rule == rule and (symbol is None or f.symbol == symbol)]
        assert hits, f"missing {rule} {symbol or ''}; got {got}"
        for f in hits:
            assert f.message and f.explanation, f"{rule} needs a message and an explanation chain"
            if "severity" in req:
                assert f.severity == req["severity"], (rule, symbol, f.severity)
            text = " ".join([f.message, *f.explanation])
            for word in req.get("mentions", []):
                assert word in text, f"{rule} {symbol}: {word!r} not in {text!r}"
    for rule in exp.get("absent", []):
        assert not [f for f in res.all_findings() if f.rule == rule], f"{rule} must not fire; got {got}"
    if exp["verdict"] == PATCHABLE:
        assert not [f for f in res.findings if f.severity == "error"]
        assert res.exit_code == 0
    else:
        assert exp["verdict"] == REJECTED and res.exit_code == 1


def test_every_scenario_has_a_check_section():
    assert SCENARIOS, "no samples/*/*/expect.toml found"
    for d in SCENARIOS:
        assert "verdict" in load_expect(d).get("check", {}), d


@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_clean_fixes_have_no_warnings(arch):
    """The scenarios that are correct hot-patches produce no error and no warning at all."""
    extra = ("constants", "restrict_param", "ref_relocs") if arch == "x64" else ()
    for scenario in ("body_fix", "fix_globals", "fix_calls_unchanged", "no_change", *extra):
        res = sample_check(arch, scenario)
        assert [(f.rule, f.symbol) for f in res.findings if f.severity != "note"] == [], scenario


GATE_SCENARIOS = ("escape_callback", "fnptr_identity", "tls_ref", "hidden_layout", "init_once",
                  "switch_table", "constants", "restrict_param", "ref_relocs")


def test_every_gate_scenario_is_covered():
    """Each class of false verdict has its sample (samples/src/gatelib.c)."""
    covered = {d.name for d in SCENARIOS if d.parent.name == "x64"}
    assert set(GATE_SCENARIOS) <= covered
