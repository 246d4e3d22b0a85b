"""HP311 and the virtual function table: a class's own virtual methods are part of its
layout (objects the base built hold the base's vtable pointer).

The pairs come from tools/hazardgen_cpp.py (CRT-free C++ built with clang-cl-22): a virtual
method appended to `Shape` that a listed caller calls on an object the base's DllMain
built (the call reads past the base's vtable: the emulator sees it fault), and `Circle`
gaining an override (objects the base built keep calling the base class's method)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import have_toolchain

from pehotpatch.api import check_pair
from pehotpatch.image.codeview.types import TypeLayout
from pehotpatch.rules.layout import layout_changes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def test_virtual_changes_are_layout_changes():
    base = TypeLayout("Shape", 8, "class", has_vfptr=True, virtuals=(("area", 0), ("scale", 8)))
    grown = TypeLayout("Shape", 8, "class", has_vfptr=True, virtuals=(("area", 0), ("scale", 8), ("extra", 16)))
    moved = TypeLayout("Shape", 8, "class", has_vfptr=True, virtuals=(("area", 0), ("mid", 8), ("scale", 16)))
    assert layout_changes(base, grown) == ["virtual method extra added (vtable slot +0x10)"]
    assert layout_changes(base, moved) == ["virtual method mid added (vtable slot +0x8)",
                                           "virtual method scale moved from vtable slot +0x8 to +0x10"]
    assert layout_changes(grown, base) == ["virtual method extra removed (was vtable slot +0x10)"]
    derived = TypeLayout("Circle", 16, "class", virtuals=(("area", None),))
    more = TypeLayout("Circle", 16, "class", virtuals=(("area", None), ("scale", None)))
    assert layout_changes(derived, more) == ["override of virtual method scale added"]
    assert layout_changes(more, derived) == ["override of virtual method scale removed"]
    assert layout_changes(base, base) == [] and layout_changes(more, more) == []


@pytest.mark.toolchain
@pytest.mark.parametrize(("hazard", "type_name", "change"), [
    ("vtable_grow_end", "Shape", "virtual method extra added (vtable slot +0x10)"),
    ("vtable_override_added", "Circle", "override of virtual method area added"),
])
def test_cpp_vtable_changes_are_rejected(tmp_path, hazard, type_name, change):
    if not have_toolchain():
        pytest.skip("needs clang-cl-22 / lld-link-22")
    import hazardgen_cpp

    hazardgen_cpp.generate(0, tmp_path, [hazard])
    n = tmp_path / "n"
    res = check_pair(tmp_path / "base.dll", n / "intermediate.dll", functions_file=n / "hotpatch_functions.txt")
    hp311 = [f for f in res.findings if f.rule == "HP311" and f.symbol == type_name]
    assert res.verdict == "rejected" and hp311, [(f.rule, f.message) for f in res.findings]
    assert change in hp311[0].evidence["changes"]


LAST_VTABLE_CPP = r"""
typedef unsigned int u32;
inline void *operator new(decltype(sizeof 0), void *p) noexcept { return p; }
#define API extern "C" __declspec(dllexport)
struct Shape { u32 k; explicit Shape(u32 v) : k(v) {} virtual u32 area(u32 x); };
__declspec(noinline) u32 Shape::area(u32 x) { return x + k; }
alignas(16) unsigned char g_store[16];
Shape *g_obj;
API u32 call(u32 x) { return g_obj->area(x) + ADD; }
extern "C" int __stdcall DllMain(void *, unsigned long reason, void *) {
    if (reason == 1) g_obj = new (g_store) Shape(3);
    return 1;
}
typedef struct { unsigned int Size; unsigned char rest[0x140 - 4]; } load_config;
extern "C" const load_config _load_config_used = {sizeof(load_config)};
"""


@pytest.mark.toolchain
def test_the_last_vtable_is_not_compared_into_the_debug_data(tmp_path):
    """The vtable, a public without a size, is the last data before the debug directory:
    its guessed extent ends where the debug data begin (they differ in every build), so a
    change of `call` alone is patchable; it was rejected (HP109, HP501 on DllMain, which
    stores the vtable's address) while the patch behaves."""
    import subprocess

    if not have_toolchain():
        pytest.skip("needs clang-cl-22 / lld-link-22")
    import pairgen

    for name, add in (("base", 1), ("intermediate", 2)):
        d = tmp_path / name
        d.mkdir()
        (d / "u.cpp").write_text(LAST_VTABLE_CPP.replace("ADD", str(add)))
        marks = ["-fms-secure-hotpatch-functions-file=hotpatch_functions.txt"] if name == "intermediate" else []
        (d / "hotpatch_functions.txt").write_text("call\n")
        subprocess.run([pairgen.CLANG, *pairgen.CFLAGS, "/TP", "/GR-", "/EHs-c-", "/std:c++17",
                        "/Zc:threadSafeInit-", *marks, "u.cpp", "/Fou.obj"], cwd=d, check=True, capture_output=True)
        subprocess.run([pairgen.LLD, "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib",
                        "/noimplib", "/debug", f"/pdb:{name}.pdb", "/pdbaltpath:%_PDB%", "/Brepro",
                        "/functionpadmin:6", "/hotpatchcompatible", f"/out:{name}.dll", "u.obj"], cwd=d, check=True,
                       capture_output=True)
    base, inter = tmp_path / "base" / "base.dll", tmp_path / "intermediate" / "intermediate.dll"
    res = check_pair(base, inter, functions_file=tmp_path / "intermediate" / "hotpatch_functions.txt")
    assert res.verdict == "patchable", [(f.rule, f.message) for f in res.findings]
    from pehotpatch.image.pe_reader import load_pe

    pe = load_pe(base)
    vtable = next(g for g in __import__("pehotpatch").load_image(base).index.globals if g.name == "??_7Shape@@6B@")
    debug = min(x for x in pe.structure_starts if x > vtable.rva)
    assert debug - vtable.rva < 64  # within the 64 bytes a guessed extent would compare
