"""The shared vocabulary: the stages hand each other enum members, and everything written
from them (JSON, text, repr) reads exactly as the plain strings did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pehotpatch as pehp
from pehotpatch.codemap import KIND_CODES, KIND_NAMES, normalize_function
from pehotpatch.render.check import check_to_json
from pehotpatch.rules.context import Context
from pehotpatch.rules.options import CheckOptions
from pehotpatch.vocab import FunctionStatus, RefKind, Severity, Side, Verdict

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "x64"


def _hp(d: Path) -> dict[str, Path]:
    return {"objects": d / "intermediate.objs", "functions_file": d / "hotpatch_functions.txt"}


def test_members_read_as_their_values():
    for enum in (FunctionStatus, Severity, Verdict, RefKind):
        for m in enum:
            assert m == m.value and hash(m) == hash(m.value)
            assert str(m) == f"{m}" == m.value and repr(m) == repr(m.value)
            assert json.dumps({m: m}) == json.dumps({m.value: m.value})
    assert f"{Severity.NOTE:<8}|" == "note    |"
    assert [int(s) for s in Side] == [0, 1]


def test_the_compact_reference_codes_are_the_ones_summaries_always_used():
    # FuncCode.refs keeps kinds as 0..4 in this order (cached codemaps and the
    # templates rely on it); the enum's order must not move them.
    assert KIND_CODES == {"call": 0, "jump": 1, "data": 2, "indirect_call": 3, "indirect_jump": 4}
    assert all(KIND_NAMES[c] is k for k, c in KIND_CODES.items() if isinstance(k, RefKind))


def test_a_rejected_check_carries_enums_and_writes_plain_strings():
    d = SAMPLES / "inline_pulls"
    res = pehp.check_pair(d / "base.dll", d / "intermediate.dll", **_hp(d))
    assert res.verdict is Verdict.REJECTED
    assert res.findings and all(isinstance(f.severity, Severity) for f in res.findings)
    doc = json.loads(json.dumps(check_to_json(res)))
    assert doc["verdict"] == "rejected"
    assert {f["severity"] for f in doc["findings"]} <= {"error", "warning", "note"}
    assert [f["severity"] for f in doc["findings"]] == [str(f.severity) for f in res.findings]


@pytest.mark.parametrize("scenario", ["fix_globals", "switch_table", "prologue_not_patchable"])
def test_diff_statuses_and_reference_kinds_are_typed(scenario):
    d = SAMPLES / scenario
    diff = pehp.diff_pair(d / "base.dll", d / "intermediate.dll", **_hp(d))
    assert diff.functions
    assert all(isinstance(fd.status, FunctionStatus) for fd in diff.functions)
    for fd in diff.functions:
        if fd.ref_difference is not None:
            assert isinstance(fd.ref_difference.kind, RefKind)
    ctx = Context(diff, CheckOptions())
    for side in Side:
        ix = ctx.index(side)
        assert ix is (diff.base.index if side == Side.BASE else diff.new.index)
        for f in ix.functions[:40]:
            refs = ctx.refs(side, f)
            # The kinds the rules see are the disassembler's, through the compact codes.
            want = [(r.offset, r.kind, r.target) for r in normalize_function(ix.image, f).refs]
            assert [(r.offset, r.kind, r.target) for r in refs] == want
            assert all(type(r.kind) is RefKind for r in refs)
