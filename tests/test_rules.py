"""One test (at least) per rule: the rule fires on the input that breaks it, with the
severity, symbol and explanation it promises, and stays quiet on the clean sample.

Rules that a sample scenario exercises are tested on that sample; the others on a
variant of a real sample diff with one fact changed (the variant is what the differ
would report for such a build)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import SAMPLES
from test_check_support import (
    check,
    image_variant,
    of,
    pe_variant,
    sample_check,
    sample_diff,
    side_variant,
    variant,
)

from pehotpatch.check import PATCHABLE, REJECTED
from pehotpatch.diff import GlobalDiff
from pehotpatch.diff.image import Change, ListChange, NamedChange
from pehotpatch.hotpatch_set import HotpatchSet
from pehotpatch.image.pe import LoadConfig
from pehotpatch.image.symbols import Global
from pehotpatch.rules import CHECKERS, EMITTED_BY_CHECK, RULES, all_rules
from pehotpatch.rules.layout import layout_changes
from pehotpatch.rules.prologue import REQUIRED_PADDING, padding_before


def clean(arch="x64"):
    return sample_diff(arch, "body_fix")


def only(res, rule):
    hits = of(res, rule)
    assert len(hits) == 1, [(f.rule, f.symbol, f.message) for f in res.findings]
    return hits[0]


STABLE_IDS = {"HP001", "HP101", "HP102", "HP103", "HP104", "HP105", "HP106", "HP107", "HP108", "HP109",
              "HP201", "HP202", "HP203", "HP211", "HP212", "HP301", "HP302", "HP311",
              "HP401", "HP402", "HP403", "HP404", "HP501", "HP502", "HP503", "HP504",
              "HP601", "HP602", "HP603", "HP604", "HP701", "HP702", "HP703", "HP704", "HP705", "HP706"}
RETIRED_IDS = {"HP405"}


def test_registry_is_complete_and_stable():
    ids = [r.id for r in all_rules()]
    assert ids == sorted(ids)
    assert set(ids) == STABLE_IDS | RETIRED_IDS
    assert {r.id for r in all_rules() if r.status == "retired"} == RETIRED_IDS
    for r in all_rules():
        assert r.severity in ("error", "warning", "note")
        assert r.title and "\n" not in r.title and r.name[0].isupper() and " " not in r.name
        assert len(r.description) > 80
    assert RULES["HP405"].replaced_by == "HP501"


def test_registry_is_complete_on_a_bare_import():
    """Importing the package alone registers every rule and checker (no import-order luck)."""
    import subprocess
    import sys

    code = ("import pehotpatch.rules as r; "
            "print(len(r.RULES), len(r.CHECKERS), sorted(set().union(*(c.emits for c in r.CHECKERS))) == "
            "sorted(i for i, x in r.RULES.items() if x.status == 'stable' and i not in r.EMITTED_BY_CHECK))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(STABLE_IDS | RETIRED_IDS)), str(len(CHECKERS)), "True"]


def test_every_checker_declares_what_it_emits():
    from pehotpatch.rules import validate_registry

    assert validate_registry() == []
    emitted = set().union(*(c.emits for c in CHECKERS)) | EMITTED_BY_CHECK
    assert emitted == STABLE_IDS
    for c in CHECKERS:
        assert all(RULES[i].family == c.family for i in c.emits), c.name


def test_a_checker_emitting_an_undeclared_rule_is_a_bug(monkeypatch):
    from pehotpatch.rules import CheckerEntry, finding

    def rogue(ctx):
        yield finding("HP101", "rogue")

    monkeypatch.setattr("pehotpatch.rules.CHECKERS", [CheckerEntry("HP1xx", rogue, frozenset({"HP102"}))])
    with pytest.raises(ValueError, match="does not declare"):
        check(clean())


def test_retired_rules_cannot_be_emitted():
    from pehotpatch.rules import finding

    with pytest.raises(ValueError, match="retired"):
        finding("HP405", "x")


# ---- HP1xx image ------------------------------------------------------------------------
@pytest.mark.parametrize("rule,fields", [
    ("HP101", {"machine": Change("x64", "arm64")}),
    ("HP102", {"kind": Change("dll", "exe")}),
    ("HP103", {"entry_point": Change("DllMain", "DllMain2")}),
    ("HP104", {"tls_callbacks": ListChange((), ("tls_cb",))}),
    ("HP106", {"section_perms_changed": [NamedChange(".rdata", "r--", "rw-")]}),
])
def test_image_errors(rule, fields):
    res = check(image_variant(clean(), **fields))
    f = only(res, rule)
    assert f.severity == "error" and res.verdict == REJECTED
    assert f.explanation or f.evidence


def test_hp105_section_added_or_removed_is_a_warning():
    res = check(image_variant(clean(), sections_added=[".newdat"], sections_removed=[".tls"]))
    hits = of(res, "HP105")
    assert {(f.symbol, f.evidence["change"]) for f in hits} == {(".newdat", "added"), (".tls", "removed")}
    assert all(f.severity == "warning" for f in hits) and res.verdict == PATCHABLE


def test_hp108_resources_changed_is_a_warning():
    res = check(image_variant(clean(), resources_changed=True))
    assert only(res, "HP108").severity == "warning" and res.verdict == PATCHABLE


@pytest.mark.parametrize("arch,symbol,need", [("x64", "_load_config_used", "0xf4"),
                                              ("arm64", "_load_config_used", "0xf4"),
                                              ("x86", "__load_config_used", "0x98")])
def test_hp107_missing_load_config_says_how_to_fix(arch, symbol, need):
    res = check(pe_variant(clean(arch), "new", load_config=None))
    f = only(res, "HP107")
    assert f.severity == "error" and res.verdict == REJECTED
    text = " ".join(f.explanation)
    assert symbol in text and need in text.lower()


def test_hp107_load_config_too_small():
    small = LoadConfig(rva=0x3000, size=0x70, directory_size=0x70, hotpatch_table_offset=None, guard_flags=None)
    res = check(pe_variant(clean(), "new", load_config=small))
    f = only(res, "HP107")
    assert "0x70" in f.message and f.evidence["required_size"] == "0xf4"


def test_hp107_not_raised_for_the_base_or_a_full_load_config():
    assert not of(check(pe_variant(clean(), "base", load_config=None)), "HP107")
    assert not of(sample_check("x64", "body_fix"), "HP107")


# ---- HP2xx interface --------------------------------------------------------------------
def test_hp201_export_added():
    f = only(sample_check("x64", "new_export"), "HP201")
    assert f.symbol == "telemetry_clear_error" and f.severity == "error"


def test_hp202_export_removed():
    f = only(sample_check("x64", "removed_export"), "HP202")
    assert f.symbol == "telemetry_legacy_count" and f.severity == "error"


def test_hp203_export_repointed():
    res = check(image_variant(clean(), exports_repointed=[NamedChange("telemetry_count", "telemetry_count", "telemetry_init")]))
    f = only(res, "HP203")
    assert f.symbol == "telemetry_count" and f.evidence == {"base": "telemetry_count", "intermediate": "telemetry_init"}
    assert res.verdict == REJECTED


def test_hp211_new_dll_is_not_also_hp212():
    res = check(image_variant(clean(), import_dlls_added=["user32.dll"], imports_added=["user32.dll!MessageBoxA"]))
    f = only(res, "HP211")
    assert f.symbol == "user32.dll" and f.evidence["functions"] == ["MessageBoxA"] and f.severity == "error"
    assert not of(res, "HP212")
    # --allow-new-imports does not allow new DLLs
    assert of(check(image_variant(clean(), import_dlls_added=["user32.dll"], imports_added=["user32.dll!MessageBoxA"]),
                    allow_new_imports=True), "HP211")[0].severity == "error"


@pytest.mark.parametrize("arch", ["x64", "x86"])
def test_hp212_new_import_error_by_default_note_when_allowed(arch):
    f = only(sample_check(arch, "new_import"), "HP212")
    assert f.symbol == "Sleep" and f.severity == "error" and f.evidence["dll"] == "kernel32.dll"
    assert f.evidence["used_by"] == ["telemetry_wait_empty"]  # not the import thunk
    res = sample_check(arch, "new_import", allow_new_imports=True)
    assert only(res, "HP212").severity == "note"
    assert res.verdict == PATCHABLE


# ---- HP3xx signatures and layouts --------------------------------------------------------
def test_hp301_signature_changed():
    res = sample_check("x64", "signature_change")
    f = only(res, "HP301")
    assert f.symbol == "config_set" and f.severity == "error"
    assert f.evidence["base"] == "int config_set(unsigned int, unsigned int)"
    assert f.evidence["intermediate"] == "int config_set(unsigned int, unsigned int, unsigned int)"
    assert "config_reset" in f.evidence["base_callers"]
    assert any("exported" in e for e in f.explanation)


def test_hp302_without_pdbs_signatures_are_not_checked():
    res = check(sample_diff("x64", "signature_change", pdb=False))
    f = only(res, "HP302")
    assert f.severity == "note" and f.evidence["without_pdb"] == ["base", "intermediate"]
    assert not of(res, "HP301") and not of(res, "HP311")
    assert not of(sample_check("x64", "signature_change"), "HP302")


def test_hp311_struct_layout_changed():
    res = sample_check("x64", "struct_layout")
    f = only(res, "HP311")
    assert f.symbol == "pehp_stats" and f.severity == "error"
    changes = f.evidence["changes"]
    assert "size 16 -> 20 bytes" in changes
    assert any(c.startswith("field peak_value") and "added at +0xc" in c for c in changes)
    assert any(c.startswith("field last_value moved from +0xc to +0x10") for c in changes)
    assert "telemetry_get_stats" in f.explanation[0]


def test_layout_changes_reports_each_kind_of_change():
    F = dataclasses.make_dataclass("F", ["name", "offset", "type_name", "size", ("bit_offset", object, None),
                                         ("bit_size", object, None)])
    L = dataclasses.make_dataclass("L", ["size", "fields", ("bases", list, dataclasses.field(default_factory=list)),
                                         ("has_vfptr", bool, False), ("virtuals", tuple, ())])
    a = L(12, [F("a", 0, "int", 4), F("b", 4, "int", 4), F("c", 8, "short", 2)])
    b = L(12, [F("a", 0, "unsigned int", 4), F("c", 4, "int", 4), F("d", 8, "int", 4)])
    out = layout_changes(a, b)
    assert "field a type int -> unsigned int" in out
    assert any(x.startswith("field b (int) removed") for x in out)
    assert any(x.startswith("field d (int) added at +0x8") for x in out)
    assert "field c moved from +0x8 to +0x4" in out and "field c type short -> int" in out
    assert layout_changes(a, a) == []


# ---- HP4xx globals ------------------------------------------------------------------------
def test_hp401_mutable_initializer_changed():
    f = only(sample_check("x64", "data_init_change"), "HP401")
    assert f.symbol == "g_config" and f.severity == "error"
    assert f.evidence["base_bytes"] != f.evidence["new_bytes"]
    assert any("never takes effect" in e for e in f.explanation)


def _global_pair(diff, name):
    return next(gp for gp in diff.correlation.globals if gp.new.name == name)


def test_hp402_shared_global_size_changed():
    d = clean()
    gp = _global_pair(d, "g_config")
    gd = GlobalDiff("g_config", gp.base, dataclasses.replace(gp.new, size=20), ["size"], "size 16 -> 20")
    f = only(check(variant(d, globals_changed=[gd])), "HP402")
    assert f.symbol == "g_config" and f.severity == "error" and f.evidence["new_size"] == 20


def test_hp402_not_for_read_only_data_without_pointers():
    d = clean()
    gp = _global_pair(d, "g_config")
    ro_b = dataclasses.replace(gp.base, writable=False, contains_pointers=False, section=".rdata")
    ro_n = dataclasses.replace(gp.new, writable=False, contains_pointers=False, section=".rdata", size=20)
    gd = GlobalDiff("g_config", ro_b, ro_n, ["size"], "size 16 -> 20")
    assert not of(check(variant(d, globals_changed=[gd])), "HP402")


def test_hp403_removed_global_error_when_patched_code_used_it_else_note():
    d = sample_diff("x64", "fix_globals")
    used = next(g for g in d.base.index.globals if g.name == "g_record_count")
    unused = next(g for g in d.base.index.globals if g.name == "g_start_counter")
    res = check(variant(d, removed_globals=[used, unused]))
    hits = {f.symbol: f for f in of(res, "HP403")}
    assert hits["g_record_count"].severity == "error"
    assert "telemetry_record" in " ".join(hits["g_record_count"].explanation)
    assert hits["g_start_counter"].severity == "note"


def test_hp404_new_mutable_global_is_a_warning():
    d = clean()
    new = Global("g_new_state", 0x3100, 4, ".data", True, {"pdb"})
    ro = Global("k_new_table", 0x2100, 16, ".rdata", False, {"pdb"})
    slot = Global("__ref_g_new_state", 0x2200, 8, ".rdata", False, {"public"})
    res = check(variant(d, added_globals=[new, ro, slot]))
    f = only(res, "HP404")
    assert f.symbol == "g_new_state" and f.severity == "warning" and res.verdict == PATCHABLE


# ---- HP5xx the hot-patch set ----------------------------------------------------------------
def test_hp501_inlining_explained():
    f = only(sample_check("x64", "inline_pulls"), "HP501")
    assert f.symbol == "telemetry_peek_scaled" and f.severity == "error"
    assert f.explanation[0] == "telemetry_peek_scaled is not in the hot-patch set"
    assert "scale_value" in f.explanation[1] and "telemetry_record" in f.explanation[1]
    assert f.evidence["inlines"] == ["scale_value"]
    assert "first_difference" in f.evidence


def test_hp501_unmarked_change():
    res = sample_check("x64", "unmarked_change")
    assert [f.symbol for f in of(res, "HP501")] == ["config_get"]
    assert res.patched == ["telemetry_kind_name"]


def _with_set(diff, names, available=("functions-file",)):
    hs = HotpatchSet()
    for n, srcs in names.items():
        for s in srcs:
            hs.add(n, s)
    hs.available = set(available)
    return side_variant(diff, "new", hotpatch=hs)


def test_hp502_marked_but_unchanged():
    d = _with_set(clean(), {"telemetry_checksum": ["functions-file"], "telemetry_count": ["functions-file"]})
    res = check(d)
    f = only(res, "HP502")
    assert f.symbol == "telemetry_count" and f.severity == "note" and res.verdict == PATCHABLE


def test_hp503_marked_but_missing():
    d = _with_set(clean(), {"telemetry_checksum": ["functions-file"], "telemetry_checksum2": ["functions-file"]})
    res = check(d)
    f = only(res, "HP503")
    assert f.symbol == "telemetry_checksum2" and f.severity == "error" and res.verdict == REJECTED


@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_hp504_functions_file_lists_what_the_compiler_did_not_mark(arch):
    f = only(sample_check(arch, "direct_global_access"), "HP504")
    assert f.symbol == "report_summary" and f.severity == "warning"
    assert "no S_HOTPATCHFUNC" in f.explanation[0]


def test_hp504_ref_reader_listed_nowhere():
    d = sample_diff("x64", "fix_globals")
    d2 = _with_set(d, {"telemetry_count": ["functions-file"]})  # the file forgot telemetry_record
    res = check(d2)
    hits = {f.symbol: f for f in of(res, "HP504")}
    assert "telemetry_record" in hits and "__ref_" in hits["telemetry_record"].explanation[0]


# ---- HP6xx references -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_hp601_direct_mutable_global_access(arch):
    f = only(sample_check(arch, "direct_global_access"), "HP601")
    assert f.symbol == "report_summary" and f.severity == "error"
    assert "g_record_count" in f.evidence["globals"]
    assert any(k.startswith("g_ring") for k in f.evidence["globals"])


@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_hp601_quiet_when_globals_go_through_ref_pointers(arch):
    res = sample_check(arch, "fix_globals")
    assert res.patched == ["telemetry_record"] and not of(res, "HP601")


# ---- HP7xx prologue ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,first", [("x64", "56"), ("x86", "55")])
def test_hp701_one_byte_first_instruction(arch, first):
    f = only(sample_check(arch, "prologue_not_patchable"), "HP701")
    assert f.symbol == "telemetry_flush" and f.severity == "error"
    assert f.evidence["first_instruction_size"] == 1 and f.evidence["entry_bytes"].startswith(first)


def test_hp701_not_on_arm64():
    assert not of(sample_check("arm64", "prologue_not_patchable"), "HP701")


def test_hp702_entry_is_branch_target():
    d = clean()
    fb = next(fd.base for fd in d.functions if fd.new.name == "telemetry_checksum")
    codes0 = dict(d.codes[0])
    codes0[fb.rva] = codes0[fb.rva]._replace(entry_is_branch_target=True)
    res = check(variant(d, codes=(codes0, d.codes[1])))
    f = only(res, "HP702")
    assert f.symbol == "telemetry_checksum" and f.severity == "error"
    assert not of(check(d), "HP702")


def test_hp703_padding():
    f = only(sample_check("arm64", "prologue_not_patchable"), "HP703")
    assert f.symbol == "telemetry_flush" and f.evidence == {**f.evidence, "padding": 0, "required": 8}
    f = only(sample_check("x64", "prologue_not_patchable"), "HP703")
    assert f.evidence["padding"] < 6 and f.evidence["required"] == 6


@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_padding_measured_on_padded_base(arch):
    d = sample_diff(arch, "body_fix")
    fb = next(fd.base for fd in d.functions if fd.new.name == "telemetry_checksum")
    m = d.base.pe.machine
    assert padding_before(d.base.index, fb) >= REQUIRED_PADDING[m]


def test_hp704_base_not_hotpatch_compatible():
    f = only(sample_check("arm64", "prologue_not_patchable"), "HP704")
    assert f.severity == "warning" and f.symbol is None
    res = check(pe_variant(clean(), "base", ex_dll_characteristics=0))
    assert only(res, "HP704").evidence["ex_dll_characteristics"] == "0x0"
    assert not of(sample_check("x64", "body_fix"), "HP704")


def test_every_rule_has_a_test_here_or_in_a_sibling():
    """Each stable rule ID appears in some test module or sample expect.toml besides the
    registry lists above (guards against an untested new rule)."""
    from pathlib import Path

    here = Path(__file__).parent
    text = "".join(p.read_text() for p in here.glob("test_*.py"))
    text += "".join(p.read_text() for p in (here.parent / "samples").glob("*/*/expect.toml"))
    assert len(RULES) == len(STABLE_IDS | RETIRED_IDS)  # the whole registry, not a part
    missing = [r for r, x in RULES.items() if x.status == "stable" and text.count(f'"{r}"') < 2]
    assert not missing, missing


def test_every_rule_has_a_documentation_page():
    from pathlib import Path

    from pehotpatch.rules.docs import sync

    docs = Path(__file__).parents[1] / "docs" / "rules"
    index = (docs / "README.md").read_text()
    # Title, severity, status and summary of every page and the index come from the registry.
    assert sync(docs, write=False) == []
    for r in all_rules():
        page = (docs / f"{r.id}.md").read_text()
        assert page.startswith(f"# {r.id} {r.title}\n"), r.id
        for section in ("## What it means", "## Why the hot-patch engine needs it", "## Example", "## How to fix"):
            assert section in page, (r.id, section)
        assert f"| default severity | {r.severity} |" in page and f"| status | {r.status}" in page
        assert " ".join(page.split("## What it means")[0].split()).count(r.description) == 1, r.id
        assert f"[{r.id}]({r.id}.md) | {r.severity} | {r.title} | {r.status} |" in index, r.id
    assert sorted(p.stem for p in docs.glob("HP*.md")) == [r.id for r in all_rules()]


def test_hp705_a_redirection_on_a_structural_pair_without_the_base_pdb(tmp_path):
    """fix_globals with its base DLL alone (no PDB): patched telemetry_record calls the
    static now_ticks, which the base names nowhere (no PDB, no export), so the pair that
    its backward redirection needs is made by call-graph votes.  With the base PDB every
    pair is made by name and nothing is reported."""
    import shutil

    from pehotpatch.api import check_pair
    from pehotpatch.image.pdb import load_pdb

    d = SAMPLES / "x64" / "fix_globals"
    shutil.copy(d / "base.dll", tmp_path / "base.dll")
    inputs = {"objects": d / "intermediate.objs", "functions_file": d / "hotpatch_functions.txt"}
    res = check_pair(tmp_path / "base.dll", d / "intermediate.dll", **inputs)
    f = only(res, "HP705")
    truth = {p.name: p.rva for p in load_pdb(d / "base.pdb").procedures}
    assert f.symbol == "now_ticks" and f.severity == "error"
    assert f.evidence["direction"] == "backward" and f.evidence["pairing"] == "call-graph"
    assert f.evidence["base_rva"] == hex(truth["now_ticks"])  # the pair itself is right here
    assert any("telemetry_record" in e for e in f.explanation)
    # identical-content pairs (clamp_value, ring_push are called too) are not reported
    assert not of(check_pair(d / "base.dll", d / "intermediate.dll", **inputs), "HP705")
