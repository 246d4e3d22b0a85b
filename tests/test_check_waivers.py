"""Waivers: what they accept, and the ways a waiver itself is an error (HP001)."""

from __future__ import annotations

import datetime as dt

import pytest
from test_check_support import of, sample_check

from pehotpatch.check import PATCHABLE, REJECTED
from pehotpatch.errors import InputError
from pehotpatch.waivers import load_waivers, parse_waivers

TODAY = dt.date(2026, 6, 1)


def waivers(*items):
    return parse_waivers({"waiver": list(items)}, "waivers.toml")


def run(scenario="new_export", *items, arch="x64"):
    return sample_check(arch, scenario, waivers=waivers(*items), today=TODAY)


OK = {"rule": "HP201", "symbol": "telemetry_clear_error", "justification": "consumers probe with GetProcAddress",
      "expires": dt.date(2027, 1, 1)}


def test_valid_waiver_accepts_the_finding_but_still_reports_it():
    res = run("new_export", OK)
    assert res.verdict == PATCHABLE and res.exit_code == 0
    assert not of(res, "HP201")
    (w,) = of(res, "HP201", waived=True)
    assert w.waiver.justification == OK["justification"] and w.waiver.expires == dt.date(2027, 1, 1)
    assert res.unused_waivers == []


def test_expiry_as_string_and_without_expiry():
    assert run("new_export", {**OK, "expires": "2027-01-01"}).verdict == PATCHABLE
    no_exp = dict(OK)
    del no_exp["expires"]
    assert run("new_export", no_exp).verdict == PATCHABLE


@pytest.mark.parametrize("change,problem", [
    ({"justification": ""}, "no justification"),
    ({"justification": None}, "no justification"),
    ({"expires": dt.date(2026, 5, 31)}, "expired on 2026-05-31"),
    ({"expires": TODAY}, "expired on 2026-06-01"),  # a waiver stops applying on its expiry day
    ({"expires": "next year"}, "is not a date"),
    ({"rule": "HP999"}, "unknown rule HP999"),
    ({"rule": "HP001"}, "cannot be waived"),
    ({"justfication": "typo"}, "unknown key(s) justfication"),
])
def test_invalid_waiver_is_hp001_and_does_not_apply(change, problem):
    item = {k: v for k, v in {**OK, **change}.items() if v is not None}
    res = run("new_export", item)
    assert res.verdict == REJECTED
    (bad,) = of(res, "HP001")
    assert bad.severity == "error" and problem in bad.message
    if item.get("rule") == "HP201":
        assert of(res, "HP201"), "the finding the invalid waiver meant to hide still counts"


def test_wildcard_symbol_and_symbol_less_findings():
    res = run("prologue_not_patchable",
              {"rule": "HP501", "symbol": "*", "justification": "the base was built without /hotpatch"},
              {"rule": "HP704", "justification": "image flag checked elsewhere"},
              arch="arm64")
    assert not of(res, "HP501") and not of(res, "HP704")
    assert of(res, "HP704", waived=True)
    assert of(res, "HP703")  # not waived


def test_waiver_for_another_symbol_does_not_apply_and_is_unused():
    res = run("new_export", {**OK, "symbol": "something_else"})
    assert res.verdict == REJECTED and of(res, "HP201")
    assert [w.symbol for w in res.unused_waivers] == ["something_else"]


def test_load_waivers_file(tmp_path):
    p = tmp_path / "w.toml"
    p.write_text('[[waiver]]\nrule = "HP404"\nsymbol = "g_new"\njustification = "set by callout"\n'
                 'expires = 2027-01-01\n')
    (w,) = load_waivers(p)
    assert (w.rule, w.symbol, w.expires, w.problem) == ("HP404", "g_new", dt.date(2027, 1, 1), None)


@pytest.mark.parametrize("text,msg", [
    ("[[waiver]\nrule=", "not a valid TOML"),
    ("waiver = 3\n", "array of tables"),
    ('[[waivers]]\nrule = "HP404"\n', "unexpected top-level key"),
])
def test_malformed_waivers_file_is_an_input_error(tmp_path, text, msg):
    p = tmp_path / "w.toml"
    p.write_text(text)
    with pytest.raises(InputError, match=msg):
        load_waivers(p)


def test_missing_waivers_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_waivers(tmp_path / "nope.toml")
