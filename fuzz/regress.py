"""The regression corpus: one small JSON recipe per failure the fuzzer found.

``tests/data/fuzz/<name>.json`` holds the (minimised) case, the failure signature, a note
saying what was wrong and where it was fixed, and the SHA-256 of each seed file the edits
apply to (so a rebuilt sample cannot silently turn a recipe into a different input).
A recipe with ``known_issue`` records a failure not fixed yet: the replay test expects it
to fail, and fuzz runs count its signature as known instead of as a new finding.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .cases import ROOT, Case, Seeds

REGRESSION_DIR = ROOT / "tests" / "data" / "fuzz"


def signature_key(signature: str) -> str:
    """A signature without its line number (which moves whenever the file is edited)."""
    return re.sub(r":\d+:", ":", signature)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def recipes(directory: Path = REGRESSION_DIR) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def known_keys(directory: Path = REGRESSION_DIR) -> set[str]:
    return {signature_key(d["signature"]) for p in recipes(directory)
            if (d := load(p)).get("known_issue")}


def seed_digests(case: Case, seeds: Seeds) -> dict[str, str]:
    return {role: hashlib.sha256(seeds.data(case.seed, role)).hexdigest()
            for role in sorted(case.edits)}


def keep(finding: Path, name: str, note: str, known_issue: str | None = None,
         directory: Path = REGRESSION_DIR) -> Path:
    """Copy a finding's minimised recipe into the regression corpus as ``<name>.json``."""
    rec = load(finding / "recipe.json" if finding.is_dir() else finding)
    case = Case.from_json(rec["case"])
    doc: dict[str, Any] = {"note": note, "signature": rec["signature"], "case": case.to_json(),
                           "seed_sha256": seed_digests(case, Seeds())}
    if known_issue:
        doc["known_issue"] = known_issue
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}.json"
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return out
