"""Build the PDB/COFF reader test inputs with clang-cl-22 + lld-link-22.

Used two ways:
- by the tests (``build_sample``) into a temporary directory when the toolchain is
  installed, so they can compare pehp's reader with llvm-pdbutil-22 / llvm-readobj-22;
- as a script, to regenerate the small committed fixtures next to this file:
  ``python tests/data/pdb/build.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = ("clang-cl-22", "lld-link-22", "llvm-pdbutil-22", "llvm-readobj-22")

TARGETS = {
    "x64": ("x86_64-pc-windows-msvc", "x64"),
    "x86": ("i686-pc-windows-msvc", "x86"),
    "arm64": ("aarch64-pc-windows-msvc", "arm64"),
}

# (source, hot-patch function list) per sample
SAMPLES = {
    "sample": ("sample.c", "patched,telemetry_push"),
    "sample_cpp": ("sample_cpp.cpp", "?free_fn@ns@@YAHAEBUDerived@1@@Z"),
}

# What llvm-pdbutil prints for the committed fixture (the oracle when it is not installed).
DUMP_ARGS = [
    "dump",
    "--summary",
    "--symbols",
    "--publics",
    "--globals",
    "--types",
    "--section-headers",
]


def have_toolchain() -> bool:
    return all(shutil.which(t) for t in TOOLS)


def build_sample(name: str, arch: str, out: Path, *, bigobj: bool = False) -> tuple[Path, Path]:
    """Compile and link sample ``name`` for ``arch`` in ``out``; returns (obj, pdb)."""
    src_name, hp_list = SAMPLES[name]
    triple, machine = TARGETS[arch]
    out.mkdir(parents=True, exist_ok=True)
    src = out / src_name
    shutil.copyfile(HERE / src_name, src)
    obj = out / f"{name}_{arch}.obj"
    pdb = out / f"{name}_{arch}.pdb"
    dll = out / f"{name}_{arch}.dll"
    cc = [
        "clang-cl-22",
        f"--target={triple}",
        "/nologo",
        "/c",
        "/O2",
        "/Z7",
        "/GS-",
        "/Zl",
        "/Gy",
        "/GR-",
        "/hotpatch",
        f"-fms-secure-hotpatch-functions-list={hp_list}",
        "-ffile-compilation-dir=.",
        f"/Fo{obj.name}",
        src.name,
    ]
    if bigobj:
        cc.insert(-1, "/bigobj")
    subprocess.run(cc, cwd=out, check=True, capture_output=True)
    link = [
        "lld-link-22",
        "/nologo",
        "/dll",
        f"/machine:{machine}",
        "/noentry",
        "/nodefaultlib",
        "/debug",
        f"/pdb:{pdb.name}",
        "/pdbaltpath:%_PDB%",
        "/pdbsourcepath:/src",
        "/Brepro",
        f"/out:{dll.name}",
        obj.name,
    ]
    subprocess.run(link, cwd=out, check=True, capture_output=True)
    return obj, pdb


def pdbutil(pdb: Path, *args: str) -> str:
    return subprocess.run(
        ["llvm-pdbutil-22", *args, str(pdb)], check=True, capture_output=True, text=True
    ).stdout


def readobj(obj: Path, *args: str) -> str:
    return subprocess.run(
        ["llvm-readobj-22", *args, str(obj)], check=True, capture_output=True, text=True
    ).stdout


def main() -> int:
    if not have_toolchain():
        print("needs " + ", ".join(TOOLS), file=sys.stderr)
        return 1
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        obj, pdb = build_sample("sample", "x64", Path(tmp))
        shutil.copyfile(obj, HERE / obj.name)
        shutil.copyfile(pdb, HERE / pdb.name)
        (HERE / "sample_x64.pdbutil.txt").write_text(pdbutil(pdb, *DUMP_ARGS))
        # COFF symbols and CodeView symbol records; the type records are checked through
        # the PDB dump, and the temporary directory name is not kept.
        dump = readobj(obj, "--codeview", "--symbols")
        keep, skip = [], False
        for ln in dump.splitlines(keepends=True):
            if ln.startswith("CodeViewTypes ["):
                skip = True
            elif ln[:1].isalpha():
                skip = False
            if not skip and not ln.startswith("File:"):
                keep.append(ln)
        (HERE / "sample_x64.readobj.txt").write_text("".join(keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
