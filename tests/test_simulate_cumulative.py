"""A real cumulative patch: pehplib rebuilt with two fixes (fix_globals and body_fix, both
functions listed for clang), emitted with sequence number 2 and applied over the
fix_globals patch; and its two forward records with their targets swapped.

Builds the intermediate with clang-cl-22 / lld-link-22 the way samples/build.sh does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SAMPLES, have_toolchain
from test_simulate_broken import FUNCTION, broken, set_word
from test_simulate_samples import calls_of, finals  # noqa: F401  (fixture)

from pehotpatch.emulate.results import F_MISMATCH, F_WRONG_FUNCTION
from pehotpatch.emulate.simulate import simulate

pytestmark = [pytest.mark.toolchain,
              pytest.mark.skipif(not have_toolchain(), reason="needs clang-cl-22 / lld-link-22")]

ARCH = {"x64": ("x86_64-pc-windows-msvc", "x64", "i386:x86-64", "kernel32.def", 6),
        "x86": ("i686-pc-windows-msvc", "x86", "i386", "kernel32-x86.def", 6),
        "arm64": ("aarch64-pc-windows-msvc", "arm64", "arm64", "kernel32.def", 8)}
FIXES = ("PEHP_FIX_GLOBALS", "PEHP_BODY_FIX")
FUNCS = ("telemetry_record", "telemetry_checksum")


def build_two_fixes(arch: str, d: Path) -> Path:
    target, machine, dllmachine, deffile, pad = ARCH[arch]
    d.mkdir(parents=True)
    for f in (*(SAMPLES / "src").glob("pehplib*"), SAMPLES / deffile):
        shutil.copy(f, d)
    (d / "hotpatch_functions.txt").write_text("\n".join(FUNCS) + "\n")
    for tu in ("pehplib.c", "pehplib_report.c"):
        subprocess.run(["clang-cl-22", f"--target={target}", "/nologo", "/c", "/O2", "/Z7", "/GS-", "/Zl",
                        "/Gy", "/Brepro", "-ffile-compilation-dir=.", "/hotpatch",
                        *(f"-D{m}" for m in FIXES), "-fms-secure-hotpatch-functions-file=hotpatch_functions.txt",
                        tu, f"/Fo{tu[:-2]}.obj"], cwd=d, check=True, capture_output=True)
    subprocess.run(["llvm-dlltool-22", "-m", dllmachine, *(["-k"] if arch == "x86" else []), "-d", deffile,
                    "-l", "kernel32.lib"], cwd=d, check=True, capture_output=True)
    subprocess.run(["lld-link-22", "/nologo", "/dll", f"/machine:{machine}", "/entry:DllMain", "/nodefaultlib",
                    "/noimplib", "/debug", "/pdb:intermediate.pdb", "/pdbaltpath:%_PDB%", "/Brepro",
                    f"/functionpadmin:{pad}", "/hotpatchcompatible", "/out:intermediate.dll",
                    "pehplib.obj", "pehplib_report.obj", "kernel32.lib"], cwd=d, check=True, capture_output=True)
    objs = d / "intermediate.objs"
    objs.mkdir()
    for o in ("pehplib.obj", "pehplib_report.obj"):
        shutil.copy(d / o, objs)
    return d


@pytest.fixture(scope="module")
def two_fixes(tmp_path_factory: pytest.TempPathFactory):
    """arch -> (directory of the two-fix intermediate, its final image with sequence 2)."""
    from pehotpatch.api import emit_final

    root = tmp_path_factory.mktemp("two-fixes")
    out = {}
    for arch in ARCH:
        d = build_two_fixes(arch, root / arch)
        final = d / "final.dll"
        emit_final(SAMPLES / arch / "fix_globals" / "base.dll", d / "intermediate.dll", final,
                   objects=d / "intermediate.objs", functions_file=d / "hotpatch_functions.txt", sequence=2)
        out[arch] = (d, final)
    return out


def both_calls(arch: str) -> list[str]:
    return calls_of(SAMPLES / arch / "fix_globals") + calls_of(SAMPLES / arch / "body_fix")


@pytest.mark.parametrize("arch", list(ARCH))
def test_cumulative_patch_over_the_first(arch: str, two_fixes, finals):  # noqa: F811
    """Sequence 2 carries both fixes: nothing is restored, telemetry_record moves to the
    new patch image's copy, telemetry_checksum is redirected too, and the base behaves
    as the two-fix intermediate, from the first call and when applied midway."""
    d, final2 = two_fixes[arch]
    first = SAMPLES / arch / "fix_globals"
    calls = both_calls(arch)
    for k in (0, len(calls_of(first)) // 2):
        r = simulate(first / "base.dll", finals(first), calls, patch_after=k, then=final2,
                     pdb_final=first / "intermediate.pdb", pdb_then=d / "intermediate.pdb", undo=True)
        assert r.ok, [f.message for f in r.findings]
        p1, p2 = r.patches
        assert (p1.sequence, p2.sequence, p2.restored) == (1, 2, [])
        assert {x.function for x in p2.redirects if x.direction == "forward"} == set(FUNCS)
        if k == 0:
            assert [row.patched.outcome() for row in r.calls] == [row.intermediate.outcome() for row in r.calls]
        writes = [w for row in r.calls[k:] for w in row.patched.writes]
        assert writes and {w.image for w in writes} == {"base"}
        assert r.undo is not None and r.undo.identical and r.undo.restored == 2


@pytest.mark.parametrize("arch", list(ARCH))
def test_swapped_forward_targets(arch: str, two_fixes, tmp_path: Path):
    """The two forward records with their patch targets exchanged: telemetry_record runs
    the new telemetry_checksum and the other way round."""
    d, final2 = two_fixes[arch]
    base = SAMPLES / arch / "fix_globals" / "base.dll"

    def edit(data: bytearray, t) -> None:
        a, b = t.records(FUNCTION, False)
        set_word(data, a, 1, b.words[1])
        set_word(data, b, 1, a.words[1])

    bad = broken(final2, tmp_path, "swap", edit)
    r = simulate(base, bad, both_calls(arch), pdb_final=d / "intermediate.pdb")
    kinds = [f.kind for f in r.findings]
    assert kinds.count(F_WRONG_FUNCTION) == 2, [f.message for f in r.findings]
    assert F_MISMATCH in kinds
    good = simulate(base, final2, both_calls(arch), pdb_final=d / "intermediate.pdb")
    assert good.ok, [f.message for f in good.findings]
