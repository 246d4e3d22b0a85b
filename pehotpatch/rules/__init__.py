"""The patchability rules: a registry of rule descriptions and the checks that apply them.

Every rule has a stable ID (``HP`` + three digits; the hundreds digit is the family),
a default severity, a one-line title, a full description and a status (``stable``, or
``retired``: a retired rule is never emitted and its ID is never reused); its
documentation is ``docs/rules/<ID>.md``, whose title, severity, status and summary are
written from this registry (:mod:`.docs`).  A *checker* is a function of one rule
family that reads a :class:`~pehotpatch.rules.context.Context` (the diff plus
everything derived from it), declares the rule IDs it can emit, and yields
:class:`Finding` objects.

Registration is explicit and complete when ``pehotpatch.rules`` is imported: the end
of this module imports every family module, in :data:`FAMILY_MODULES` order, and
checks that each checker emits only registered, stable rules and that every stable
rule has an emitter.

Families (one module each):

=======  =================================================  ==========================
family   what                                               module
=======  =================================================  ==========================
HP0xx    the check itself (invalid waivers)                 :mod:`.meta`
HP1xx    image-level: machine, kind, entry, TLS, sections   :mod:`.image`
HP109    changes in code that runs only at load             :mod:`.runonce`
HP2xx    exports and imports                                :mod:`.interface`
HP3xx    function signatures and type layouts               :mod:`.layout`
HP4xx    globals and data                                   :mod:`.data`
HP5xx    the hot-patch set against what changed             :mod:`.functions`
HP6xx    how patched code reaches globals                   :mod:`.refs`
HP7xx    whether the base functions can be redirected       :mod:`.prologue`
HP705-6  decisions on pairs that no name confirms           :mod:`.pairing`
=======  =================================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pehotpatch.vocab import Severity

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.rules.context import Context
    from pehotpatch.waivers import Waiver

STABLE = "stable"
RETIRED = "retired"
STATUSES = (STABLE, RETIRED)

ERROR = Severity.ERROR
WARNING = Severity.WARNING
NOTE = Severity.NOTE
SEVERITIES = (ERROR, WARNING, NOTE)
SEVERITY_RANK: dict[str, int] = {ERROR: 0, WARNING: 1, NOTE: 2}

#: Where the rule pages live, relative to the repository root.
DOCS_PATH = "docs/rules"

FAMILY_MODULES = ("meta", "image", "runonce", "interface", "layout", "data", "functions", "refs", "prologue",
                  "pairing")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str  # PascalCase identifier (SARIF reportingDescriptor.name)
    title: str  # one line
    severity: Severity  # default severity
    description: str  # what it means and why the engine needs it, a few sentences
    status: str = STABLE
    replaced_by: str | None = None  # for a retired rule: the rule that now reports it

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
    severity: Severity
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


@dataclass(frozen=True, slots=True)
class CheckerEntry:
    family: str
    fn: Checker
    emits: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__name__}"


CHECKERS: list[CheckerEntry] = []

#: Rules emitted by :mod:`pehotpatch.check` itself rather than by a checker.
EMITTED_BY_CHECK = frozenset({"HP001"})


def define(id: str, name: str, title: str, severity: str, description: str, *,
           status: str = STABLE, replaced_by: str | None = None) -> Rule:
    """Register a rule description (IDs are unique and stable: never reuse one)."""
    if id in RULES:
        raise ValueError(f"rule {id} is defined twice")
    if severity not in SEVERITIES:
        raise ValueError(f"rule {id}: bad severity {severity!r}")
    if status not in STATUSES:
        raise ValueError(f"rule {id}: bad status {status!r}")
    r = Rule(id, name, title, Severity(severity), " ".join(description.split()), status, replaced_by)
    RULES[id] = r
    return r


def checker(family: str, emits: Iterable[str]) -> Callable[[Checker], Checker]:
    """Register a check function for a rule family (``"HP1xx"``) that emits ``emits``."""
    ids = frozenset(emits)

    def deco(fn: Checker) -> Checker:
        CHECKERS.append(CheckerEntry(family, fn, ids))
        return fn

    return deco


def finding(rule_id: str, message: str, *, symbol: str | None = None, kind: str | None = None,
            explanation: Iterable[str] = (), evidence: dict[str, Any] | None = None,
            severity: str | None = None) -> Finding:
    """A finding of a registered rule, at the rule's default severity unless told."""
    r = RULES[rule_id]
    if r.status != STABLE:
        raise ValueError(f"rule {rule_id} is {r.status}")
    sev = severity or r.severity
    if sev not in SEVERITIES:
        raise ValueError(f"bad severity {sev!r}")
    return Finding(rule_id, Severity(sev), message, symbol, kind, list(explanation), dict(evidence or {}))


def all_rules() -> list[Rule]:
    """Every registered rule, retired ones included, by ID."""
    return [RULES[k] for k in sorted(RULES)]


def get_rule(rule_id: str) -> Rule | None:
    return RULES.get(rule_id)


def run_rules(ctx: Context) -> list[Finding]:
    """Every finding of every registered checker, in a stable order."""
    out: list[Finding] = []
    for entry in CHECKERS:
        for f in entry.fn(ctx):
            if f.rule not in entry.emits:  # pragma: no cover - a checker bug
                raise ValueError(f"{entry.name} emitted {f.rule}, which it does not declare")
            out.append(f)
    out.sort(key=Finding.sort_key)
    return out


def validate_registry() -> list[str]:
    """Problems of the registry: undeclared or retired emitted rules, stable rules
    without an emitter, checkers outside their family (empty when all is well)."""
    problems: list[str] = []
    emitted: set[str] = set(EMITTED_BY_CHECK)
    for entry in CHECKERS:
        for rid in sorted(entry.emits):
            r = RULES.get(rid)
            if r is None:
                problems.append(f"{entry.name} declares {rid}, which is not defined")
            elif r.status != STABLE:
                problems.append(f"{entry.name} declares {rid}, which is {r.status}")
            elif r.family != entry.family:
                problems.append(f"{entry.name} ({entry.family}) declares {rid} of {r.family}")
        emitted |= entry.emits
    for r in RULES.values():
        if r.status == STABLE and r.id not in emitted:
            problems.append(f"{r.id} is stable but no checker emits it")
        if r.status == RETIRED and r.replaced_by is not None and r.replaced_by not in RULES:
            problems.append(f"{r.id} is replaced by {r.replaced_by}, which is not defined")
    return problems


def hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


# ---- explicit, complete registration ------------------------------------------------------
from pehotpatch.rules import (  # noqa: E402  (the family modules use the names above)
    data,
    functions,
    image,
    interface,
    layout,
    meta,
    pairing,
    prologue,
    refs,
    runonce,
)

_FAMILY_IMPORTS = (meta, image, runonce, interface, layout, data, functions, refs, prologue, pairing)
assert tuple(m.__name__.rpartition(".")[2] for m in _FAMILY_IMPORTS) == FAMILY_MODULES
_problems = validate_registry()
if _problems:  # pragma: no cover - a programming error, caught by the tests
    raise RuntimeError("rule registry: " + "; ".join(_problems))
