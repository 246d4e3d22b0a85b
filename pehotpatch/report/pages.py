"""The rule pages (``docs/rules/<ID>.md``), for `pehp rules` and the review report.

The pages live in the pehp source tree.  Where pehp runs without it (an installed wheel),
a rule's page is the part the registry writes (title, table, summary:
:func:`pehotpatch.rules.docs.page_header`), which is what the page begins with anyway.
"""

from __future__ import annotations

from pathlib import Path

from pehotpatch.errors import UsageError
from pehotpatch.rules import DOCS_PATH, Rule, all_rules, get_rule

#: The docs/rules folder of the source tree pehp runs from (may be absent).
DOCS_DIR = Path(__file__).resolve().parents[2] / DOCS_PATH


def lookup(rule_id: str) -> Rule:
    """The rule with this ID (case-insensitive); a usage error naming the known range."""
    r = get_rule(rule_id.strip().upper())
    if r is None:
        ids = [x.id for x in all_rules()]
        raise UsageError(f"no rule {rule_id!r} (rules are {ids[0]} to {ids[-1]}: `pehp rules` lists them)")
    return r


def rule_page(r: Rule, docs_dir: Path | None = None) -> str:
    """The rule's page as Markdown: the file when the docs are there, else the registry's part."""
    p = (docs_dir or DOCS_DIR) / f"{r.id}.md"
    try:
        return p.read_text(encoding="utf-8")
    except OSError:
        from pehotpatch.rules.docs import page_header

        return page_header(r).rstrip("\n") + "\n"
