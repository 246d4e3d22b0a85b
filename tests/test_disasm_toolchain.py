"""The instruction normaliser on DLLs built by clang-cl / lld-link for each machine.

Two builds of one C file: in the second an unrelated function and an unrelated global
come first, so ``moved`` and the data it uses move (its bytes change), and ``changed``
really changes.  The normalised forms, with refs named through each image's own exports
and imports, must be equal for ``moved`` and different for ``changed``.
"""

from __future__ import annotations

import bisect
import shutil
import subprocess
from pathlib import Path

import pefile
import pytest

from pehotpatch.disasm import Machine, normalize

pytestmark = pytest.mark.toolchain

if not all(shutil.which(t) for t in ("clang-cl-22", "lld-link-22", "llvm-dlltool-22")):
    pytest.skip("needs clang-cl-22, lld-link-22 and llvm-dlltool-22", allow_module_level=True)

COMMON = """
__declspec(dllimport) unsigned long __stdcall GetTickCount(void);
"""
GLOBALS = """
__declspec(dllexport) int g_counter;
__declspec(dllexport) int g_table[16] = {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16};
"""
SHARED = """__declspec(dllexport) __declspec(noinline) int helper(int x) { return x * 3 + g_table[x & 15]; }
__declspec(dllexport) __declspec(noinline) int moved(int x) {
    g_counter += x;
    for (int i = 0; i < x; i++) g_counter ^= g_table[i & 15] + i;
    return helper(x) + g_table[2] + (int)GetTickCount();
}
__declspec(dllexport) __declspec(noinline) int simple(int x) {
    int r = helper(x);
    if (r > 10) r += helper(r) + g_counter;
    return r;
}
"""
V1 = COMMON + GLOBALS + SHARED + "__declspec(dllexport) __declspec(noinline) int changed(int x) { return helper(x) - 1; }\n"
# V2: a new global and a new function in front move everything else
V2 = (
    COMMON
    + "\n__declspec(dllexport) int g_added[64] = {7};"
    + GLOBALS
    + "__declspec(dllexport) __declspec(noinline) int added(int x) { return g_added[x & 63] * x + 11; }\n"
    + SHARED
    + "__declspec(dllexport) __declspec(noinline) int changed(int x) { return helper(x) - 2; }\n"
)

# machine -> (clang target, lld /machine, llvm-dlltool -m, kernel32 export spelling)
ARCHS = {
    Machine.X64: ("x86_64-pc-windows-msvc", "x64", "i386:x86-64", "GetTickCount"),
    Machine.X86: ("i686-pc-windows-msvc", "x86", "i386", "GetTickCount@0"),
    Machine.ARM64: ("aarch64-pc-windows-msvc", "arm64", "arm64", "GetTickCount"),
}
REL_TYPES = {3, 10}  # HIGHLOW, DIR64


def build(tmp: Path, machine: Machine, name: str, source: str, hotpatch: bool = True) -> Path:
    target, mach, dlltool_m, k32 = ARCHS[machine]
    d = tmp / f"{machine.value}_{name}"
    d.mkdir()
    (d / "k.def").write_text(f"LIBRARY kernel32.dll\nEXPORTS\n{k32}\n")
    lib_cmd = ["llvm-dlltool-22", "-m", dlltool_m, "-d", "k.def", "-l", "k.lib"]
    if machine is Machine.X86:
        lib_cmd.append("-k")
    (d / "m.c").write_text(source)
    cmds = [
        lib_cmd,
        ["clang-cl-22", f"--target={target}", "/nologo", "/c", "/O2", "/Z7", "/GS-", "/Zl",
         "/Gy", *(["/hotpatch"] if hotpatch else []), "m.c", "/Fom.obj"],
        ["lld-link-22", "/nologo", "/dll", f"/machine:{mach}", "/noentry", "/nodefaultlib",
         "/debug", "/out:m.dll", "m.obj", "k.lib"],
    ]  # fmt: skip
    for cmd in cmds:
        subprocess.run(cmd, cwd=d, check=True, capture_output=True)
    return d / "m.dll"


class Image:
    """What the test needs from a PE file, read with pefile."""

    def __init__(self, path: Path, machine: Machine):
        pe = pefile.PE(str(path))
        self.pe = pe
        self.machine = machine
        self.image_base = pe.OPTIONAL_HEADER.ImageBase
        self.names: dict[int, str] = {}
        for s in pe.DIRECTORY_ENTRY_EXPORT.symbols:
            self.names[s.address] = s.name.decode().lstrip("_")
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
            for imp in entry.imports:
                self.names[imp.address - self.image_base] = "imp:" + imp.name.decode()
        self.sorted_rvas = sorted(self.names)
        self.relocs = sorted(
            e.rva
            for block in getattr(pe, "DIRECTORY_ENTRY_BASERELOC", [])
            for e in block.entries
            if e.type in REL_TYPES
        )
        text = next(s for s in pe.sections if s.Name.rstrip(b"\0") == b".text")
        self.text_end = text.VirtualAddress + text.Misc_VirtualSize
        self.funcs = sorted(rva for rva in self.names if text.VirtualAddress <= rva < self.text_end)

    def func(self, name: str) -> tuple[int, bytes]:
        rva = next(r for r, n in self.names.items() if n == name)
        i = self.funcs.index(rva)
        end = self.funcs[i + 1] if i + 1 < len(self.funcs) else self.text_end
        return rva, self.pe.get_data(rva, end - rva)

    def name_of(self, rva: int) -> str:
        """Export or import name (+offset) in the same section, else section+offset
        (anonymous constants)."""
        sec = self.pe.get_section_by_rva(rva)
        i = bisect.bisect_right(self.sorted_rvas, rva) - 1
        if i >= 0 and self.pe.get_section_by_rva(self.sorted_rvas[i]) is sec:
            base = self.sorted_rvas[i]
            off = rva - base
            return self.names[base] + (f"+{off:#x}" if off else "")
        if sec is None:
            return hex(rva)
        return sec.Name.rstrip(b"\0").decode() + f"+{rva - sec.VirtualAddress:#x}"

    def normalized(self, name: str):
        rva, code = self.func(name)
        n = normalize(self.machine, code, rva, image_base=self.image_base, relocs=self.relocs)
        return n, code


@pytest.fixture(scope="module", params=list(ARCHS), ids=lambda m: m.value)
def pair(request, tmp_path_factory):
    machine = request.param
    tmp = tmp_path_factory.mktemp("disasm")
    a = Image(build(tmp, machine, "v1", V1), machine)
    b = Image(build(tmp, machine, "v2", V2), machine)
    return machine, a, b


def test_moved_function_normalises_equal(pair):
    machine, a, b = pair
    na, code_a = a.normalized("moved")
    nb, code_b = b.normalized("moved")
    assert a.func("moved")[0] != b.func("moved")[0]  # it did move
    assert code_a != code_b  # and its bytes changed with the layout
    assert na.shape == nb.shape
    assert na.symbolic_refs(a.name_of) == nb.symbolic_refs(b.name_of)
    named = {name for _kind, name in na.symbolic_refs(a.name_of)}
    assert {"helper", "g_counter", "g_table+0x8", "imp:GetTickCount"} <= named
    assert na.shape.count("@") == len(na.refs)
    assert a.normalized("helper")[0].key(a.name_of) == b.normalized("helper")[0].key(b.name_of)


def test_changed_function_normalises_different(pair):
    machine, a, b = pair
    na, _ = a.normalized("changed")
    nb, _ = b.normalized("changed")
    assert na.key(a.name_of) != nb.key(b.name_of)
    assert na.symbolic_refs(a.name_of) == nb.symbolic_refs(b.name_of)  # same callee
    assert na.shape != nb.shape  # -1 vs -2


def test_refs_kinds_per_machine(pair):
    machine, a, _ = pair
    n, _ = a.normalized("moved")
    kinds = {(k, name) for k, name in n.symbolic_refs(a.name_of)}
    assert ("call", "helper") in kinds
    if machine is Machine.ARM64:
        # the import goes through adrp+ldr of the IAT slot, then blr
        assert ("data", "imp:GetTickCount") in kinds
    else:
        assert ("indirect_call", "imp:GetTickCount") in kinds
    if machine is Machine.X86:
        assert n.hotpatch_nop in (b"\x66\x90", b"\x8b\xff")
    # listing names every ref
    text = "\n".join(n.listing(a.name_of))
    assert "@" not in text and "helper" in text


@pytest.mark.parametrize("machine", [Machine.X64, Machine.X86], ids=lambda m: m.value)
def test_hotpatch_noop_only_difference(machine, tmp_path):
    with_nop = Image(build(tmp_path, machine, "hp", V1), machine)
    without = Image(build(tmp_path, machine, "nohp", V1, hotpatch=False), machine)
    # (a function without loops: /hotpatch also moves loop alignment padding)
    a, _ = with_nop.normalized("simple")
    b, _ = without.normalized("simple")
    assert a.hotpatch_nop != b"" and b.hotpatch_nop == b""
    assert a.key(with_nop.name_of) == b.key(without.name_of)
    assert a.entry_is_branch_target is False
    assert a.internal_targets and {t - 2 for t in a.internal_targets} == b.internal_targets
