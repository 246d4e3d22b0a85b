"""`pehp rules`: the list agrees with the rule index in docs/rules/README.md, and each
rule's page is the text of docs/rules/<ID>.md."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from pehotpatch.cli import main
from pehotpatch.report.pages import rule_page
from pehotpatch.rules import get_rule

DOCS = ROOT / "docs" / "rules"


def index_rows() -> list[tuple[str, str, str, str]]:
    """(id, severity, title, status) from the index table of docs/rules/README.md."""
    rows = []
    for line in (DOCS / "README.md").read_text().splitlines():
        m = re.match(r"\| \[(HP\d{3})\]\(HP\d{3}\.md\) \| (\w+) \| (.*) \| (\w+) \|$", line)
        if m:
            rows.append(m.groups())
    return rows


def test_list_matches_the_docs_index(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = index_rows()
    assert len(rows) >= 30 and len(out) == len(rows)
    for line, (rid, severity, title, status) in zip(out, rows, strict=True):
        m = re.match(r"(HP\d{3})  (\w+) {2,}(.*)$", line)
        assert m, line
        assert m.group(1) == rid and m.group(2) == severity
        if status == "retired":
            assert m.group(3).startswith(title + " (retired")
        else:
            assert m.group(3) == title


def test_every_page_is_the_docs_file(capsys):
    for rid, *_ in index_rows():
        assert main(["rules", rid.lower()]) == 0
        assert capsys.readouterr().out == (DOCS / f"{rid}.md").read_text(encoding="utf-8"), rid


def test_page_shows_the_hand_written_sections(capsys):
    assert main(["rules", "HP501"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# HP501 ") and "## What it means" in out and "## How to fix" in out


@pytest.mark.parametrize("arg", ["HP999", "nonsense", ""])
def test_unknown_rule_is_one_line_exit_2(capsys, arg):
    assert main(["rules", arg]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pehp: error: no rule") and "pehp rules" in err


def test_without_the_docs_the_page_is_the_registry_part(tmp_path):
    """An installed pehp without the source tree still prints the page's generated part,
    which is exactly how the real page begins."""
    r = get_rule("HP501")
    assert r is not None
    page = rule_page(r, docs_dir=tmp_path)
    real = (DOCS / "HP501.md").read_text(encoding="utf-8")
    assert page.startswith("# HP501 ") and real.startswith(page.rstrip("\n"))
    assert r.description.split()[0] in page
