"""SARIF 2.1.0 output for `pehp check` and `pehp check-tree`.

One run (tool ``pehp``) holds every rule's metadata and every result; GitHub code
scanning rejects several runs of one tool in one upload, so ``check-tree`` puts the
results of all images into that one run too (``per_image_runs=True`` gives the
one-run-per-image form).  The artifact of a result is the intermediate image; the
function, global or type concerned is its logical location.  Waived findings carry a
``suppressions`` entry.  The output is deterministic: no timestamps, no absolute
paths that were not given, stable ordering.

SARIF 2.1.0 requires ``helpUri`` to be an absolute URI: each rule's ``helpUri`` is
``$PEHP_DOCS_URL/<ID>.md`` when the ``PEHP_DOCS_URL`` environment variable (or
``docs_url``) names where the docs/rules folder of the pehp version in use is published
(an absolute URI, e.g. ``https://...``); without it the rules carry no ``helpUri`` and
their ``help`` (text and markdown) is all there is.  A relative value is refused (it would
make the log invalid).  The tool's ``informationUri`` is the package's page.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from pehotpatch.check import CheckResult
from pehotpatch.errors import UsageError
from pehotpatch.rules import Finding, Rule, all_rules
from pehotpatch.version import __version__

SARIF_VERSION = "2.1.0"
#: The tool's home (``tool.driver.informationUri``): the package on PyPI.
INFORMATION_URI = "https://pypi.org/project/pehotpatch/"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
FINGERPRINT_KEY = "pehpFinding/v1"

_LOGICAL_KIND = {"function": "function", "global": "variable", "type": "type", "export": "function",
                 "import": "function", "section": "resource", "image": "module", "waiver": "object"}


def docs_base(explicit: str | None = None) -> str | None:
    """The absolute URI the rule pages are under (ending in ``/``), or None when none is
    configured.  A relative reference is a usage error: SARIF wants absolute help URIs."""
    base = explicit if explicit is not None else os.environ.get("PEHP_DOCS_URL", "")
    base = base.strip()
    if not base:
        return None
    if not urlsplit(base).scheme:
        raise UsageError(f"PEHP_DOCS_URL must be an absolute URI (e.g. https://host/docs/rules), not {base!r}")
    return base if base.endswith("/") else base + "/"


def artifact_uri(path: str) -> str:
    """A URI reference for an image path: relative paths stay relative (POSIX, escaped);
    absolute ones become relative to the working directory when under it, else file URIs."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_uri()
    posix = PurePosixPath(*p.parts).as_posix() if p.parts else "."
    return quote(posix, safe="/-._~!$&'()*+,;=:@")


def rule_descriptor(r: Rule, base: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "name": r.name,
        "shortDescription": {"text": r.title},
        "fullDescription": {"text": r.description},
    }
    page = f"`pehp rules {r.id}` prints the rule's page ({r.doc_path} in the pehp sources)."
    link = page
    if base is not None:
        out["helpUri"] = f"{base}{r.id}.md"
        link = f"See [{r.doc_path}]({base}{r.id}.md)."
    out["help"] = {"text": f"{r.description} {page}",
                   "markdown": f"**{r.id} {r.title}**\n\n{r.description}\n\n{link}"}
    out["defaultConfiguration"] = {"level": r.severity}
    out["properties"] = {"tags": ["hot-patch", r.family]}
    return out


def _fingerprint(f: Finding, uri: str) -> str:
    key = "\0".join((f.rule, f.kind or "", f.symbol or "", f.message if not f.symbol else "", uri))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _result(f: Finding, rule_index: dict[str, int], uri: str, art_index: int, res: CheckResult) -> dict[str, Any]:
    text = f.message
    if f.explanation:
        text += "\n" + "\n".join(f"- {e}" for e in f.explanation)
    loc: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": uri, "index": art_index},
            # A binary has no lines; code scanning wants a region, so the whole file is
            # reported at line 1.  The symbol is the logical location.
            "region": {"startLine": 1},
        }
    }
    if f.symbol:
        loc["logicalLocations"] = [{"name": f.symbol, "kind": _LOGICAL_KIND.get(f.kind or "", "object")}]
    out: dict[str, Any] = {
        "ruleId": f.rule,
        "ruleIndex": rule_index[f.rule],
        "level": f.severity,
        "message": {"text": text},
        "locations": [loc],
        "partialFingerprints": {FINGERPRINT_KEY: _fingerprint(f, uri)},
        "properties": {
            "symbol": f.symbol,
            "symbolKind": f.kind,
            "explanation": list(f.explanation),
            "evidence": dict(f.evidence),
            "base": res.base,
            "intermediate": res.intermediate,
        },
    }
    if f.waiver is not None:
        w = f.waiver
        out["suppressions"] = [{
            "kind": "external",
            "status": "accepted",
            "justification": w.justification or "",
            "properties": {"expires": w.expires.isoformat() if w.expires else None,
                           "waiver": w.index, "source": w.source},
        }]
    return out


def sarif_run(results: Sequence[CheckResult], errors: Sequence[tuple[str, str]] = (),
              *, docs_url: str | None = None) -> dict[str, Any]:
    """One run with every rule and the results of every image (sorted by image path)."""
    base = docs_base(docs_url)
    rules = all_rules()
    rule_index = {r.id: i for i, r in enumerate(rules)}
    ordered = sorted(results, key=lambda r: (r.intermediate, r.base))
    artifacts: list[dict[str, Any]] = []
    out_results: list[dict[str, Any]] = []
    verdicts: dict[str, str] = {}
    for res in ordered:
        uri = artifact_uri(res.intermediate)
        idx = len(artifacts)
        artifacts.append({
            "location": {"uri": uri},
            "roles": ["analysisTarget"],
            "description": {"text": f"intermediate image, checked against the base {res.base}"},
        })
        verdicts[uri] = res.verdict
        for f in res.all_findings():
            out_results.append(_result(f, rule_index, uri, idx, res))
    notifications = [
        {"level": "error", "message": {"text": f"{image}: {msg}"},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(image)}}}]}
        for image, msg in sorted(errors)
    ]
    invocation: dict[str, Any] = {"executionSuccessful": not errors}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "tool": {"driver": {
            "name": "pehp",
            "informationUri": INFORMATION_URI,
            "version": __version__,
            "semanticVersion": __version__,
            "rules": [rule_descriptor(r, base) for r in rules],
        }},
        "invocations": [invocation],
        "artifacts": artifacts,
        "results": out_results,
        "properties": {"verdicts": verdicts},
    }


def sarif_log(results: Sequence[CheckResult], errors: Sequence[tuple[str, str]] = (), *,
              per_image_runs: bool = False, docs_url: str | None = None) -> dict[str, Any]:
    """A SARIF 2.1.0 log for one or more checked images; ``errors`` are (image, message)
    pairs for images that could not be checked."""
    if per_image_runs and (len(results) + len(errors)) > 1:
        runs = [sarif_run([r], docs_url=docs_url) for r in sorted(results, key=lambda r: r.intermediate)]
        if errors:
            runs.append(sarif_run([], errors, docs_url=docs_url))
    else:
        runs = [sarif_run(results, errors, docs_url=docs_url)]
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": runs}
