"""The patchability rules: a registry of rule descriptions and the checks that apply them.

Every rule has a stable ID (``HP`` + three digits; the hundreds digit is the family),
a default severity, a one-line title and a full description; its documentation is
``docs/rules/<ID>.md``.  A *checker* is a function of one rule family that reads a
:class:`~pehotpatch.rules.context.Context` (the diff plus everything derived from it)
and yields :class:`Finding` objects.

Families (one module each):

=======  =================================================  ==========================
family   what                                               module
=======  =================================================  ==========================
HP0xx    the check itself (invalid waivers)                 :mod:`.meta`
HP1xx    image-level: machine, kind, entry, TLS, sections   :mod:`.image`
HP2xx    exports and imports                                :mod:`.interface`
HP3xx    function signatures and type layouts               :mod:`.layout`
HP4xx    globals and data                                   :mod:`.data`
HP5xx    the hot-patch set against what changed             :mod:`.functions`
HP6xx    how patched code reaches globals                   :mod:`.refs`
HP7xx    whether the base functions can be redirected       :mod:`.prologue`
=======  =================================================  ==========================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.rules.context import Context
    from pehotpatch.waivers import Waiver

ERROR = "error"
WARNING = "warning"
NOTE = "note"
SEVERITIES = (ERROR, WARNING, NOTE)
SEVERITY_RANK = {ERROR: 0, WARNING: 1, NOTE: 2}

#: Where the rule pages live, relative to the repository root.
DOCS_PATH = "docs/rules"

FAMILY_MODULES = ("meta", "image", "interface", "layout", "data", "functions", "refs", "prologue")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str  # PascalCase identifier (SARIF reportingDescriptor.name)
    title: str  # one line
    severity: str  # default severity
    description: str  # what it means and why the engine needs it, a few sentences

    @property
    def family(self) -> str:
        return self.id[:3] + "xx"

    @property
    def doc_path(self) -> str:
        return f"{DOCS_PATH}/{self.id}.md"


@dataclass(slots=True)
class Finding:
    """One rule violation (or note) about one symbol.

    ``explanation`` is a chain of short sentences from the fact to its cause, e.g.
    ``["tick_rate is not in the hot-patch set", "its code changed: it inlines helper_x,
    which changed"]``; ``evidence`` holds JSON-serialisable facts (RVAs as hex strings,
    names, byte counts).
    """

    rule: str
    severity: str
    message: str
    symbol: str | None = None
    kind: str | None = None  # function, global, type, export, import, section, image, waiver
    explanation: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    waiver: Waiver | None = None  # set on waived findings

    @property
    def waived(self) -> bool:
        return self.waiver is not None

    def sort_key(self) -> tuple:
        return (SEVERITY_RANK.get(self.severity, 9), self.rule, self.symbol or "", self.message)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity,
            "title": RULES[self.rule].title if self.rule in RULES else "",
            "message": self.message,
            "symbol": self.symbol,
            "kind": self.kind,
            "explanation": list(self.explanation),
            "evidence": dict(self.evidence),
        }
        if self.waiver is not None:
            out["waiver"] = self.waiver.to_json()
        return out


RULES: dict[str, Rule] = {}
Checker = Callable[["Context"], Iterable[Finding]]
CHECKERS: list[tuple[str, Checker]] = []


def define(id: str, name: str, title: str, severity: str, description: str) -> Rule:
    """Register a rule description (IDs are unique and stable: never reuse one)."""
    if id in RULES:
        raise ValueError(f"rule {id} is defined twice")
    if severity not in SEVERITIES:
        raise ValueError(f"rule {id}: bad severity {severity!r}")
    r = Rule(id, name, title, severity, " ".join(description.split()))
    RULES[id] = r
    return r


def checker(family: str) -> Callable[[Checker], Checker]:
    """Register a check function for a rule family (``"HP1xx"``)."""

    def deco(fn: Checker) -> Checker:
        CHECKERS.append((family, fn))
        return fn

    return deco


def finding(rule_id: str, message: str, *, symbol: str | None = None, kind: str | None = None,
            explanation: Iterable[str] = (), evidence: dict[str, Any] | None = None,
            severity: str | None = None) -> Finding:
    """A finding of a registered rule, at the rule's default severity unless told."""
    r = RULES[rule_id]
    sev = severity or r.severity
    if sev not in SEVERITIES:
        raise ValueError(f"bad severity {sev!r}")
    return Finding(rule_id, sev, message, symbol, kind, list(explanation), dict(evidence or {}))


def load_all() -> None:
    """Import every family module (each registers its rules and checkers once)."""
    for mod in FAMILY_MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def all_rules() -> list[Rule]:
    load_all()
    return [RULES[k] for k in sorted(RULES)]


def get_rule(rule_id: str) -> Rule | None:
    load_all()
    return RULES.get(rule_id)


def run_rules(ctx: Context) -> list[Finding]:
    """Every finding of every registered checker, in a stable order."""
    load_all()
    out: list[Finding] = []
    for _family, fn in CHECKERS:
        out.extend(fn(ctx))
    for f in out:
        if f.rule not in RULES:  # pragma: no cover - a checker bug
            raise ValueError(f"finding for an unregistered rule {f.rule}")
    out.sort(key=Finding.sort_key)
    return out


def hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"
