"""The real-code ground truth and pehp diff measured against it.

The ground truth (tools/realcode_truth.py) is checked first on the committed x64
samples, whose expected changed-function lists were established with
samples/objdiff.py (llvm-objdump-22 on the objects), then used on the two smallest
real-code pairs (xxHash 0.8.1 -> 0.8.2 and PPMd 1.1.0 -> 1.1.1, downloaded and built here): pehp diff with
PDBs must find every changed function and report nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import realcode
from conftest import SAMPLES, have_toolchain, load_expect
from realcode_measure import measure_pair
from realcode_truth import compare_dirs, read_build

from pehotpatch.api import check_pair
from pehotpatch.codemap import KIND_CODES, FuncCode
from pehotpatch.correlate import correlate
from pehotpatch.image.pe_reader import load_pe
from pehotpatch.image.symbols import Function, SymbolIndex
from pehotpatch.vocab import RefKind

# prologue_not_patchable compiles its base without /hotpatch: every function of it
# differs by the 2-byte entry no-op and shifted alignment padding, which the truth counts
# (it compares bytes; every real-code build uses /hotpatch, so it never meets this).
X64 = sorted(p.parent for p in (SAMPLES / "x64").glob("*/expect.toml") if p.parent.name != "prologue_not_patchable")


@pytest.mark.parametrize("scenario", X64, ids=lambda p: p.name)
def test_truth_matches_the_samples(scenario):
    """Changed, added and removed functions from the objects equal each expect.toml's lists."""
    exp = load_expect(scenario)["diff"]
    t = compare_dirs(scenario / "base.objs", scenario / "intermediate.objs")

    def names(keys):
        return sorted({k.rsplit(":", 1)[-1] for k in keys})

    assert names(t.changed) == sorted(exp["changed_functions"])
    assert names(t.added) == sorted(exp["added_functions"])
    assert names(t.removed) == sorted(exp["removed_functions"])


def _sample_truth(name):
    return compare_dirs(SAMPLES / "x64" / name / "base.objs", SAMPLES / "x64" / name / "intermediate.objs")


def test_truth_reads_exports_imports_and_data():
    """The object-level facts beside functions, on the samples whose point they are
    (their descriptions in expect.toml)."""
    assert _sample_truth("new_export").exports_added == ["telemetry_clear_error"]
    assert _sample_truth("removed_export").exports_removed == ["telemetry_legacy_count"]
    t = _sample_truth("new_import")
    assert t.imports_added == ["Sleep"] and t.imports_removed == []
    t = _sample_truth("data_init_change")
    assert t.mutable_changed == ["g_config"] and t.changed == []
    t = _sample_truth("no_change")
    assert t.changed == t.added == t.removed == t.mutable_changed == t.exports_added == []
    assert t.unchanged == len(read_build(SAMPLES / "x64/no_change/base.objs").functions) > 0


def test_a_renamed_function_is_removed_and_added_not_paired():
    """Brotli 1.1.0 renames BrotliInitEncoderDictionary to BrotliInitSharedEncoderDictionary
    (and changes its parameter type); the one caller calls it at the same position, so the
    call graph voted them into a pair, which the ground truth (by name) calls a false
    positive.  Two functions that both have names and share none are not paired by any
    evidence but the name; an unnamed callee still pairs by the call graph."""
    img = load_pe(SAMPLES / "x64/no_change/base.dll")
    call = KIND_CODES[RefKind.CALL]

    def fc(rva, digest, refs=()):
        return FuncCode(rva, digest.encode().ljust(16, b"."), refs, 4, 2, b"", False)

    def ix(fns):
        return SymbolIndex(img, fns, [], has_pdb=True)

    b = [Function("caller", 0x1000, 0x40), Function("InitOld", 0x1100, 0x40), Function("sub_1200", 0x1200, 0x40),
         Function("Twin", 0x1300, 0x40)]
    n = [Function("caller", 0x2000, 0x40), Function("InitNew", 0x2100, 0x40), Function("sub_2200", 0x2200, 0x40),
         Function("TwinRenamed", 0x2300, 0x40)]
    bc = {0x1000: fc(0x1000, "caller", ((4, call, 0x1100), (9, call, 0x1200))), 0x1100: fc(0x1100, "init"),
          0x1200: fc(0x1200, "helper"), 0x1300: fc(0x1300, "same")}
    nc = {0x2000: fc(0x2000, "caller", ((4, call, 0x2100), (9, call, 0x2200))), 0x2100: fc(0x2100, "init2"),
          0x2200: fc(0x2200, "helper2"), 0x2300: fc(0x2300, "same")}
    corr = correlate(ix(b), ix(n), bc, nc)
    assert {(p.base.name, p.new.name, p.method) for p in corr.functions} == {
        ("caller", "caller", "name"), ("sub_1200", "sub_2200", "call-graph")}
    assert sorted(f.name for f in corr.removed_functions) == ["InitOld", "Twin"]
    assert sorted(f.name for f in corr.added_functions) == ["InitNew", "TwinRenamed"]


# PPMd 1.1.0 -> 1.1.1 (pyppmd): Arch.h turns `Bool` from `int` into `_Bool`; the
# functions that return or take a Bool, and the callers that pass True/False, change.
PPMD_CHANGED = ["Ppmd7:CreateSuccessors", "Ppmd7:UpdateModel", "Ppmd7_Alloc", "Ppmd7z_RangeDec_Init",
                "Ppmd8:CreateSuccessors", "Ppmd8:UpdateModel", "Ppmd8_Alloc", "Ppmd8_RangeDec_Init"]


# pycryptodome 4.4.0 -> 4.5.0: of the files built, only ghash_portable.c changes
# (ghash_blocks gains `int reversed`; ghash_portable now goes through a new checking
# helper; ghash_combine_portable passes the new argument; ghash_at_portable inlines
# ghash_portable), and raw_xts.c and base64.c are new, all their EXPORT_SYM functions
# new exports, as are ghash_portable.c's three new ones.
PYCRYPTODOME_CHANGED = ["ghash_at_portable", "ghash_combine_portable", "ghash_portable", "ghash_portable:ghash_blocks"]
PYCRYPTODOME_NEW_EXPORTS = ["XTS_decrypt", "XTS_encrypt", "XTS_start_operation", "XTS_stop_operation",
                            "base64_decode", "ghash_expand_rev_portable", "ghash_rev_at_portable",
                            "ghash_rev_portable"]


@pytest.mark.network
@pytest.mark.toolchain
@pytest.mark.parametrize("name", ["xxhash", "ppmd", "pycryptodome"])
def test_recall_and_false_positives(name, tmp_path):
    """xxHash 0.8.1 -> 0.8.2, PPMd 1.1.0 -> 1.1.1 and pycryptodome 4.4.0 -> 4.5.0, the
    smallest pairs: the truth's changed functions, the intermediate built with them as
    its list, and pehp diff finding all of them and nothing else (with PDBs; at least
    99 % and nothing else without)."""
    truth, truth_inter, unlisted, ff = _built_pair(name, tmp_path)
    listed = set(ff.read_text().split())
    assert truth.changed and set(realcode.listed_names([*truth.changed, *truth.added])) == listed
    assert unlisted == []  # the list changes the listed functions only
    assert set(truth.changed) <= set(truth_inter.changed)
    if name == "pycryptodome":
        assert sorted(truth.changed) == PYCRYPTODOME_CHANGED and truth.removed == []
        assert truth.exports_added == PYCRYPTODOME_NEW_EXPORTS
    if name == "ppmd":
        assert sorted(truth.changed) == PPMD_CHANGED  # statics keyed by their object's name
        assert truth.added == [] and truth.removed == []
        # PPMd does not dllexport: the linker exports its API (Library.exports)
        exported = {e.name for e in load_pe(tmp_path / "base.dll").exports}
        assert exported == set(realcode.PPMD_API)
    with_pdb, without_pdb, d, _ = measure_pair(tmp_path, truth_inter, tmp_path / "intermediate.objs", ff)
    assert with_pdb.truth_changed == len(truth_inter.changed)
    assert with_pdb.missed == [] and with_pdb.recall == 1.0
    assert with_pdb.false_positives == []
    assert without_pdb.false_positives == []
    assert without_pdb.recall >= 0.99
    if name == "ppmd":
        # Ppmd7.c and Ppmd8.c each have a static CreateSuccessors whose Bool parameter
        # changed: two functions of one name, two HP301 findings, each naming its object.
        res = check_pair(tmp_path / "base.dll", tmp_path / "intermediate.dll",
                         objects=tmp_path / "intermediate.objs", functions_file=ff)
        hp301 = {f.message for f in res.findings if f.rule == "HP301" and f.symbol == "CreateSuccessors"}
        assert hp301 == {"signature of CreateSuccessors (Ppmd7.obj) changed",
                         "signature of CreateSuccessors (Ppmd8.obj) changed"}


def _built_pair(name, tmp_path):
    if not have_toolchain() or shutil.which(realcode.DLLTOOL) is None:
        pytest.skip("needs clang-cl-22, lld-link-22 and llvm-dlltool-22")
    lib = next(x for x in realcode.LIBRARIES if x.name == name)
    try:
        for rel in lib.releases:
            realcode.fetch(rel, lib)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"cannot download the {name} sdists: {exc}")
    return realcode.build_pair(lib, tmp_path)


@pytest.mark.network
@pytest.mark.toolchain
def test_zlib_ng_with_pdbs(tmp_path):
    """zlib-ng 2.2.5 -> 2.3.3, held out from the pairing's tuning, built from its template
    headers: the truth sees what the sources say (2.3.3 moves zng_crc32_braid's body into
    crc32_braid_internal behind a new crc32_braid wrapper, arch/generic/crc32_braid_c.c,
    and drops chunksize_c and its stub, functable.c), and pehp diff with PDBs finds every
    changed function and nothing else."""
    truth, truth_inter, unlisted, ff = _built_pair("zlib-ng", tmp_path)
    assert unlisted == []
    assert {"zng_crc32_braid", "chunksize_c", "functable:chunksize_stub"} <= set(truth.removed)
    assert {"crc32_braid", "crc32_braid_internal"} <= set(truth.added)
    assert "functable:adler32_stub" in truth.changed  # statics keyed by their object
    assert truth.imports_added == ["free", "malloc"] and truth.imports_removed == ["_aligned_free", "_aligned_malloc"]
    assert truth.exports_added == truth.exports_removed == []
    with_pdb, _, d, _ = measure_pair(tmp_path, truth_inter, tmp_path / "intermediate.objs", ff)
    assert with_pdb.truth_changed == len(truth_inter.changed) > 0
    assert with_pdb.missed == [] and with_pdb.false_positives == []
    # ZLIB_DLL: zlib-ng.h dllexports its API, and 2.3.3 keeps every export of 2.2.5
    exported = {e.name for e in load_pe(tmp_path / "base.dll").exports}
    assert "zng_deflate" in exported and exported <= {e.name for e in load_pe(tmp_path / "intermediate.dll").exports}
    # The new imports are reached through lld's import thunks: HP212 names the functions
    # that call or jump to the thunk (zng_zcalloc and zng_alloc_aligned call malloc).
    from pehotpatch.api import check_pair

    res = check_pair(tmp_path / "base.dll", tmp_path / "intermediate.dll", objects=tmp_path / "intermediate.objs",
                     functions_file=ff)
    users = {f.symbol: f.evidence["used_by"] for f in res.findings if f.rule == "HP212"}
    assert set(users) == {"malloc", "free"} and all(users.values())
    assert "zng_zcalloc" in users["malloc"] and "zng_zcfree" in users["free"]


@pytest.mark.parametrize("scenario", ["x64/fix_globals", "x64/switch_table", "x86/body_fix"])
def test_padding_gives_the_starts_the_pdb_knows(scenario, tmp_path):
    """A DLL copied alone (no PDB): the starts found after the int3 padding lld's
    /functionpadmin leaves are all function starts of the PDB, and add some that no
    export, .pdata entry or call gave; the loaded index is not changed."""
    from pehotpatch.diff.starts import split_at_padding
    from pehotpatch.load import load_image

    dll = SAMPLES / scenario / "base.dll"
    named = {f.rva for f in load_image(dll).index.functions}
    shutil.copy2(dll, tmp_path / "base.dll")
    bare = load_image(tmp_path / "base.dll")
    assert not bare.index.has_pdb
    before = [(f.rva, f.size) for f in bare.index.functions]
    split = split_at_padding(bare.index)
    found = {f.rva for f in split.functions} - {rva for rva, _ in before}
    assert found and found <= named
    assert [(f.rva, f.size) for f in bare.index.functions] == before
    ends = [(f.rva, f.end) for f in split.functions]
    assert all(e <= nxt for (_, e), (nxt, _) in zip(ends, ends[1:], strict=False))  # no overlaps
