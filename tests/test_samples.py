"""The committed sample corpus (samples/): complete, well-formed, and reproducible.

The structural tests need only the committed files.  The ``toolchain`` tests rebuild
scenarios with samples/build.sh and check that the result is byte-identical, and
recompute each scenario's function lists from the object files.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pefile
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"

MACHINES = {"x64": 0x8664, "x86": 0x14C, "arm64": 0xAA64}
LOAD_CONFIG_SIZE = {"x64": 0x140, "x86": 0xC0, "arm64": 0x140}
ALL_SCENARIOS = {
    "body_fix",
    "fix_globals",
    "fix_calls_unchanged",
    "new_export",
    "removed_export",
    "new_import",
    "signature_change",
    "struct_layout",
    "data_init_change",
    "unmarked_change",
    "inline_pulls",
    "direct_global_access",
    "prologue_not_patchable",
    "no_change",
}
# gatelib (samples/src/gatelib.c): the hard cases of the gate, x64 only
GATE_SCENARIOS = {
    "escape_callback",
    "fnptr_identity",
    "tls_ref",
    "hidden_layout",
    "init_once",
    "switch_table",
    "constants",
    "restrict_param",
    "ref_relocs",
}
REQUIRED = {
    "x64": ALL_SCENARIOS | GATE_SCENARIOS,
    "x86": {"body_fix", "prologue_not_patchable"},
    "arm64": {"body_fix", "prologue_not_patchable"},
}
RULES = {
    "HP105", "HP109", "HP201", "HP202", "HP211", "HP212", "HP301", "HP311", "HP401", "HP403", "HP404",
    "HP501", "HP601", "HP603", "HP604", "HP701", "HP703", "HP704",
}  # fmt: skip
IMAGE_LEVEL_RULES = {"HP704"}
DIFF_KEYS = (
    "changed_functions",
    "added_functions",
    "removed_functions",
    "changed_globals",
    "added_globals",
    "removed_globals",
)
FUNCTION_KEYS = DIFF_KEYS[:3]
IMAGE_FILES = ("base.dll", "base.pdb", "intermediate.dll", "intermediate.pdb")
MSF_MAGIC = b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\x00\x00\x00"
C_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# compiler-made constants (string literals, float constants) and sections, named as the PDB does
DECORATED = re.compile(r"(\?\?_C@|__real@|__xmm@)[^\s]+|\.[a-z]+")

TOOLS = ("clang-cl-22", "lld-link-22", "llvm-dlltool-22")
needs_toolchain = pytest.mark.skipif(
    not all(shutil.which(t) for t in TOOLS), reason="clang-cl-22 / lld-link-22 not installed"
)
needs_objdump = pytest.mark.skipif(
    shutil.which("llvm-objdump-22") is None, reason="llvm-objdump-22 not installed"
)


def scenario_dirs() -> list[Path]:
    return sorted(p for arch in MACHINES for p in (SAMPLES / arch).glob("*") if p.is_dir())


def scenario_id(d: Path) -> str:
    return f"{d.parent.name}/{d.name}"


SCENARIOS = scenario_dirs()


def load_expect(d: Path) -> dict:
    with open(d / "expect.toml", "rb") as fh:
        return tomllib.load(fh)


def marked_functions(d: Path) -> list[str]:
    return (d / "hotpatch_functions.txt").read_text().split()


def has_hotpatchfunc(obj: bytes, name: str) -> bool:
    """Whether the object holds an S_HOTPATCHFUNC (0x1169) record naming ``name``:
    record kind, a 4-byte LF_FUNC_ID type index, then the NUL-terminated name."""
    pattern = re.compile(rb"\x69\x11.{4}" + re.escape(name.encode()) + rb"\x00", re.DOTALL)
    return pattern.search(obj) is not None


def intermediate_objs(d: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((d / "intermediate.objs").glob("*.obj"))]


# ---------------------------------------------------------------- structure


def test_required_scenarios_present():
    present: dict[str, set[str]] = {arch: set() for arch in MACHINES}
    for d in SCENARIOS:
        present[d.parent.name].add(d.name)
    for arch, required in REQUIRED.items():
        assert required <= present[arch], f"{arch}: missing {sorted(required - present[arch])}"
    for arch, names in present.items():
        known = ALL_SCENARIOS | (GATE_SCENARIOS if arch == "x64" else set())
        assert names <= known, f"{arch}: unknown scenario dirs {names - known}"


def test_scenario_list_matches_build_script():
    listed = subprocess.run(
        ["bash", str(SAMPLES / "build.sh"), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert sorted(listed) == sorted(scenario_id(d) for d in SCENARIOS)


@pytest.mark.parametrize("d", SCENARIOS, ids=scenario_id)
def test_scenario_files(d: Path):
    for name in (*IMAGE_FILES, "hotpatch_functions.txt", "expect.toml"):
        assert (d / name).is_file(), f"{scenario_id(d)}: missing {name}"
    library = ["pehplib.obj", "pehplib_report.obj"]
    if d.name in GATE_SCENARIOS:
        library = ["gatelib.obj", "gatetls.obj"] if d.name == "tls_ref" else ["gatelib.obj"]
    for kind in ("base", "intermediate"):
        objs = sorted((d / f"{kind}.objs").glob("*.obj"))
        assert [p.name for p in objs] == library
    for p in d.rglob("*"):
        if p.is_file():
            assert p.stat().st_size < 200_000, f"{p} is too large to commit"


@pytest.mark.parametrize("d", SCENARIOS, ids=scenario_id)
def test_expect_schema(d: Path):
    expect = load_expect(d)
    # [run] (the call sequence for pehp simulate) is checked in tests/test_emulate_runs.py
    assert set(expect) - {"run"} == {"scenario", "machine", "description", "diff", "check"}
    assert expect["scenario"] == d.name
    assert expect["machine"] == d.parent.name
    assert isinstance(expect["description"], str) and expect["description"]
    assert "\n" not in expect["description"]

    diff = expect["diff"]
    assert set(diff) == set(DIFF_KEYS)
    for key in DIFF_KEYS:
        assert isinstance(diff[key], list)
        assert all(isinstance(n, str) and (C_NAME.fullmatch(n) or DECORATED.fullmatch(n)) for n in diff[key]), key
        assert len(set(diff[key])) == len(diff[key]), f"duplicates in {key}"
        assert not any(n.startswith("__ref_") for n in diff[key]), "__ref_ is plumbing"

    check = expect["check"]
    assert set(check) <= {"verdict", "findings", "absent"}
    assert check["verdict"] in ("patchable", "rejected")
    findings = check.get("findings", [])
    assert isinstance(findings, list)
    for f in findings:
        # severity and mentions: see tests/test_check_samples.py
        assert set(f) <= {"rule", "symbol", "severity", "mentions"}
        assert f["rule"] in RULES
        if f["rule"] in IMAGE_LEVEL_RULES:
            assert "symbol" not in f
        else:
            assert isinstance(f["symbol"], str) and (C_NAME.fullmatch(f["symbol"]) or DECORATED.fullmatch(f["symbol"]))
    if check["verdict"] == "rejected":
        assert findings, "a rejected scenario names the findings that reject it"
    else:
        assert all(f.get("severity") == "note" for f in findings), "a patchable scenario may require notes only"


@pytest.mark.parametrize("d", SCENARIOS, ids=scenario_id)
def test_images_parse(d: Path):
    arch = d.parent.name
    for kind in ("base", "intermediate"):
        pe = pefile.PE(str(d / f"{kind}.dll"), fast_load=False)
        try:
            assert pe.FILE_HEADER.Machine == MACHINES[arch]
            assert pe.is_dll()
            assert hasattr(pe, "DIRECTORY_ENTRY_EXPORT")
            imports = {e.dll.decode().lower() for e in pe.DIRECTORY_ENTRY_IMPORT}
            assert imports == {"kernel32.dll"}
            load_config = pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct
            assert load_config.Size == LOAD_CONFIG_SIZE[arch]
            assert load_config.HotPatchTableOffset == 0
        finally:
            pe.close()
        assert (d / f"{kind}.pdb").read_bytes().startswith(MSF_MAGIC)
        for obj in (d / f"{kind}.objs").glob("*.obj"):
            assert int.from_bytes(obj.read_bytes()[:2], "little") == MACHINES[arch]


@pytest.mark.parametrize("d", SCENARIOS, ids=scenario_id)
def test_exports_and_imports_differ_as_expected(d: Path):
    """Export and import tables differ only in the scenarios made for that."""

    def tables(path: Path) -> tuple[set[str], set[str]]:
        pe = pefile.PE(str(path))
        try:
            exports = {s.name.decode() for s in pe.DIRECTORY_ENTRY_EXPORT.symbols}
            imports = {i.name.decode() for e in pe.DIRECTORY_ENTRY_IMPORT for i in e.imports}
        finally:
            pe.close()
        return exports, imports

    base_exports, base_imports = tables(d / "base.dll")
    inter_exports, inter_imports = tables(d / "intermediate.dll")
    expected = {
        "new_export": ({"telemetry_clear_error"}, set(), set()),
        "removed_export": (set(), {"telemetry_legacy_count"}, set()),
        "new_import": (set(), set(), {"Sleep"}),
    }.get(d.name, (set(), set(), set()))
    assert (
        inter_exports - base_exports,
        base_exports - inter_exports,
        inter_imports - base_imports,
    ) == expected
    assert base_imports <= inter_imports


@pytest.mark.parametrize("d", SCENARIOS, ids=scenario_id)
def test_hotpatch_functions_file(d: Path):
    names = marked_functions(d)
    assert all(C_NAME.fullmatch(n) for n in names)
    objs = intermediate_objs(d)
    for name in names:
        compiled_marked = any(has_hotpatchfunc(obj, name) for obj in objs)
        # direct_global_access: the listed function's translation unit was compiled
        # without the functions file, so it has no S_HOTPATCHFUNC.
        assert compiled_marked == (d.name != "direct_global_access"), name
    expect = load_expect(d)
    changed = set(expect["diff"]["changed_functions"])
    unmarked = {f["symbol"] for f in expect["check"].get("findings", []) if f["rule"] == "HP501"}
    assert changed - set(names) == unmarked


def test_base_objects_have_no_hotpatch_records():
    for d in SCENARIOS:
        for obj in (d / "base.objs").glob("*.obj"):
            assert b"__ref_" not in obj.read_bytes(), obj


# ---------------------------------------------------------------- toolchain

REBUILT = ("x64/fix_globals", "arm64/fix_globals")


def _build(out: Path) -> Path:
    subprocess.run(["bash", str(SAMPLES / "build.sh"), "--out", str(out), *REBUILT],
                   check=True, capture_output=True, cwd=out)
    return out


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("samples-rebuild"))


@pytest.fixture(scope="module")
def rebuilt_again(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("samples-rebuild-again"))


def _outputs(d: Path) -> list[str]:
    names = [*IMAGE_FILES, "hotpatch_functions.txt"]
    names += sorted(str(p.relative_to(d)) for p in d.glob("*.objs/*.obj"))
    assert len(names) == 9
    return names


@pytest.mark.toolchain
@needs_toolchain
@pytest.mark.parametrize("scenario", REBUILT)
def test_rebuild_is_reproducible(rebuilt: Path, rebuilt_again: Path, scenario: str):
    """Two builds on this machine give the same bytes (the build script pins what it can)."""
    for name in _outputs(SAMPLES / scenario):
        assert (rebuilt / scenario / name).read_bytes() == (rebuilt_again / scenario / name).read_bytes(), name


@pytest.mark.toolchain
@needs_toolchain
@pytest.mark.parametrize("scenario", REBUILT)
def test_rebuild_matches_the_committed_samples(rebuilt: Path, scenario: str):
    """The committed samples are what the sources build to.  The base is byte-identical.
    clang-22's secure hot-patch pass orders the __ref_ loads of a marked function by heap
    address, which differs between machines and clang builds even with ASLR off: the
    rebuilt intermediate may differ from the committed one, but only inside the marked
    functions (pehp's own diff of the two intermediates says so)."""
    import pehotpatch as pehp

    committed, fresh = SAMPLES / scenario, rebuilt / scenario
    for name in _outputs(committed):
        if not name.startswith("intermediate"):
            assert (fresh / name).read_bytes() == (committed / name).read_bytes(), name
    if (fresh / "intermediate.dll").read_bytes() == (committed / "intermediate.dll").read_bytes():
        return
    marked = set((committed / "hotpatch_functions.txt").read_text().split())
    d = pehp.diff_pair(committed / "intermediate.dll", fresh / "intermediate.dll")
    changed = {f.new.name for f in d.changed_functions}
    assert changed <= marked, changed - marked
    assert not d.added_functions and not d.removed_functions


def _objdiff():
    spec = importlib.util.spec_from_file_location("samples_objdiff", SAMPLES / "objdiff.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.toolchain
@needs_objdump
@pytest.mark.parametrize("d", SCENARIOS, ids=scenario_id)
def test_function_lists_match_objects(d: Path):
    if d.name == "switch_table":
        pytest.skip("its functions change through read-only data only; objdiff compares code")
    expect = load_expect(d)["diff"]
    found = _objdiff().compare(d)
    for key in FUNCTION_KEYS:
        assert sorted(expect[key]) == found[key], key
