"""`pehp rules`: every rule (ID, severity, title), or one rule's page."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

NAME = "rules"


def command(
    rule: Annotated[str | None, typer.Argument(help="A rule ID (HP501): print its page.")] = None,
) -> None:
    """List every rule (ID, default severity, title; retired ones say so), or print one rule's page."""
    from pehotpatch.report.pages import lookup, rule_page
    from pehotpatch.rules import RETIRED, all_rules

    if rule is not None:
        sys.stdout.write(rule_page(lookup(rule)))
        return
    for r in all_rules():
        extra = f" (retired: reported by {r.replaced_by})" if r.status == RETIRED and r.replaced_by else \
            (" (retired)" if r.status == RETIRED else "")
        sys.stdout.write(f"{r.id}  {r.severity:<7}  {r.title}{extra}\n")
