"""The real-code run: real upstream C libraries at two releases, built here as hot-patch
pairs the way a new user would, and gated with ``pehp check``.

    make realcode             # or: .venv/bin/python tools/realcode.py [--out docs/REALCODE.md]
    .venv/bin/python tools/realcode.py --library zlib-ng --out /tmp/zlib-ng.md   # one library

For each library the sources of two releases come from the sdists of the Python
packages that bundle them (``pip download --no-binary``, cached under .cache/realcode/):
lz4 1.9.3 and 1.9.4 (python-lz4 4.0.2 and 4.3.3), xxHash 0.8.1 and 0.8.2 (python-xxhash
3.0.0 and 3.4.1), Brotli 1.0.9 and 1.1.0 (Brotli 1.0.9 and 1.1.0), and, held out from
the tuning of the pairing, PPMd as in pyppmd 1.1.0 and 1.1.1, cmark-gfm 0.29.0.gfm.6
and 0.29.0.gfm.13 (cmarkgfm 2022.10.27 and 2024.1.14), zlib-ng 2.2.5 and 2.3.3 (zlib-ng
1.0.0 and 1.1.0) and pycryptodome 4.4.0 and 4.5.0 (its portable C primitives).  Each
release is compiled with clang-cl-22 (``/O2 /Z7 /GS- /Zl /Gy /hotpatch``) and linked with
lld-link-22 into a DLL exporting the library's API (the linker exports it for PPMd,
which does not dllexport), with the stand-in C runtime of tools/realcode_crt.py: a
small support unit (DllMain, a load configuration, ``_fltused``), headers declaring what
the code uses, and import libraries made by llvm-dlltool-22 for the C runtime functions
the code calls (memcpy & co. from vcruntime140.dll, malloc & co., log2, exit, string and
stdio functions, qsort and bsearch from the UCRT).  Headers a library's own build
generates from templates are written the same way (``Library.configure``).

Per pair:

1. build the base from the old release;
2. build the new release once without hot-patch flags;
3. the ground truth (tools/realcode_truth.py) compares the two builds' objects function
   by function (relocations replaced by their targets' names), independently of pehp;
4. write the functions file: every function the truth calls changed, and every new
   one (the functions whose object code changed), and rebuild the
   intermediate with ``-fms-secure-hotpatch-functions-file``;
5. measure ``pehp diff`` of base and intermediate, with and without the PDBs, against
   the truth of those two builds (tools/realcode_measure.py): recall and false positives;
6. run ``pehp check`` (objects and functions file given).

The report (default docs/REALCODE.md) gets a table of the figures per pair, one of the
verdicts and findings per rule, and the lists behind them; the raw check JSON goes to
.cache/realcode/.  The judgement of the findings (which are right, which are not) is
written by hand under the generated part of the report and kept when it is rewritten.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realcode_crt import CRT_DEFS, HEADERS, SUPPORT_C  # noqa: E402
from realcode_measure import Measure, measure_pair  # noqa: E402
from realcode_truth import Truth, compare_dirs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "realcode"
REPORT = ROOT / "docs" / "REALCODE.md"
GENERATED_END = "<!-- end of the generated part -->"

CLANG = "clang-cl-22"
LLD = "lld-link-22"
DLLTOOL = "llvm-dlltool-22"
# /Gs1000000: no stack probes (__chkstk is the C runtime's); /Ipehp_crt: the headers below
CFLAGS = ["--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/Z7", "/GS-", "/Zl", "/Gy",
          "/hotpatch", "/Brepro", "-ffile-compilation-dir=.", "/Gs1000000", "/Ipehp_crt"]


@dataclass(frozen=True)
class Release:
    package: str  # the PyPI project whose sdist bundles the C sources
    version: str  # of the package
    library_version: str  # of the C library


@dataclass(frozen=True)
class Library:
    name: str
    root: str  # the directory of the C library inside the sdist (extracted with its subdirectories)
    sources: tuple[str, ...]  # glob patterns relative to root
    defines: tuple[str, ...]
    releases: tuple[Release, Release]
    includes: tuple[str, ...] = (".",)  # relative to root
    exports: tuple[str, ...] = ()  # exported by the linker (/export:), for a library that does not dllexport

    excludes: tuple[str, ...] = ()  # source files (relative to root) that are not part of the library
    # headers its build system generates: (output, template) relative to root, written into the
    # build with every @NAME@ of the template replaced by nothing (no symbol prefix, no options)
    configure: tuple[tuple[str, str], ...] = ()

    def source_files(self, src: Path) -> list[str]:
        return sorted({str(p.relative_to(src)) for pat in self.sources for p in src.glob(pat)} - set(self.excludes))


BROTLI_API = ("BROTLI_SHARED_COMPILATION", "BROTLICOMMON_SHARED_COMPILATION", "BROTLIDEC_SHARED_COMPILATION",
              "BROTLIENC_SHARED_COMPILATION")

PPMD_API = ("Ppmd7_Construct", "Ppmd7_Alloc", "Ppmd7_Free", "Ppmd7_Init", "Ppmd7z_RangeDec_Init",
            "Ppmd7_DecodeSymbol", "Ppmd7z_RangeEnc_Init", "Ppmd7z_RangeEnc_FlushData", "Ppmd7_EncodeSymbol",
            "Ppmd8_Construct", "Ppmd8_Alloc", "Ppmd8_Free", "Ppmd8_Init", "Ppmd8_RangeDec_Init",
            "Ppmd8_DecodeSymbol", "Ppmd8_RangeEnc_Init", "Ppmd8_RangeEnc_FlushData", "Ppmd8_EncodeSymbol")

PYCRYPTODOME_SOURCES = ("AES.c", "ARC2.c", "ARC4.c", "CAST.c", "DES.c", "DES3.c", "blowfish.c", "raw_ecb.c",
                        "raw_cbc.c", "raw_cfb.c", "raw_ctr.c", "raw_ofb.c", "raw_ocb.c", "raw_xts.c",
                        "ghash_portable.c", "MD2.c", "MD4.c", "MD5.c", "RIPEMD160.c", "SHA1.c", "SHA224.c",
                        "SHA256.c", "SHA384.c", "SHA512.c", "keccak.c", "blake2b.c", "blake2s.c", "Salsa20.c",
                        "chacha20.c", "poly1305.c", "strxor.c", "base64.c", "pkcs1_decode.c")

LIBRARIES = (
    Library("lz4", "lz4libs", ("lz4.c", "lz4hc.c", "lz4frame.c", "xxhash.c"), ("LZ4_DLL_EXPORT=1",),
            (Release("lz4", "4.0.2", "1.9.3"), Release("lz4", "4.3.3", "1.9.4"))),
    Library("xxhash", "deps/xxhash", ("xxhash.c",), ("XXH_EXPORT", "WIN32"),
            (Release("xxhash", "3.0.0", "0.8.1"), Release("xxhash", "3.4.1", "0.8.2"))),
    Library("brotli", "c", ("common/*.c", "dec/*.c", "enc/*.c"), BROTLI_API,
            (Release("Brotli", "1.0.9", "1.0.9"), Release("Brotli", "1.1.0", "1.1.0")), includes=("include",)),
    # PPMd var.H and var.I (7-Zip's Ppmd7/Ppmd8); the API is not dllexported, the linker exports it
    Library("ppmd", "src/lib/ppmd", ("Ppmd7.c", "Ppmd7Dec.c", "Ppmd7Enc.c", "Ppmd8.c", "Ppmd8Dec.c", "Ppmd8Enc.c"), (),
            (Release("pyppmd", "1.1.0", "1.1.0"), Release("pyppmd", "1.1.1", "1.1.1")), exports=PPMD_API),
    Library("cmark-gfm", "", ("third_party/cmark/src/*.c", "third_party/cmark/extensions/*.c"),
            ("libcmark_gfm_EXPORTS", "libcmark_gfm_extensions_EXPORTS"),
            (Release("cmarkgfm", "2022.10.27", "0.29.0.gfm.6"), Release("cmarkgfm", "2024.1.14", "0.29.0.gfm.13")),
            includes=("third_party/cmark/src", "third_party/cmark/extensions", "generated/windows"),
            excludes=("third_party/cmark/src/main.c",)),
    # zlib-ng's generic C code (no X86_FEATURES: the SIMD files need per-file -m flags), with
    # its run-time dispatch (functable.c) kept, as its CMake build with WITH_OPTIM=OFF makes it
    # (WITH_ALL_FALLBACKS: 2.3.3's table on x64 otherwise expects SSE2 code for some entries
    # and aborts when it finds them empty); the gz* file functions need the CRT's I/O
    Library("zlib-ng", "src/zlib_ng/zlib-ng", ("*.c", "arch/generic/*.c"), ("ZLIB_DLL", "WITH_ALL_FALLBACKS"),
            (Release("zlib_ng", "1.0.0", "2.2.5"), Release("zlib_ng", "1.1.0", "2.3.3")),
            excludes=("gzlib.c", "gzread.c", "gzwrite.c"),
            configure=(("zconf-ng.h", "zconf-ng.h.in"), ("zlib-ng.h", "zlib-ng.h.in"),
                       ("zlib_name_mangling-ng.h", "zlib_name_mangling.h.empty"))),
    # pycryptodome's portable C primitives (block ciphers, their modes, hashes, stream ciphers,
    # GHASH) as one DLL: each listed file is a module of its own that dllexports its API
    # (EXPORT_SYM); the SIMD variants (AES-NI, SHA-NI, CLMUL, AVX2) need per-file -m flags; the
    # defines are those its setup.py gives an x64 Windows build (no __int128 there)
    Library("pycryptodome", "src", PYCRYPTODOME_SOURCES,
            ("NO_CPYTHON_MODULE", "HAVE_STDINT_H", "PYCRYPTO_LITTLE_ENDIAN", "SYS_BITS=64"),
            (Release("pycryptodome", "4.4.0", "4.4.0"), Release("pycryptodome", "4.5.0", "4.5.0"))),
)

@dataclass
class Result:
    library: str
    base: str
    new: str
    functions: tuple[int, int] = (0, 0)
    truth: Truth | None = None  # old release against the new one compiled plainly
    truth_inter: Truth | None = None  # old release against the intermediate (what pehp diff compares)
    listed: list[str] = field(default_factory=list)  # the functions file
    unlisted_differing: list[str] = field(default_factory=list)  # plain vs intermediate, outside the list
    with_pdb: Measure | None = None
    without_pdb: Measure | None = None
    verdict: str = ""
    findings: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> severity -> count
    seconds: float = 0.0
    error: str = ""


def _run(cmd: list[str], cwd: Path) -> None:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed in {cwd}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")


def fetch(rel: Release, lib: Library) -> Path:
    """The C sources of one release, extracted under .cache/realcode/src/."""
    dest = CACHE / "src" / f"{lib.name}-{rel.library_version}"
    if dest.is_dir() and lib.source_files(dest):
        return dest
    sdists = CACHE / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)

    def archives() -> list[Path]:
        return sorted(p for p in sdists.glob(f"{rel.package}-{rel.version}.*") if p.name.endswith((".tar.gz", ".zip")))

    if not archives():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"{rel.package}=={rel.version}", "-d", str(sdists)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    found = archives()
    if not found:
        raise RuntimeError(f"pip download gave no sdist for {rel.package}=={rel.version}")
    prefix = "/".join(x for x in (f"{rel.package}-{rel.version}", lib.root) if x) + "/"
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in _members(found[0]):
        rel_path = Path(name[len(prefix):]) if name.startswith(prefix) else None
        if rel_path is None or rel_path.is_absolute() or ".." in rel_path.parts or not rel_path.parts:
            continue
        (tmp / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel_path).write_bytes(data)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _members(archive: Path) -> list[tuple[str, bytes]]:
    """(name, contents) of every regular file of a .tar.gz or .zip sdist."""
    out = []
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    out.append((info.filename, zf.read(info)))
        return out
    with tarfile.open(archive) as tf:
        for m in tf.getmembers():
            fh = tf.extractfile(m) if m.isfile() else None
            if fh is not None:
                out.append((m.name, fh.read()))
    return out


def build(lib: Library, src: Path, out: Path, name: str, functions_file: Path | None) -> Path:
    """Compile and link one DLL; returns its path (objects stay in ``out/<name>.objs``)."""
    work = out / f"{name}.build"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    for output, template in lib.configure:
        (work / output).write_text(re.sub(r"@\w+@", "", (work / template).read_text()))
    (work / "pehp_support.c").write_text(SUPPORT_C)
    (work / "pehp_crt").mkdir()
    for h, text in HEADERS.items():
        (work / "pehp_crt" / h).parent.mkdir(parents=True, exist_ok=True)
        (work / "pehp_crt" / h).write_text(text)
    flags = [*CFLAGS, *(f"/D{d}" for d in lib.defines), *(f"/I{i}" for i in lib.includes)]
    if functions_file is not None:
        shutil.copy2(functions_file, work / "hotpatch_functions.txt")
        flags.append("-fms-secure-hotpatch-functions-file=hotpatch_functions.txt")
    objs = []
    for tu in (*lib.source_files(src), "pehp_support.c"):
        obj = tu[:-2].replace("/", "_") + ".obj"
        _run([CLANG, *flags, tu, f"/Fo{obj}"], work)
        objs.append(obj)
    libs = []
    for stem, (dll, names) in CRT_DEFS.items():
        (work / f"{stem}.def").write_text(f"LIBRARY {dll}\nEXPORTS\n" + "".join(f"{n}\n" for n in names))
        _run([DLLTOOL, "-m", "i386:x86-64", "-d", f"{stem}.def", "-l", f"{stem}.lib"], work)
        libs.append(f"{stem}.lib")
    # clang-22 defines __ref_X in every object whose listed functions reach X, each as a weak
    # external with a default of its own; lld-link-22 calls those duplicates (they are the same
    # pointer to X), so the intermediate is linked with /force:multiple and keeps the first
    force = ["/force:multiple"] if functions_file is not None else []
    _run([LLD, "/nologo", "/dll", "/machine:x64", "/entry:DllMain", "/nodefaultlib", "/noimplib", "/debug",
          f"/pdb:{name}.pdb", "/pdbaltpath:%_PDB%", "/Brepro", "/functionpadmin:6", "/hotpatchcompatible", *force,
          f"/out:{name}.dll", *(f"/export:{e}" for e in lib.exports), *objs, *libs], work)
    for ext in ("dll", "pdb"):
        shutil.copy2(work / f"{name}.{ext}", out / f"{name}.{ext}")
    objdir = out / f"{name}.objs"
    shutil.rmtree(objdir, ignore_errors=True)
    objdir.mkdir()
    for o in objs:
        shutil.copy2(work / o, objdir / o)
    shutil.rmtree(work)
    return out / f"{name}.dll"


def listed_names(keys: list[str]) -> list[str]:
    """The functions file's names for ground-truth keys (a static one is named without its object)."""
    return sorted({k.rsplit(":", 1)[-1] for k in keys})


def build_pair(lib: Library, out: Path) -> tuple[Truth, Truth, list[str], Path]:
    """Build base, plain new release and intermediate under ``out``; the intermediate's
    functions file is the ground truth's changed and added functions.  Returns the truth
    (base against plain), the truth of what ``pehp diff`` compares (base against
    intermediate), the functions whose objects differ between plain and intermediate
    although they are not listed (expected: none) and the functions file."""
    old, new = lib.releases
    build(lib, fetch(old, lib), out, "base", None)
    build(lib, fetch(new, lib), out, "rebuild", None)
    truth = compare_dirs(out / "base.objs", out / "rebuild.objs")
    ff = out / "hotpatch_functions.txt"
    ff.write_text("".join(f"{n}\n" for n in listed_names([*truth.changed, *truth.added])))
    build(lib, fetch(new, lib), out, "intermediate", ff)
    truth_inter = compare_dirs(out / "base.objs", out / "intermediate.objs")
    listed = set(ff.read_text().split())
    side = compare_dirs(out / "rebuild.objs", out / "intermediate.objs")
    unlisted = sorted(k for k in side.changed if k.rsplit(":", 1)[-1] not in listed)
    return truth, truth_inter, unlisted, ff


def run_pair(lib: Library) -> Result:
    from pehotpatch.check import run_check

    old, new = lib.releases
    res = Result(lib.name, old.library_version, new.library_version)
    out = CACHE / "pairs" / f"{lib.name}-{old.library_version}-{new.library_version}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        res.truth, res.truth_inter, res.unlisted_differing, ff = build_pair(lib, out)
        res.listed = ff.read_text().split()
        res.with_pdb, res.without_pdb, d, _ = measure_pair(out, res.truth_inter, out / "intermediate.objs", ff)
        res.functions = (len(d.base.index.functions), len(d.new.index.functions))
        check = run_check(d)
        res.verdict = check.verdict
        counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for f in check.findings:
            counts[f.rule][f.severity] += 1
        res.findings = {r: dict(sorted(c.items())) for r, c in sorted(counts.items())}
        (out / "check.json").write_text(json.dumps([f.to_json() for f in check.findings], indent=1))
    except Exception as exc:  # noqa: BLE001 - reported in the table
        res.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    res.seconds = time.perf_counter() - t0
    return res


def _names(xs: list[str], limit: int = 8) -> str:
    if not xs:
        return "none"
    head = ", ".join(f"`{x}`" for x in xs[:limit])
    return head + (f" (+{len(xs) - limit} more)" if len(xs) > limit else "")


def _pct(m: Measure) -> str:
    return f"{100 * m.recall:.1f} %"


def _accuracy_row(r: Result) -> str:
    assert r.truth and r.truth_inter and r.with_pdb and r.without_pdb
    w, b = r.with_pdb, r.without_pdb
    return (f"| {r.library} | {r.base} -> {r.new} | {len(r.truth.changed)} | {len(r.truth_inter.changed)} | "
            f"{w.pehp_changed} | {_pct(w)} | {len(w.false_positives)} | "
            f"{b.pehp_changed} | {_pct(b)} | {len(b.false_positives)} |")


def _details(r: Result) -> list[str]:
    assert r.truth and r.truth_inter and r.with_pdb and r.without_pdb
    t, ti = r.truth, r.truth_inter
    only_listing = sorted(set(ti.changed) - set(t.changed))
    lines = [
        f"**{r.library} {r.base} -> {r.new}**: {len(t.changed)} functions changed "
        f"({len(t.changed_code)} in their code: {_names(t.changed_code)}; "
        f"{len(t.changed_through_data)} only through read-only data: {_names(t.changed_through_data)}); "
        f"{len(t.added)} added ({_names(t.added)}), {len(t.removed)} removed ({_names(t.removed)}), "
        f"{t.unchanged} unchanged. The functions file lists {len(r.listed)} names. "
        f"In the intermediate {len(ti.changed)} functions differ from the base; "
        f"{len(only_listing)} of them only because the list names them: {_names(only_listing)}. "
        f"Functions outside the list whose objects differ between the plain build and the intermediate: "
        f"{_names(r.unlisted_differing)}.",
        "",
        f"Objects: exports added {_names(t.exports_added)}, removed {_names(t.exports_removed)}; "
        f"imports added {_names(t.imports_added)}, removed {_names(t.imports_removed)}; mutable data "
        f"changed {_names(t.mutable_changed)}, added {_names(t.mutable_added)}, removed {_names(t.mutable_removed)}.",
        "",
    ]
    for label, m in (("with PDBs", r.with_pdb), ("without PDBs", r.without_pdb)):
        lines += [f"pehp {label}: missed {_names(m.missed, 12)}; false positives {_names(m.false_positives, 12)}.", ""]
    return lines


def render(results: list[Result], tail: str) -> str:
    lines = [
        "# Real code: upstream C libraries at two releases",
        "",
        "Generated by `make realcode` (`tools/realcode.py`); the sources come from the sdists of",
        "the Python packages that bundle them. Per pair: the base from the old release; the new",
        "release compiled plainly; the ground truth from the two builds' objects",
        "(`tools/realcode_truth.py`: every /Gy function section's bytes with each relocated field",
        "replaced by its target's name and addend, read-only data it names compared the same way;",
        "no pehp code involved); the intermediate compiled with the truth's changed and added",
        "functions as its hot-patch functions file. `pehp diff` of base and intermediate is then",
        "measured against the truth of those two builds (`tools/realcode_measure.py`): with the",
        "PDBs, and with the DLLs alone (structural pairing only).",
        "",
        "| library | releases | truth changed | differ in the intermediate | with PDB: pehp changed | recall | false positives | without PDB: pehp changed | recall | false positives |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.library} | {r.base} -> {r.new} | failed: {r.error} | | | | | | | |")
        else:
            lines.append(_accuracy_row(r))
    lines += [
        "",
        "`pehp check` of each pair (with PDBs, objects and functions file):",
        "",
        "| library | releases | functions base/intermediate | verdict | findings (rule: errors/warnings/notes) | time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            continue
        cells = [f"{rule}: {c.get('error', 0)}/{c.get('warning', 0)}/{c.get('note', 0)}"
                 for rule, c in r.findings.items()]
        lines.append(f"| {r.library} | {r.base} -> {r.new} | {r.functions[0]}/{r.functions[1]} | {r.verdict} | "
                     f"{', '.join(cells) or 'none'} | {r.seconds:.1f} s |")
    lines.append("")
    for r in results:
        if not r.error:
            lines += _details(r)
    lines += [GENERATED_END, ""]
    return "\n".join(lines) + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPORT))
    ap.add_argument("--library", action="append", choices=[lib.name for lib in LIBRARIES])
    a = ap.parse_args(argv)
    if a.library and Path(a.out).resolve() == REPORT.resolve():
        ap.error("--library writes a report of the chosen libraries only: give --out elsewhere")
    os.environ["PEHP_NO_CACHE"] = "1"  # the times below are computed runs (pehotpatch/cache.py)
    missing = [t for t in (CLANG, LLD, DLLTOOL) if shutil.which(t) is None]
    if missing:
        print(f"realcode: missing {', '.join(missing)} (make toolchain)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    results = [run_pair(lib) for lib in LIBRARIES if not a.library or lib.name in a.library]
    out = Path(a.out)
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    tail = old.split(GENERATED_END, 1)[1].lstrip("\n") if GENERATED_END in old else ""
    out.write_text(render(results, "\n" + tail if tail else ""), encoding="utf-8")
    for r in results:
        acc = "" if r.error or not (r.with_pdb and r.without_pdb) else (
            f"; recall {_pct(r.with_pdb)} / {_pct(r.without_pdb)}, false positives "
            f"{len(r.with_pdb.false_positives)} / {len(r.without_pdb.false_positives)} (with / without PDBs)")
        print(f"{r.library} {r.base} -> {r.new}: {r.error or r.verdict} "
              f"({sum(sum(c.values()) for c in r.findings.values())} findings{acc}, {r.seconds:.1f} s)")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
