"""SARIF 2.1.0 output: valid against the official schema, complete, deterministic."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest
from test_check_support import sample_check

from pehotpatch.render.sarif import artifact_uri, sarif_log
from pehotpatch.rules import all_rules
from pehotpatch.waivers import parse_waivers

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-2.1.0.json").read_text())


def validate(doc):
    jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(doc)


def test_vendored_schema_is_the_official_one():
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert SCHEMA["id"].endswith("/sarif-schema-2.1.0.json")


def test_invalid_documents_are_rejected():
    """The validator really validates: a result without a message fails."""
    doc = sarif_log([sample_check("x64", "new_export")])
    bad = json.loads(json.dumps(doc))
    del bad["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


@pytest.mark.parametrize("arch,scenario", [("x64", "inline_pulls"), ("x64", "struct_layout"),
                                           ("x86", "direct_global_access"), ("arm64", "prologue_not_patchable"),
                                           ("x64", "no_change")])
def test_sample_logs_validate(arch, scenario):
    res = sample_check(arch, scenario)
    doc = sarif_log([res])
    validate(doc)
    run = doc["runs"][0]
    assert doc["version"] == "2.1.0" and run["tool"]["driver"]["name"] == "pehp"
    assert len(run["results"]) == len(res.findings)
    for r, f in zip(run["results"], res.findings, strict=True):
        assert r["ruleId"] == f.rule and r["level"] == f.severity
        assert run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == f.rule
        loc = r["locations"][0]
        assert loc["physicalLocation"]["artifactLocation"]["uri"] == artifact_uri(res.intermediate)
        if f.symbol:
            assert loc["logicalLocations"][0]["name"] == f.symbol
        assert r["properties"]["explanation"] == f.explanation
        assert r["message"]["text"].startswith(f.message)


def test_rule_metadata():
    doc = sarif_log([sample_check("x64", "body_fix")])
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [r.id for r in all_rules()]
    for r, meta in zip(rules, all_rules(), strict=True):
        assert r["name"] == meta.name and r["shortDescription"]["text"] == meta.title
        assert r["fullDescription"]["text"] == meta.description
        # SARIF wants an absolute helpUri: none unless PEHP_DOCS_URL says where the pages are
        assert "helpUri" not in r
        assert f"pehp rules {meta.id}" in r["help"]["text"] and meta.doc_path in r["help"]["text"]
        assert r["defaultConfiguration"]["level"] == meta.severity
        assert (Path(__file__).parents[1] / meta.doc_path).is_file(), f"missing page {meta.doc_path}"
    assert doc["runs"][0]["tool"]["driver"]["informationUri"].startswith("https://")


def test_docs_url_makes_help_uris_absolute(monkeypatch):
    monkeypatch.setenv("PEHP_DOCS_URL", "https://example.org/pehp/docs/rules")
    doc = sarif_log([sample_check("x64", "body_fix")])
    assert doc["runs"][0]["tool"]["driver"]["rules"][0]["helpUri"] == "https://example.org/pehp/docs/rules/HP001.md"


def test_relative_docs_url_is_refused(monkeypatch):
    from pehotpatch.errors import UsageError

    monkeypatch.setenv("PEHP_DOCS_URL", "docs/rules")
    with pytest.raises(UsageError, match="absolute URI"):
        sarif_log([sample_check("x64", "body_fix")])


def test_waived_findings_carry_suppressions():
    w = parse_waivers({"waiver": [{"rule": "HP201", "symbol": "telemetry_clear_error",
                                   "justification": "probed dynamically", "expires": "2027-01-01"}]})
    res = sample_check("x64", "new_export", waivers=w, today=dt.date(2026, 1, 1))
    doc = sarif_log([res])
    validate(doc)
    (r,) = [r for r in doc["runs"][0]["results"] if r["ruleId"] == "HP201"]
    (s,) = r["suppressions"]
    assert s["kind"] == "external" and s["justification"] == "probed dynamically"
    assert s["properties"]["expires"] == "2027-01-01"
    assert doc["runs"][0]["properties"]["verdicts"] == {artifact_uri(res.intermediate): "patchable"}


def test_several_images_one_run_and_errors_as_notifications():
    a, b = sample_check("x64", "new_export"), sample_check("x86", "new_import")
    doc = sarif_log([b, a], errors=[("broken/x.dll", "not a PE image")])
    validate(doc)
    (run,) = doc["runs"]
    uris = [x["location"]["uri"] for x in run["artifacts"]]
    assert uris == sorted(uris) and len(uris) == 2
    assert run["invocations"][0]["executionSuccessful"] is False
    assert "not a PE image" in run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]
    per = sarif_log([a, b], per_image_runs=True)
    validate(per)
    assert len(per["runs"]) == 2


def test_deterministic_and_stable_fingerprints():
    res = sample_check("x64", "inline_pulls")
    one = json.dumps(sarif_log([res]), sort_keys=False)
    two = json.dumps(sarif_log([dataclasses.replace(res)]), sort_keys=False)
    assert one == two
    assert "Utc" not in one  # no timestamps
    fps = [r["partialFingerprints"]["pehpFinding/v1"] for r in json.loads(one)["runs"][0]["results"]]
    assert len(set(fps)) == len(fps)


def test_artifact_uri():
    assert artifact_uri("out/my image.dll") == "out/my%20image.dll"
    assert artifact_uri(str(Path.cwd() / "a" / "b.dll")) == "a/b.dll"
    assert artifact_uri("/definitely/elsewhere/c.dll").startswith("file:///")
