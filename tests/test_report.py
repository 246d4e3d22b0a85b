"""`pehp report` and `pehp check --report`: one self-contained, deterministic HTML file with
the verdict, the findings and their rule pages, the changed functions side by side (the
`diff -v` normalisation), the patch plan as a graph, image changes, pairing and inputs."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import ROOT

from pehotpatch.cli import main
from pehotpatch.report.model import CHANGE, DELETE, EQUAL, INSERT, side_by_side

S = Path("samples") / "x64"


def hp(d: Path) -> list[str]:
    return ["--objects", str(d / "intermediate.objs"), "--functions-file", str(d / "hotpatch_functions.txt")]


def pair(d: Path) -> list[str]:
    return [str(d / "base.dll"), str(d / "intermediate.dll")]


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def report(tmp_path: Path, d: Path, name: str = "r.html", *extra: str) -> str:
    out = tmp_path / name
    assert main(["report", *pair(d), *hp(d), "-o", str(out), "-q", *extra]) == 0
    return out.read_text(encoding="utf-8")


class Page(HTMLParser):
    """Tags, attributes and the text of table cells, by class of their row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[tuple[str, list[str]]] = []  # (row class, cell texts) of listing tables
        self._in_listing = 0
        self._row: list[str] | None = None
        self._cls = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("class") == "listing":
            self._in_listing += 1
        elif tag == "tr" and self._in_listing:
            self._row, self._cls = [], a.get("class") or ""
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table" and self._in_listing:
            self._in_listing -= 1
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._cls:
                self.rows.append((self._cls, self._row))
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    return p


def test_side_by_side_alignment():
    a = ["push rbx", "mov eax, 1", "ret"]
    b = ["push rbx", "mov eax, 2", "nop", "ret", "int3"]
    assert [(r.kind, r.left, r.right) for r in side_by_side(a, b)] == [
        (EQUAL, "push rbx", "push rbx"), (CHANGE, "mov eax, 1", "mov eax, 2"), (INSERT, None, "nop"),
        (EQUAL, "ret", "ret"), (INSERT, None, "int3")]
    assert [r.kind for r in side_by_side(["a", "b"], [])] == [DELETE, DELETE]


def test_listings_are_the_diff_v_normalisation(tmp_path, capsys):
    """The report's changed lines are exactly the -/+ lines of `pehp diff -v`."""
    d = S / "inline_pulls"
    page = parse(report(tmp_path, d))
    assert main(["diff", *pair(d), *hp(d), "-v", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    minus = [ln[1:] for f in doc["functions"] for ln in f.get("unified", [])
             if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for f in doc["functions"] for ln in f.get("unified", [])
            if ln.startswith("+") and not ln.startswith("+++")]
    assert minus and plus
    left = [cells[1] for cls, cells in page.rows if cls in (CHANGE, DELETE)]
    right = [cells[3] for cls, cells in page.rows if cls in (CHANGE, INSERT)]
    assert sorted(left) == sorted(minus) and sorted(right) == sorted(plus)
    # references by name, on both sides
    assert any("[__ref_g_last_value]" in cells[3] for _, cells in page.rows)
    assert any("call clamp_value" in cells[1] for _, cells in page.rows)


def test_self_contained_and_no_script(tmp_path):
    html = report(tmp_path, S / "inline_pulls")
    page = parse(html)
    tags = {t for t, _ in page.tags}
    assert "script" not in tags and "iframe" not in tags and "img" not in tags
    for tag, attrs in page.tags:
        for k in ("src", "href"):
            v = attrs.get(k)
            if v is None or tag == "a" and (v.startswith("#") or v.startswith("https://")):
                continue
            assert tag == "link" and v == "data:,", (tag, attrs)  # the empty favicon: no request
    assert "@import" not in html and "url(" not in html.replace("url(#arrow-", "")


def test_same_inputs_same_bytes_and_inputs_hashed(tmp_path):
    d = S / "fix_globals"
    one = report(tmp_path, d, "a.html")
    two = report(tmp_path, d, "b.html")
    assert one == two
    for f in [d / "base.dll", d / "intermediate.dll", d / "base.pdb", d / "hotpatch_functions.txt",
              *sorted((d / "intermediate.objs").iterdir())]:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        assert re.search(rf"<td>{re.escape(str(f))}</td><td>{f.stat().st_size}</td><td>{digest}</td>", one), f


def test_plan_graph_and_tables_match_pehp_plan(tmp_path, capsys):
    d = S / "fix_globals"
    html = report(tmp_path, d)
    assert main(["plan", *pair(d), *hp(d), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert plan["forward"] and plan["data"]
    for f in plan["forward"]:
        assert f'<g class="node node-base-fn"><title>{f["function"]}: base {f["base_rva"]}</title>' in svg
        assert f'<g class="node node-patched"><title>{f["function"]}: patch image {f["patch_rva"]}</title>' in svg
    for b in plan["data"]:
        assert f'<title>{b["slot"]}: slot {b["slot_rva"]}</title>' in svg
        assert f'<td>{b["slot"]}</td><td>{b["slot_rva"]}</td><td>{b["target"]}</td>' in html
    assert svg.count('class="edge edge-forward"') == len(plan["forward"])
    assert svg.count('class="edge edge-data"') == len(plan["data"])
    assert svg.count('class="edge edge-backward"') == len(plan["backward"])


def test_image_changes_and_rule_pages(tmp_path):
    html = report(tmp_path, S / "new_export")
    assert "<td>exports added</td><td>telemetry_clear_error</td>" in html
    page = (ROOT / "docs" / "rules" / "HP201.md").read_text(encoding="utf-8")
    first_heading = re.search(r"^## (.+)$", page, re.M)
    assert first_heading and f"<h2>{first_heading.group(1)}</h2>" in html
    assert '<section class="rule-page" id="rule-HP201">' in html and 'href="#rule-HP201"' in html
    assert "HotPatchTableOffset" in html  # load configuration, both sides


def test_pairing_summary(tmp_path, capsys):
    d = S / "inline_pulls"
    html = report(tmp_path, d)
    assert main(["diff", *pair(d), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    paired = doc["summary"]["paired"]
    assert f"<td>paired functions</td><td>{paired}</td>" in html
    m = re.search(r'<table class="pairing">.*?</table>', html, re.S)
    assert m and sum(int(x) for x in re.findall(r"<td>(\d+)</td>", m.group(0))) == paired


def test_check_report_keeps_the_exit_code(tmp_path, capsys):
    d = S / "inline_pulls"
    out = tmp_path / "c.html"
    assert main(["check", *pair(d), *hp(d), "--report", str(out), "-q"]) == 1
    assert "verdict: REJECTED" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == report(tmp_path, d, "r.html")


def test_errors_are_one_line_and_nothing_written(tmp_path, capsys):
    d = S / "body_fix"
    assert main(["report", *pair(d), "-o", str(d / "base.dll")]) == 2
    assert "refusing to write the output over an input" in capsys.readouterr().err
    out = tmp_path / "r.html"
    out.write_text("keep")
    assert main(["report", *pair(d), "-o", str(out)]) == 2
    assert out.read_text() == "keep" and capsys.readouterr().err.startswith("pehp: error: ")
    bad = tmp_path / "bad.dll"
    bad.write_bytes(b"MZ nope")
    assert main(["report", str(bad), str(d / "intermediate.dll"), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pehp: error: {bad}")
    assert not (tmp_path / "x.html").exists()
    assert main(["report", *pair(d)]) == 2  # -o is required
