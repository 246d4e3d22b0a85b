"""The gate on the hard cases of samples/src/gatelib.c: each class of false "patchable"
and false "rejected" has a sample; here the findings are checked in detail, with the
facts behind them (reach.py) and the cases next to them that must stay quiet.

The facts asserted were read independently from the images (llvm-objdump-22 -d,
llvm-readobj-22 --coff-tls-directory; notes in samples/README.md)."""

from __future__ import annotations

import dataclasses

import pytest
from test_check_support import check, image_variant, of, sample_check, sample_diff, variant

from pehotpatch.check import PATCHABLE, REJECTED
from pehotpatch.diff import CHANGED, FunctionDiff
from pehotpatch.reach import ADDRESS, NEW, PATCHED, UNPATCHED, gather, tls_ranges
from pehotpatch.rules.context import Context
from pehotpatch.rules.data import pointer_free_constant
from pehotpatch.rules.options import CheckOptions
from pehotpatch.rules.runonce import run_once_roots
from pehotpatch.waivers import parse_waivers


def only(res, rule):
    hits = of(res, rule)
    assert len(hits) == 1, [(f.rule, f.symbol, f.message) for f in res.findings]
    return hits[0]


def reach_of(scenario, arch="x64"):
    d = sample_diff(arch, scenario)
    return d, gather(d, d.new.hotpatch)


# ---- 1. a new function whose address escapes ------------------------------------------------
def test_reach_follows_a_taken_address_to_a_new_function():
    d, r = reach_of("escape_callback")
    on_event = d.new.index.functions_by_name["on_event_counted"]
    assert [(x.name, x.target_class) for x in r.running] == [("gate_arm", PATCHED), ("on_event_counted", NEW)]
    assert (r.running[1].reached_by, r.running[1].reached_how) == ("gate_arm", ADDRESS)
    (e,) = [e for e in r.edges if e.kind == ADDRESS]
    assert e.source == "gate_arm" and e.target_rva == on_event.rva and e.base_rva is None


def test_reach_does_not_run_unpatched_callees():
    d, r = reach_of("fix_calls_unchanged")
    assert [x.name for x in r.running] == ["telemetry_flush"]
    assert [(e.kind, e.target, e.target_class) for e in r.edges] == [("call", "ring_pop", UNPATCHED)]


def test_hp601_new_function_reached_by_its_address():
    f = only(sample_check("x64", "escape_callback"), "HP601")
    assert f.symbol == "on_event_counted" and f.severity == "error"
    assert set(f.evidence["globals"]) == {"g_count", "g_events"}
    assert f.evidence["reached_by"] == "gate_arm" and f.evidence["reached_how"] == ADDRESS
    assert "list it in the functions file" in " ".join(f.explanation)


# ---- 2. function-pointer identity -------------------------------------------------------------
def test_hp603_address_of_an_unpatched_function():
    res = sample_check("x64", "fnptr_identity")
    f = only(res, "HP603")
    assert f.symbol == "gate_is_default" and res.verdict == REJECTED
    assert f.evidence["functions"] == ["handler_default"]
    (ref,) = f.evidence["references"]
    assert ref["class"] == UNPATCHED and ref["base_rva"] is not None


def test_hp603_not_for_the_address_of_a_new_function():
    assert not of(sample_check("x64", "escape_callback"), "HP603")


# ---- 3. thread-local variables ----------------------------------------------------------------
def test_reach_sees_the_ref_slot_target_in_the_tls_template():
    d, r = reach_of("tls_ref")
    (read,) = [x for x in r.ref_reads if x.slot == "__ref_t_depth"]
    lo, hi = tls_ranges(d.new.pe)[-1]  # the TLS directory's raw data range
    assert read.thread_local and read.target_section == ".tls" and lo <= read.target_rva < hi
    _, r2 = reach_of("fix_globals")
    assert r2.ref_reads and not any(x.thread_local for x in r2.ref_reads)


def test_hp604_ref_slot_into_tls():
    f = only(sample_check("x64", "tls_ref"), "HP604")
    assert f.symbol == "gate_tls_enter" and f.severity == "error"
    assert f.evidence["slot"] == "__ref_t_depth" and f.evidence["section"] == ".tls"
    assert not of(sample_check("x64", "fix_globals"), "HP604")


# ---- 4. layouts seen only through locals --------------------------------------------------------
def test_hp311_type_used_only_through_a_cast_local():
    f = only(sample_check("x64", "hidden_layout"), "HP311")
    assert f.symbol == "gate_rec"
    assert f.evidence["base_size"] == 8 and f.evidence["intermediate_size"] == 12
    assert "field stamp (unsigned int) added at +0x4" in f.evidence["changes"]
    assert "field value moved from +0x4 to +0x8" in f.evidence["changes"]
    assert "local or parameter of type struct gate_rec *" in f.explanation[0]


# ---- 5. code that already ran -------------------------------------------------------------------
def test_run_once_roots_are_the_entry_point():
    d = sample_diff("x64", "init_once")
    dllmain = d.base.index.functions_by_name["DllMain"]
    assert run_once_roots(d.base.index) == {dllmain.rva: "the entry point"}


def test_hp109_function_called_only_from_dllmain():
    f = only(sample_check("x64", "init_once"), "HP109")
    assert f.symbol == "gate_setup" and f.severity == "error"
    assert f.evidence["path"] == ["DllMain", "gate_setup"] and f.evidence["in_hotpatch_set"] is True


def test_hp109_dllmain_itself_changed():
    d = sample_diff("x64", "init_once")
    fb = d.base.index.functions_by_name["DllMain"]
    fn = d.new.index.functions_by_name["DllMain"]
    res = check(variant(d, functions=[FunctionDiff("DllMain", fb, fn, CHANGED, "name", "code")]))
    f = next(f for f in of(res, "HP109") if f.symbol == "DllMain")
    assert f.evidence["path"] == ["DllMain"] and "it is the entry point DllMain" in f.message


def test_hp109_not_for_exported_functions():
    # gate_bump is exported: it runs again whenever it is called
    assert not of(sample_check("x64", "ref_relocs"), "HP109")


# ---- 6. behaviour changed through a function's own data -----------------------------------------
def test_hp501_private_lookup_table_and_shared_table():
    res = sample_check("x64", "switch_table")
    hits = {f.symbol: f for f in of(res, "HP501")}
    assert set(hits) == {"gate_code_weight", "gate_shared_b"}  # gate_shared_a is listed
    w = hits["gate_code_weight"]
    assert w.evidence["reason"] == "data" and w.evidence["data"][0].startswith(".rdata+0x")
    assert w.evidence["other_readers"] == {}
    b = hits["gate_shared_b"]
    assert b.evidence["data"] == ["k_shared"] and b.evidence["other_readers"] == {"k_shared": ["gate_shared_a"]}
    assert all(f.severity == "error" for f in hits.values()) and not of(res, "HP405")


# ---- 7. constants are not state -------------------------------------------------------------------
def test_hp403_removed_constants_are_notes():
    res = sample_check("x64", "constants")
    hits = of(res, "HP403")
    assert len(hits) == 3 and all(f.severity == "note" and f.evidence["constant"] for f in hits)
    assert res.verdict == PATCHABLE


def test_pointer_free_constant_recognises_what_holds_no_pointers():
    d = sample_diff("x64", "constants")
    ctx = Context(d, CheckOptions())
    real = next(g for g in d.base.index.globals if g.name == "__real@3fa00000")
    assert pointer_free_constant(ctx, real) == "a floating-point constant"
    p = sample_diff("x64", "fix_globals")
    pctx = Context(p, CheckOptions())
    names = next(g for g in p.base.index.globals if g.name == "kind_names")  # a table of string pointers
    assert pointer_free_constant(pctx, names) is None
    mutable = next(g for g in p.base.index.globals if g.name == "g_record_count")
    assert pointer_free_constant(pctx, mutable) is None


# ---- 8. ABI-neutral qualifiers ----------------------------------------------------------------------
def test_hp301_not_for_restrict_and_parameter_const():
    d = sample_diff("x64", "restrict_param")
    ctx = Context(d, CheckOptions())
    assert ctx.signature_changes == {}
    base_sig, new_sig = ctx.qualifier_only_changes["gate_sum"]
    assert "__restrict" in new_sig and "__restrict" not in base_sig
    assert not of(check(d), "HP301")


def test_hp301_still_for_a_new_parameter():
    ctx = Context(sample_diff("x64", "signature_change"), CheckOptions())
    assert "config_set" in {v[3].name for v in ctx.signature_changes.values()} and not ctx.qualifier_only_changes


# ---- 9. .reloc for __ref_ slots ------------------------------------------------------------------------
def test_hp105_reloc_for_ref_slots_only_is_a_note():
    f = only(sample_check("x64", "ref_relocs"), "HP105")
    assert f.severity == "note" and f.symbol == ".reloc"
    assert f.evidence["relocations"] == f.evidence["ref_slot_relocations"] == 1
    assert f.evidence["base_relocations"] == 0 and f.evidence["other_relocations"] == []


def test_hp105_reloc_stays_a_warning_when_other_relocations_exist():
    # pehplib's images have relocations outside __ref_ slots (kind_names' pointers)
    res = check(image_variant(sample_diff("x64", "fix_globals"), sections_added=[".reloc"]))
    f = only(res, "HP105")
    assert f.severity == "warning" and f.evidence["other_relocations"]


# ---- registry: retired rules ------------------------------------------------------------------------
def test_waiver_for_a_retired_rule_is_hp001():
    w = parse_waivers({"waiver": [{"rule": "HP405", "symbol": "*", "justification": "old waiver"}]}, "w.toml")
    res = sample_check("x64", "body_fix", waivers=w)
    f = only(res, "HP001")
    assert "retired" in f.message and "HP501" in f.message and res.verdict == REJECTED


@pytest.mark.parametrize("scenario,errors", [
    ("escape_callback", {("HP601", "on_event_counted")}),
    ("fnptr_identity", {("HP603", "gate_is_default")}),
    ("tls_ref", {("HP604", "gate_tls_enter")}),
    ("hidden_layout", {("HP311", "gate_rec")}),
    ("init_once", {("HP109", "gate_setup")}),
    ("switch_table", {("HP501", "gate_code_weight"), ("HP501", "gate_shared_b")}),
])
def test_each_false_patchable_has_exactly_its_errors(scenario, errors):
    """The cause is named, and nothing else is blamed."""
    res = sample_check("x64", scenario)
    assert res.verdict == REJECTED
    assert {(f.rule, f.symbol) for f in res.findings if f.severity == "error"} == errors


def test_finding_order_and_reach_are_deterministic():
    a = sample_check("x64", "switch_table")
    d = sample_diff("x64", "switch_table")
    b = check(dataclasses.replace(d))
    assert [f.to_json() for f in a.findings] == [f.to_json() for f in b.findings]
    assert gather(d, d.new.hotpatch) == gather(d, d.new.hotpatch)


def test_run_once_excludes_functions_stored_as_pointers():
    # pehplib's four handlers are reached only through the kind_handlers table (relocated
    # pointers in .rdata): if DllMain also called one, it would still run later.
    from pehotpatch.rules.runonce import stored_function_pointers

    ix = sample_diff("x64", "fix_globals").base.index
    names = {ix.function_by_rva[t].name for t in stored_function_pointers(ix)}
    assert {"handle_info", "handle_warn", "handle_error", "handle_metric"} <= names


def test_an_address_inside_a_function_is_not_a_function_pointer():
    """The x64 normaliser may read a displacement as an RVA that lands inside code (seen
    on lz4, docs/REALCODE.md); only a function's start is a function pointer."""
    d = sample_diff("x64", "fnptr_identity")
    ix = d.new.index
    src = ix.functions_by_name["gate_is_default"]
    target = ix.functions_by_name["handler_default"].rva
    fc = d.codes[1][src.rva]
    moved = fc._replace(refs=tuple((o, k, t + 4 if t == target else t) for o, k, t in fc.refs))
    d2 = variant(d, codes=(d.codes[0], {**d.codes[1], src.rva: moved}))
    assert [e.target for e in gather(d2, d2.new.hotpatch).edges if e.kind == ADDRESS] == []
    assert [e.target for e in gather(d, d.new.hotpatch).edges if e.kind == ADDRESS] == ["handler_default"]


def test_run_once_roots_include_tls_callbacks():
    d = sample_diff("x64", "init_once")
    ix = d.base.index
    limit = ix.functions_by_name["gate_limit"]
    img = dataclasses.replace(ix.image, tls_callbacks=[limit.rva])
    roots = run_once_roots(dataclasses.replace(ix, image=img))
    assert roots[limit.rva] == "a TLS callback"
    assert roots[ix.functions_by_name["DllMain"].rva] == "the entry point"
