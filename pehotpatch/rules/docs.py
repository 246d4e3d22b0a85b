"""The rule pages (``docs/rules/<ID>.md``) and their index, written from the registry.

Each page begins with what the registry says about the rule: the title line, a table
(ID and name, default severity, family, status) and the rule's description as its
summary.  Everything from ``## What it means`` on is written by hand.  :func:`sync`
rewrites the generated part of every page and the index table in ``README.md``;
``python -m pehotpatch.rules.docs --check`` reports pages that disagree with the
registry (the tests run the same check).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from pehotpatch.rules import RETIRED, Rule, all_rules

HAND_WRITTEN_FROM = "## What it means"
INDEX_HEAD = "| rule | default severity | title | status |"
WIDTH = 88


def page_header(r: Rule) -> str:
    """The generated part of a rule's page, up to (not including) ``## What it means``."""
    status = r.status
    if r.status == RETIRED and r.replaced_by:
        status += f": reported by [{r.replaced_by}]({r.replaced_by}.md)"
    lines = [
        f"# {r.id} {r.title}",
        "",
        "| | |",
        "|---|---|",
        f"| ID | `{r.id}` (`{r.name}`) |",
        f"| default severity | {r.severity} |",
        f"| family | {r.family} |",
        f"| status | {status} |",
        "",
        *textwrap.wrap(r.description, WIDTH, break_on_hyphens=False),
        "",
        "",
    ]
    return "\n".join(lines)


def synced_page(text: str, r: Rule) -> str:
    """``text`` with its generated part replaced (a page without the hand-written
    sections gets them as empty headings)."""
    i = text.find(HAND_WRITTEN_FROM)
    rest = text[i:] if i >= 0 else (f"{HAND_WRITTEN_FROM}\n\n## Why the hot-patch engine needs it\n\n"
                                     "## Example\n\n## How to fix\n")
    return page_header(r) + rest


def index_table(rules: list[Rule]) -> str:
    rows = [INDEX_HEAD, "|---|---|---|---|"]
    rows += [f"| [{r.id}]({r.id}.md) | {r.severity} | {r.title} | {r.status} |" for r in rules]
    return "\n".join(rows) + "\n"


def synced_index(text: str, rules: list[Rule]) -> str:
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("| rule |")), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + index_table(rules)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "".join(lines[:start]) + index_table(rules) + "".join(lines[end:])


def sync(docs: Path, *, write: bool) -> list[str]:
    """The pages (and index) that differ from the registry; rewritten when ``write``."""
    rules = all_rules()
    stale: list[str] = []
    targets: list[tuple[Path, str]] = []
    for r in rules:
        p = docs / f"{r.id}.md"
        old = p.read_text(encoding="utf-8") if p.exists() else ""
        targets.append((p, synced_page(old, r) if old else synced_page("", r)))
    idx = docs / "README.md"
    targets.append((idx, synced_index(idx.read_text(encoding="utf-8") if idx.exists() else "", rules)))
    for p, new in targets:
        current = p.read_text(encoding="utf-8") if p.exists() else None
        if current != new:
            stale.append(p.name)
            if write:
                p.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pehotpatch.rules.docs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", default=str(Path(__file__).resolve().parents[2] / "docs" / "rules"))
    ap.add_argument("--check", action="store_true", help="only report stale pages (exit 1 if any)")
    a = ap.parse_args(argv)
    stale = sync(Path(a.docs), write=not a.check)
    for name in stale:
        print(f"{'stale' if a.check else 'rewrote'}: {name}")
    return 1 if (a.check and stale) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
