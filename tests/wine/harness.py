"""Running real x64 Windows code under Wine for the tests: building the test programs
(runner.c, livepatch.c: CRT-free, kernel32 only, clang-cl-22 / lld-link-22, the import
library from kernel32.def by llvm-dlltool-22), a throw-away WINEPREFIX per test session,
and reading what the programs print.

Nothing here is part of pehp; the tests use it to show what a real Windows loader (Wine's)
does with the images pehp reads and writes.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLES = ROOT / "samples"
WINE = Path("/usr/lib/wine/wine64")
WINESERVER = Path("/usr/lib/wine/wineserver")
TOOLS = ("clang-cl-22", "lld-link-22", "llvm-dlltool-22")
IN_CI = os.environ.get("CI") == "true"
PROGRAMS = {"runner": "runner_main", "livepatch": "livepatch_main"}
# A few calls of our own for the scenarios without a [run] section (samples/src/pehplib.h).
# Each expected value follows from the C source, not from running it: version constant
# 0x00010003; telemetry_record returns 1 when the event is stored; CRC-32 of zero bytes is
# ~0xFFFFFFFF = 0; dispatch of a METRIC event returns value * weight 1; the default flush
# threshold is 8; legacy_count = records + dropped.
DEFAULT_CALLS = (
    ("telemetry_init()", None),
    ("pehp_version()", 0x00010003),
    ("telemetry_record(0, 5)", 1),
    ("telemetry_record(3, 9)", 1),
    ("telemetry_count()", 2),
    ("telemetry_checksum(0, 0)", 0),
    ("telemetry_dispatch(3, 7)", 7),
    ("config_get(2)", 8),
    ("telemetry_legacy_count()", 2),
)


def missing_tools() -> str | None:
    """Why the Wine tests cannot run here, or None."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not WINE.exists():
        missing.append(str(WINE))
    if missing:
        return f"missing {', '.join(missing)} (make toolchain wine)"
    return None


def build_programs(out: Path) -> dict[str, Path]:
    """Compile and link runner.exe and livepatch.exe into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    run = lambda *cmd: subprocess.run(cmd, cwd=out, check=True, capture_output=True, text=True)  # noqa: E731
    run("llvm-dlltool-22", "-m", "i386:x86-64", "-d", str(HERE / "kernel32.def"), "-l", "kernel32.lib")
    cflags = ["--target=x86_64-pc-windows-msvc", "/nologo", "/c", "/O2", "/GS-", "/Zl", "/W4", "/WX",
              "/clang:-ffreestanding"]
    sources = ["common.c", "hptable.c", "apply.c", *(f"{p}.c" for p in PROGRAMS)]
    run("clang-cl-22", *cflags, "--", *(str(HERE / s) for s in sources))
    exes = {}
    for prog, entry in PROGRAMS.items():
        exe = out / f"{prog}.exe"
        run("lld-link-22", "/nologo", "/subsystem:console", f"/entry:{entry}", "/nodefaultlib",
            "/machine:x64", f"/out:{exe.name}", "common.obj", *(["hptable.obj", "apply.obj"] if prog == "livepatch" else []),
            f"{prog}.obj", "kernel32.lib")
        exes[prog] = exe
    return exes


@dataclass
class Wine:
    """The test programs and a WINEPREFIX of their own."""

    prefix: Path
    exes: dict[str, Path]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WINE")}
        env.update(WINEPREFIX=str(self.prefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
        return env

    def run(self, prog: str, *args: str | os.PathLike[str], timeout: float = 120,
            native: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Runs a test program; its output goes through files, not pipes: the prefix's
        background processes (wineserver, services.exe, ...) inherit the first program's
        handles and outlive it, so a pipe would not see end-of-file when the program exits."""
        cmd = [str(WINE), str(self.exes[prog]), *(str(a) for a in args)]
        env = self.env
        if native:  # these DLL names load from the given files, not Wine's own builtin DLLs
            env["WINEDLLOVERRIDES"] += ";" + ",".join(native) + "=n"
        for attempt in range(3):
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   timeout=timeout)
                out.seek(0)
                err.seek(0)
                done = subprocess.CompletedProcess(cmd, p.returncode, out.read().decode(errors="replace"),
                                                   err.read().decode(errors="replace"))
            # Wine's own client lost its wineserver (seen once in CI: "wine client error:0:
            # recvmsg: Connection reset by peer", nothing run): start the server again and
            # rerun; a failure of the program itself is never retried.
            if "wine client error" not in done.stderr or done.stdout or attempt == 2:
                return done
            self.start_server()
        return done

    def start_server(self) -> None:
        """A persistent wineserver for the prefix: the server and the prefix's background
        processes stay up between runs (a run then takes a fraction of a second)."""
        subprocess.run([str(WINESERVER), "-p"], env=self.env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def stop(self) -> None:
        """Stops this prefix's wineserver (and with it the prefix's Wine processes)."""
        if WINESERVER.exists():
            subprocess.run([str(WINESERVER), "-k"], env=self.env, capture_output=True, timeout=60)


_SESSION: Wine | None = None


def session(tmp_path_factory) -> Wine:
    """One build and one prefix per pytest process (shared by every Wine test module); the
    test is skipped when the tools are missing, except in CI (``CI=true``), where that fails."""
    import pytest

    reason = missing_tools()
    if reason:
        if IN_CI:
            raise RuntimeError(reason)
        pytest.skip(reason)
    global _SESSION
    if _SESSION is None:
        root = tmp_path_factory.mktemp("wine")
        exes = build_programs(root / "bin")
        _SESSION = Wine(root / "prefix", exes)
        _SESSION.start_server()
        atexit.register(_SESSION.stop)
        # first start creates the prefix (a few seconds); later runs take well under a second
        _SESSION.run("runner", "nothing.dll", "f()", timeout=300)
    return _SESSION


# ------------------------------------------------------------------ call results


@dataclass(frozen=True)
class Result:
    """One call's outcome: ``value`` for a return (None: void), or the fault's exception code."""

    value: int | None = None
    fault: int | None = None
    fault_addr: int | None = None

    def same(self, other: Result) -> bool:
        """Equal as observed behaviour (a fault's address differs between images)."""
        return (self.value, self.fault) == (other.value, other.fault)

    def __str__(self) -> str:
        if self.fault is not None:
            return f"fault {self.fault:#x}"
        return "void" if self.value is None else hex(self.value)


_RESULT = re.compile(r"(?:OK (void|0x[0-9a-f]+)|FAULT (0x[0-9a-f]+) (0x[0-9a-f]+))$")


def parse_result(text: str) -> Result:
    m = _RESULT.match(text)
    if not m:
        raise ValueError(f"not a result: {text!r}")
    if m.group(1) is not None:
        return Result(None if m.group(1) == "void" else int(m.group(1), 16))
    return Result(fault=int(m.group(2), 16), fault_addr=int(m.group(3), 16))


def expect_doc(scenario: Path) -> dict:
    with open(scenario / "expect.toml", "rb") as fh:
        return tomllib.load(fh)


def run_calls(scenario: Path) -> list[str] | None:
    """The scenario's ``[run] calls`` (None when it has none)."""
    run = expect_doc(scenario).get("run")
    return list(run["calls"]) if run else None


def x64_scenarios() -> list[Path]:
    return sorted(p.parent for p in (SAMPLES / "x64").glob("*/expect.toml"))


def patchable_x64() -> list[Path]:
    return [d for d in x64_scenarios() if expect_doc(d)["check"]["verdict"] == "patchable"]


def exports(dll: Path) -> dict[str, int]:
    """Named export -> RVA, read by pefile (not by pehp)."""
    import pefile

    pe = pefile.PE(str(dll), fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
    out = {e.name.decode(): e.address for e in pe.DIRECTORY_ENTRY_EXPORT.symbols if e.name}
    pe.close()
    return out


def export_names(dll: Path) -> set[str]:
    return set(exports(dll))


def return_types(dll: Path) -> dict[str, str]:
    """Export name -> how its result is compared, from the PDB's signatures: ``void`` (no
    value; also pointers, which differ between images by construction), ``u32`` (int and
    unsigned int) or ``u64``."""
    import pehotpatch

    out = {}
    for f in pehotpatch.load_image(dll).index.functions:
        sig = f.signature
        if sig is None:
            continue
        head = sig.split("(", 1)[0].rsplit(f.name, 1)[0].strip()
        if head == "void" or "*" in head:
            out[f.name] = "void"
        elif head in ("int", "unsigned int", "long", "unsigned long"):
            out[f.name] = "u32"
        else:
            out[f.name] = "u64"
    return out


def typed(calls: list[str], types: dict[str, str]) -> list[str]:
    """The calls with the result type prefix the programs understand."""
    return [f"{types.get(c.split('(', 1)[0].strip(), 'u64')}:{c}" for c in calls]


@dataclass
class Run:
    rc: int
    results: list[Result]
    stdout: str
    stderr: str

    @property
    def loaded(self) -> int | None:
        """Where the DLL was loaded (runner's LOADED line)."""
        for line in self.stdout.splitlines():
            if line.startswith("LOADED "):
                return int(line.split()[1], 16)
        return None


def run_runner(wine: Wine, dll: Path, calls: list[str], *, repeat: int = 1, native: Sequence[str] = ()) -> Run:
    """runner.exe on ``dll`` with ``calls`` (already typed), ``repeat`` times over."""
    p = wine.run("runner", *(["--repeat", str(repeat)] if repeat != 1 else []), dll, *calls, native=native)
    results = []
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            _, i, rest = line.split(" ", 2)
            assert int(i) == len(results), p.stdout
            results.append(parse_result(rest))
    return Run(p.returncode, results, p.stdout, p.stderr)


def repeatable(wine: Wine, scenario: Path, calls: list[str], repeat: int = 3) -> list[str]:
    """``calls`` with the result of each call that does not repeat ignored (``void:``): run
    over and over (as the live patch thread does), a call whose result changes from one
    round to the next in the base or in the intermediate (a counter that only grows)
    cannot be compared with a single standalone run."""
    stable = [True] * len(calls)
    for kind in ("base", "intermediate"):
        run = run_runner(wine, scenario / f"{kind}.dll", calls, repeat=repeat)
        assert len(run.results) == repeat * len(calls), run.stdout
        rounds = [run.results[k * len(calls):(k + 1) * len(calls)] for k in range(repeat)]
        for i in range(len(calls)):
            stable[i] &= all(r[i].same(rounds[0][i]) for r in rounds)
    return [c if ok else "void:" + c.split(":", 1)[1] for c, ok in zip(calls, stable, strict=True)]


# ------------------------------------------------------------------ final images


_FINALS: Path | None = None


def finals_dir(tmp_path_factory) -> Path:
    """One directory of final images per pytest process (shared by the Wine test modules)."""
    global _FINALS
    if _FINALS is None:
        _FINALS = tmp_path_factory.mktemp("finals")
    return _FINALS


def emit_final(scenario: Path, out: Path) -> Path:
    """``pehp emit-final`` of the scenario, through the library, into ``out``."""
    from pehotpatch import api

    final = out / f"{scenario.name}.final.dll"
    if not final.exists():
        api.emit_final(scenario / "base.dll", scenario / "intermediate.dll", final,
                       objects=scenario / "intermediate.objs",
                       functions_file=scenario / "hotpatch_functions.txt")
    return final


def trap_rvas(scenario: Path, skip: set[int]) -> list[int]:
    """RVAs of the intermediate's functions that also exist in the base (by name), except
    ``skip``: in the patch image these copies must never run (the base has them)."""
    import pehotpatch

    base = {f.name for f in pehotpatch.load_image(scenario / "base.dll").index.functions if f.named}
    inter = pehotpatch.load_image(scenario / "intermediate.dll").index.functions
    return sorted({f.rva for f in inter if f.named and f.name in base and f.size >= 2} - skip)


def shared_globals(scenario: Path) -> list[str]:
    """``--global`` specs for the mutable 4- and 8-byte globals both images have."""
    import pehotpatch

    b = pehotpatch.load_image(scenario / "base.dll").index.globals_by_name
    n = pehotpatch.load_image(scenario / "intermediate.dll").index.globals_by_name
    specs = []
    for name, g in sorted(b.items()):
        h = n.get(name)
        if g.mutable and h is not None and h.mutable and g.size in (4, 8) and g.size == h.size:
            specs.append(f"{name}:{g.rva:#x}:{h.rva:#x}:{g.size}")
    return specs


@dataclass
class LiveRun:
    """What livepatch.exe printed, parsed (see the comment at the top of livepatch.c)."""

    rc: int
    stdout: str
    base: int = 0
    patch: int = 0
    then: int = 0
    records: list[tuple[str, int, int, int]] = field(default_factory=list)
    then_records: list[tuple[str, int, int, int]] = field(default_factory=list)
    retargeted: list[int] = field(default_factory=list)
    reverted: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    hpat: dict[str, int] = field(default_factory=dict)
    traps: dict[int, str] = field(default_factory=dict)
    applied: int | None = None
    globals: dict[str, tuple[int, int]] = field(default_factory=dict)
    undo_identical: bool | None = None
    patch_data_changed: list[tuple[int, int]] = field(default_factory=list)
    then_data_changed: list[tuple[int, int]] = field(default_factory=list)
    clean: dict[int, int] = field(default_factory=dict)
    vectors: dict[int, list[tuple[int, list[Result]]]] = field(default_factory=dict)
    thread: dict[str, int] = field(default_factory=dict)
    done: bool = False

    def only_vector(self, phase: int) -> list[Result]:
        """The one result vector every clean iteration of ``phase`` produced."""
        vs = self.vectors.get(phase, [])
        assert len(vs) == 1, f"phase {phase}: {len(vs)} different result vectors\n{self.stdout}"
        return vs[0][1]


def parse_live(rc: int, stdout: str) -> LiveRun:
    r = LiveRun(rc, stdout)
    for line in stdout.splitlines():
        head, _, rest = line.partition(" ")
        w = rest.split()
        if head == "IMAGES":
            images = {k: int(v, 16) for k, v in (x.split("=") for x in w)}
            r.base, r.patch, r.then = images["base"], images["patch"], images.get("then", 0)
        elif head in ("RECORD", "THEN_RECORD"):
            (r.records if head == "RECORD" else r.then_records).append(
                (w[0], int(w[1], 16), int(w[2], 16), int(w[3], 16)))
        elif head in ("RETARGETED", "REVERTED", "RETIRED"):
            {"RETARGETED": r.retargeted, "REVERTED": r.reverted, "RETIRED": r.retired}[head].append(int(w[0], 16))
        elif head == "REFUSED":
            r.refused.append(rest)
        elif head == "HPAT":
            r.hpat[w[0]] = int(w[1], 16)
        elif head == "TRAP":
            r.traps[int(w[0], 16)] = w[1]
        elif head == "APPLIED":
            r.applied = int(w[0])
        elif head == "GLOBAL":
            r.globals[w[0]] = (int(w[1].split("=")[1], 16), int(w[2].split("=")[1], 16))
        elif head == "UNDO":
            r.undo_identical = w[0] == "base_code_identical=1"
        elif head in ("PATCHDATA_CHANGED", "THEN_PATCHDATA_CHANGED"):
            (r.patch_data_changed if head == "PATCHDATA_CHANGED" else r.then_data_changed).append(
                (int(w[0], 16), int(w[1])))
        elif head == "PHASE":
            r.clean[int(w[0])] = int(w[1].split("=")[1])
        elif head == "VECTOR":
            p, count, results = rest.split(" ", 2)
            r.vectors.setdefault(int(p), []).append((int(count), [parse_result(x) for x in results.split("|")]))
        elif head == "THREAD":
            r.thread = {k: int(v) for k, v in (x.split("=") for x in w)}
        elif head == "DONE":
            r.done = True
    return r


def run_live(wine: Wine, base: Path, final: Path, calls: list[str], *, traps: Sequence[int] = (),
             globals_: Sequence[str] = (), iterations: int = 100, then: Path | None = None) -> LiveRun:
    args: list[str | Path] = [base, final, "--iterations", str(iterations)]
    if then is not None:
        args += ["--then", then]
    for t in traps:
        args += ["--trap", hex(t)]
    for g in globals_:
        args += ["--global", g]
    p = wine.run("livepatch", *args, *calls, timeout=300)
    return parse_live(p.returncode, p.stdout + p.stderr)
