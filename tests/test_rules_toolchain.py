"""Rules that no sample scenario covers, on small DLL pairs built here with clang-cl/lld-link:
HP501 for a changed constant table read by an unpatched function (formerly HP405), HP602 (a patched function
using a constant table of pointers directly), HP404 (a new mutable global) and HP107 on a
real image without a load configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_check_support import check, of

from pehotpatch.diff import diff_images
from pehotpatch.load import load_image

pytestmark = pytest.mark.toolchain

TOOLS = ("clang-cl-22", "lld-link-22")

BASE = r"""
static const unsigned char table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static const char *const names[3] = {"alpha", "beta", "gamma"};
int g_counter;
__declspec(dllexport) __declspec(noinline) int lookup(unsigned i) { return table[i & 7]; }
__declspec(dllexport) __declspec(noinline) const char *name_of(unsigned i) { return names[i % 3]; }
__declspec(dllexport) __declspec(noinline) int bump(void) { return ++g_counter; }
int __stdcall DllMain(void *h, unsigned long r, void *p) { return 1; }
"""

INTERMEDIATE = r"""
static const unsigned char table[8] = {1, 2, 3, 4, 5, 6, 7, 9};
static const char *const names[3] = {"alpha", "beta", "gamma"};
int g_counter;
int g_bumps;
__declspec(dllexport) __declspec(noinline) int lookup(unsigned i) { return table[i & 7]; }
__declspec(dllexport) __declspec(noinline) const char *name_of(unsigned i) { return i < 3 ? names[i] : "none"; }
__declspec(dllexport) __declspec(noinline) int bump(void) { g_bumps++; return ++g_counter; }
int __stdcall DllMain(void *h, unsigned long r, void *p) { return 1; }
"""


def _build(d: Path, name: str, source: str, marked: str | None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.c").write_text(source)
    flags = ["--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/Z7", "/GS-", "/Zl", "/Gy", "/hotpatch"]
    if marked:
        (d / "funcs.txt").write_text(marked + "\n")
        flags.append("-fms-secure-hotpatch-functions-file=funcs.txt")
    subprocess.run(["clang-cl-22", *flags, f"{name}.c", f"/Fo{name}.obj"], cwd=d, check=True,
                   capture_output=True)
    subprocess.run(["lld-link-22", "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib",
                    "/debug", f"/pdb:{name}.pdb", "/pdbaltpath:%_PDB%", "/Brepro", "/functionpadmin:6",
                    "/hotpatchcompatible", f"/out:{name}.dll", f"{name}.obj"], cwd=d, check=True,
                   capture_output=True)
    return d / f"{name}.dll"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    if not all(shutil.which(t) for t in TOOLS):
        pytest.skip("needs clang-cl-22 and lld-link-22")
    root = tmp_path_factory.mktemp("rules")
    base = _build(root / "base", "base", BASE, None)
    # name_of and bump are listed, but only bump's translation unit gets the flag:
    # build the intermediate without it and pass the functions file to pehp, the way
    # a TU forgotten by the build system looks.
    inter = _build(root / "inter", "intermediate", INTERMEDIATE, None)
    ff = root / "inter" / "hotpatch_functions.txt"
    ff.write_text("name_of\nbump\n")
    b = load_image(base)
    n = load_image(inter, functions_file=ff)
    return diff_images(b, n, jobs=1)


def test_hp501_changed_table_read_by_unpatched_function(pair):
    res = check(pair)
    f = next(f for f in of(res, "HP501") if f.symbol == "lookup")
    assert f.severity == "error" and res.verdict == "rejected"
    assert any("table" in d for d in f.evidence["data"]) and "table" in f.message
    assert not of(res, "HP405")  # retired


def test_hp501_not_for_pointer_tables_that_only_moved(pair):
    # names holds the same strings; only their addresses may differ
    assert not [f for f in of(check(pair), "HP501") if f.symbol == "name_of"]


def test_hp602_patched_function_uses_pointer_constant_directly(pair):
    res = check(pair)
    f = next(f for f in of(res, "HP602") if f.symbol == "name_of")
    assert f.severity == "warning" and "names" in f.evidence["globals"]


def test_hp601_and_hp404_new_global_accessed_directly(pair):
    res = check(pair)
    f404 = next(f for f in of(res, "HP404") if f.symbol == "g_bumps")
    assert f404.severity == "warning" and "bump" in f404.evidence["used_by"]
    f601 = next(f for f in of(res, "HP601") if f.symbol == "bump")
    assert {"g_bumps", "g_counter"} <= set(f601.evidence["globals"])


def test_hp107_real_image_without_load_config(pair):
    f = of(check(pair), "HP107")[0]
    assert f.severity == "error" and "no load configuration" in f.message


# A new function that patched code only takes the address of handles a struct whose
# layout changed (both PDBs define it: peek uses it in both builds): the layout check
# covers the new function like a patched one.
ESCAPE_BASE = r"""
struct rec { unsigned key; unsigned value; };
unsigned char g_pool[64];
unsigned (*g_cb)(unsigned);
__declspec(dllexport) __declspec(noinline) unsigned peek(unsigned i)
{
    struct rec *r = (struct rec *)g_pool + (i & 3);
    return r->key;
}
__declspec(dllexport) __declspec(noinline) unsigned arm(void) { return g_cb != 0; }
int __stdcall DllMain(void *h, unsigned long r, void *p) { return 1; }
"""

ESCAPE_INTERMEDIATE = r"""
struct rec { unsigned key; unsigned stamp; unsigned value; };
unsigned char g_pool[64];
unsigned (*g_cb)(unsigned);
__declspec(dllexport) __declspec(noinline) unsigned peek(unsigned i)
{
    struct rec *r = (struct rec *)g_pool + (i & 3);
    return r->key;
}
static __declspec(noinline) unsigned on_rec(unsigned i)
{
    struct rec *r = (struct rec *)g_pool + (i & 3);
    return r->value;
}
__declspec(dllexport) __declspec(noinline) unsigned arm(void) { g_cb = on_rec; return g_cb != 0; }
int __stdcall DllMain(void *h, unsigned long r, void *p) { return 1; }
"""


@pytest.fixture(scope="module")
def escape_pair(tmp_path_factory):
    if not all(shutil.which(t) for t in TOOLS):
        pytest.skip("needs clang-cl-22 and lld-link-22")
    root = tmp_path_factory.mktemp("escape")
    base = _build(root / "base", "base", ESCAPE_BASE, None)
    inter = _build(root / "inter", "intermediate", ESCAPE_INTERMEDIATE, "arm")
    return diff_images(load_image(base), load_image(inter, functions_file=root / "inter" / "funcs.txt"), jobs=1)


def test_hp311_layout_used_by_a_new_function_reached_by_address(escape_pair):
    res = check(escape_pair)
    f = next(f for f in of(res, "HP311") if f.symbol == "rec")
    # peek (changed: the stride) uses it too; the new on_rec is named among the users
    assert any("on_rec (new, run by arm)" in why for why in f.evidence["used_by"])
    assert any("stamp" in c for c in f.evidence["changes"])
