"""Waivers: accepted findings, each with a reason and (usually) an end date.

A waivers file is TOML::

    [[waiver]]
    rule = "HP404"
    symbol = "g_new"            # the finding's symbol; "*" for every symbol of the rule;
                                # leave out for findings without a symbol (image-level)
    justification = "initialised by __PatchMainCallout__"
    expires = 2027-01-01        # a TOML date or "YYYY-MM-DD"; the waiver stops applying
                                # on that day

A waived finding is still reported (as waived, with the waiver) but does not count
toward the verdict.  A waiver that cannot be used (no justification, expired, bad
date, unknown or unwaivable rule, unknown key) is ignored and reported as an HP001
error, so a stale waiver fails the gate rather than hiding something.
"""

from __future__ import annotations

import datetime as _dt
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pehotpatch.errors import InputError, read_input_text

KEYS = frozenset({"rule", "symbol", "justification", "expires"})
UNWAIVABLE = frozenset({"HP001"})


@dataclass(frozen=True, slots=True)
class Waiver:
    index: int  # 1-based position in the file
    rule: str
    symbol: str | None
    justification: str | None
    expires: _dt.date | None
    source: str | None = None
    problem: str | None = None  # why it cannot be used (set by validate)

    @property
    def label(self) -> str:
        sym = f" {self.symbol}" if self.symbol else ""
        return f"waiver #{self.index} ({self.rule or '?'}{sym})"

    def matches(self, rule: str, symbol: str | None) -> bool:
        if self.rule != rule:
            return False
        if self.symbol == "*":
            return True
        return self.symbol == symbol

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rule": self.rule,
            "symbol": self.symbol,
            "justification": self.justification,
            "expires": self.expires.isoformat() if self.expires else None,
            "source": self.source,
        }


def load_waivers(path: str | os.PathLike[str]) -> list[Waiver]:
    """Read a waivers file; raise :class:`InputError` when it is not one."""
    p = Path(path)
    text = read_input_text(p, "TOML waivers file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not a valid TOML waivers file: {exc}", p) from None
    return parse_waivers(data, str(p))


def parse_waivers(data: dict[str, Any], source: str | None = None) -> list[Waiver]:
    """Waivers from parsed TOML (``{"waiver": [...]}``); problems are recorded, not raised,
    except for a file whose shape is not a waivers file at all."""
    extra = sorted(set(data) - {"waiver"})
    if extra:
        raise InputError(f"unexpected top-level key(s) {', '.join(extra)}: only [[waiver]] tables "
                         "belong in a waivers file", source)
    items = data.get("waiver", [])
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise InputError("'waiver' must be an array of tables ([[waiver]])", source)
    out = []
    for i, item in enumerate(items, 1):
        out.append(_one(i, item, source))
    return out


def _one(i: int, item: dict[str, Any], source: str | None) -> Waiver:
    problems = []
    unknown = sorted(set(item) - KEYS)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}")
    rule = item.get("rule")
    if not isinstance(rule, str) or not rule.strip():
        problems.append("no rule")
        rule = ""
    symbol = item.get("symbol")
    if symbol is not None and (not isinstance(symbol, str) or not symbol.strip()):
        problems.append("symbol must be a non-empty string")
        symbol = None
    just = item.get("justification")
    if just is not None and not isinstance(just, str):
        problems.append("justification must be a string")
        just = None
    if not just or not just.strip():
        problems.append("no justification")
    exp = item.get("expires")
    expires: _dt.date | None = None
    if isinstance(exp, _dt.datetime):
        expires = exp.date()
    elif isinstance(exp, _dt.date):
        expires = exp
    elif isinstance(exp, str):
        try:
            expires = _dt.date.fromisoformat(exp.strip())
        except ValueError:
            problems.append(f"expires {exp!r} is not a date (YYYY-MM-DD)")
    elif exp is not None:
        problems.append("expires must be a date (YYYY-MM-DD)")
    return Waiver(i, rule.strip(), symbol.strip() if symbol else None, just, expires, source,
                  "; ".join(problems) or None)


def validate(waivers: Iterable[Waiver], known_rules: Iterable[str], today: _dt.date,
             retired: dict[str, str | None] | None = None) -> list[Waiver]:
    """The waivers with ``problem`` filled in for those that cannot be used today.

    ``retired`` maps retired rule IDs to the rule that now reports their findings (or
    None); a waiver for one is a problem that says so."""
    known = set(known_rules)
    retired = retired or {}
    out = []
    for w in waivers:
        problems = [w.problem] if w.problem else []
        if w.rule and w.rule in UNWAIVABLE:
            problems.append(f"{w.rule} cannot be waived")
        elif w.rule and w.rule in retired:
            now = retired[w.rule]
            problems.append(f"{w.rule} is retired" + (f" (its findings are now {now})" if now else ""))
        elif w.rule and w.rule not in known:
            problems.append(f"unknown rule {w.rule}")
        if w.expires is not None and w.expires <= today:
            problems.append(f"expired on {w.expires.isoformat()}")
        out.append(Waiver(w.index, w.rule, w.symbol, w.justification, w.expires, w.source,
                          "; ".join(problems) or None))
    return out
