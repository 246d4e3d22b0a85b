"""The PDB reader against llvm-pdbutil-22, the independent oracle.

Always: the committed ``tests/data/pdb/sample_x64.pdb`` against the committed
``sample_x64.pdbutil.txt`` dump.  With clang-cl-22 / lld-link-22 / llvm-pdbutil-22
installed: fresh builds of the C sample for x64, x86 and ARM64 and of the C++ sample,
compared with a live dump.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PDB_DATA as DATA  # noqa: E402
from conftest import pdb_fixture_build  # noqa: E402

from pehotpatch.image.codeview.leaves import LF_CLASS, LF_STRUCTURE, LF_UNION
from pehotpatch.image.pdb import load_pdb

build = pdb_fixture_build()
HAVE_TOOLCHAIN = build.have_toolchain()


# --- llvm-pdbutil dump parsing ----------------------------------------------------------
@dataclass
class Oracle:
    guid: uuid.UUID | None = None
    age: int | None = None
    section_vas: list[int] = field(default_factory=list)
    procs: list[tuple[str, str, int, int, int]] = field(
        default_factory=list
    )  # kind name seg off size
    data: list[tuple[str, str, int, int]] = field(default_factory=list)  # kind name seg off
    publics: list[tuple[str, int, int, str]] = field(default_factory=list)  # name seg off flags
    udts: dict[int, tuple[str, str, int, bool, int | None]] = field(default_factory=dict)
    fieldlists: dict[int, list[tuple[str, str, int]]] = field(default_factory=dict)

    def rva(self, seg: int, off: int) -> int | None:
        return self.section_vas[seg - 1] + off if 0 < seg <= len(self.section_vas) else None


_SYM_HEAD = re.compile(r"^\s*\d+ \| (S_\w+) \[size = \d+\](?: `(.*)`)?")
_TYPE_HEAD = re.compile(
    r"^\s*0x([0-9A-F]+) \| (LF_\w+) \[size = \d+(?:, hash = 0x[0-9A-F]+)?\](?: `(.*)`)?"
)
_ADDR = re.compile(r"addr = (\d+):(\d+)")


def _split_sections(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    out: dict[str, list[str]] = {}
    title = None
    for i, ln in enumerate(lines):
        if ln.startswith("====") and i > 0:
            title = lines[i - 1].strip()
            out[title] = []
        elif title is not None:
            out[title].append(ln)
    return out


def _records(lines: list[str], head: re.Pattern[str]) -> list[tuple[re.Match[str], list[str]]]:
    recs: list[tuple[re.Match[str], list[str]]] = []
    for ln in lines:
        m = head.match(ln)
        if m:
            recs.append((m, []))
        elif recs:
            recs[-1][1].append(ln)
    return recs


def parse_pdbutil(text: str) -> Oracle:
    sec = _split_sections(text)
    o = Oracle()
    for ln in sec.get("Summary", []):
        if "GUID:" in ln:
            o.guid = uuid.UUID(ln.split("GUID:")[1].strip().strip("{}"))
        elif ln.strip().startswith("Age:"):
            o.age = int(ln.split(":")[1])
    for ln in sec.get("Section Headers", []):
        m = re.match(r"^\s*([0-9A-F]+) virtual address$", ln)
        if m:
            o.section_vas.append(int(m.group(1), 16))
    for title in ("Symbols", "Global Symbols"):
        for m, body in _records(sec.get(title, []), _SYM_HEAD):
            kind, name = m.group(1), m.group(2)
            text_body = " ".join(body)
            a = _ADDR.search(text_body)
            if kind in ("S_GPROC32", "S_LPROC32", "S_GPROC32_ID", "S_LPROC32_ID") and a:
                size = int(re.search(r"code size = (\d+)", text_body).group(1))
                o.procs.append((kind, name, int(a.group(1)), int(a.group(2)), size))
            elif kind in ("S_GDATA32", "S_LDATA32", "S_GTHREAD32", "S_LTHREAD32") and a:
                o.data.append((kind, name, int(a.group(1)), int(a.group(2))))
    for m, body in _records(sec.get("Public Symbols", []), _SYM_HEAD):
        if m.group(1) == "S_PUB32":
            text_body = " ".join(body)
            a = _ADDR.search(text_body)
            flags = re.search(r"flags = (.*?), addr", text_body).group(1)
            o.publics.append((m.group(2), int(a.group(1)), int(a.group(2)), flags))
    for title, lines in sec.items():
        if not title.startswith("Types (TPI"):
            continue
        for m, body in _records(lines, _TYPE_HEAD):
            ti, kind, name = int(m.group(1), 16), m.group(2), m.group(3)
            text_body = "\n".join(body)
            if kind in ("LF_STRUCTURE", "LF_CLASS", "LF_UNION"):
                opts = re.search(r"options: (.*), sizeof (\d+)", text_body)
                fl = re.search(r"field list: (0x[0-9A-F]+|<no type>)", text_body).group(1)
                o.udts[ti] = (
                    kind,
                    name,
                    int(opts.group(2)),
                    "forward ref" in opts.group(1),
                    None if fl == "<no type>" else int(fl, 16),
                )
            elif kind == "LF_FIELDLIST":
                members: list[tuple[str, str, int]] = []
                pending_base = False
                for ln in body:
                    mm = re.search(r"- LF_MEMBER \[name = `(.*?)`, Type = .*?, offset = (\d+),", ln)
                    if mm:
                        members.append(("member", mm.group(1), int(mm.group(2))))
                    elif "- LF_BCLASS" in ln:
                        pending_base = True
                    elif pending_base:
                        mb = re.search(r"offset = (\d+)", ln)
                        if mb:
                            members.append(("base", "", int(mb.group(1))))
                        pending_base = False
                o.fieldlists[ti] = members
    return o


# --- the PDBs under test ------------------------------------------------------------------
@dataclass
class Case:
    name: str
    arch: str
    obj: Path
    pdb: Path
    dump: str


CASES = [
    pytest.param(("committed", "x64"), id="committed-x64"),
    pytest.param(("sample", "x64"), id="built-c-x64", marks=pytest.mark.toolchain),
    pytest.param(("sample", "x86"), id="built-c-x86", marks=pytest.mark.toolchain),
    pytest.param(("sample", "arm64"), id="built-c-arm64", marks=pytest.mark.toolchain),
    pytest.param(("sample_cpp", "x64"), id="built-cpp-x64", marks=pytest.mark.toolchain),
]


@pytest.fixture(scope="session")
def _built_cache(tmp_path_factory):
    return {"root": tmp_path_factory.mktemp("pdb-samples"), "cases": {}}


@pytest.fixture(params=CASES)
def case(request, _built_cache) -> Case:
    name, arch = request.param
    if name == "committed":
        return Case(
            "sample",
            arch,
            DATA / "sample_x64.obj",
            DATA / "sample_x64.pdb",
            (DATA / "sample_x64.pdbutil.txt").read_text(),
        )
    if not HAVE_TOOLCHAIN:
        pytest.skip("needs clang-cl-22, lld-link-22, llvm-pdbutil-22, llvm-readobj-22")
    cache = _built_cache["cases"]
    if (name, arch) not in cache:
        obj, pdb = build.build_sample(name, arch, _built_cache["root"] / f"{name}-{arch}")
        cache[(name, arch)] = Case(name, arch, obj, pdb, build.pdbutil(pdb, *build.DUMP_ARGS))
    return cache[(name, arch)]


@pytest.fixture
def loaded(case):
    return load_pdb(case.pdb), parse_pdbutil(case.dump)


MACHINES = {"x64": 0x8664, "x86": 0x14C, "arm64": 0xAA64}


def test_identity_matches_oracle(case, loaded):
    pdb, oracle = loaded
    assert oracle.guid is not None
    assert pdb.guid == oracle.guid
    assert pdb.age == oracle.age
    assert pdb.machine == MACHINES[case.arch]
    assert pdb.info.has_ipi


def test_section_headers_match_oracle(loaded):
    pdb, oracle = loaded
    assert [s.virtual_address for s in pdb.sections] == oracle.section_vas
    assert pdb.sections[0].name == ".text"


def test_procedures_match_oracle(loaded):
    pdb, oracle = loaded
    ours = sorted((p.name, p.rva, p.size, p.is_global) for p in pdb.procedures)
    theirs = sorted(
        (name, oracle.rva(seg, off), size, kind.startswith("S_G"))
        for kind, name, seg, off, size in oracle.procs
    )
    assert ours == theirs
    assert len(ours) >= 5


def test_publics_match_oracle(loaded):
    pdb, oracle = loaded
    ours = sorted((p.name, p.rva, p.is_function) for p in pdb.publics)
    theirs = sorted((n, oracle.rva(s, o), "function" in f) for n, s, o, f in oracle.publics)
    assert ours == theirs


def test_data_symbols_match_oracle(loaded):
    pdb, oracle = loaded
    ours = {(d.name, d.rva) for d in pdb.globals_}
    theirs = {(n, oracle.rva(s, o)) for _k, n, s, o in oracle.data}
    assert ours == theirs
    # every global-stream record is found once even though lld also keeps S_LDATA32
    # in the module stream
    assert len(pdb.globals_) == len(ours)


def test_struct_layouts_match_oracle(loaded):
    pdb, oracle = loaded
    types = pdb.types
    checked = 0
    for ti, (kind, name, size, fwd, flist) in oracle.udts.items():
        lay = types.layout(ti)
        if fwd:
            # a forward reference resolves to the definition with the same name
            definition = next(
                (t for t, u in oracle.udts.items() if u[1] == name and not u[3] and u[0] == kind),
                None,
            )
            if definition is not None:
                assert lay.type_index == definition
            continue
        assert lay.size == size, name
        assert (
            lay.kind == {"LF_STRUCTURE": "struct", "LF_CLASS": "class", "LF_UNION": "union"}[kind]
        )
        expected = oracle.fieldlists.get(flist, []) if flist else []
        assert [(f.name, f.offset) for f in lay.fields] == [
            (n, o) for k, n, o in expected if k == "member"
        ]
        assert [b.offset for b in lay.bases] == [o for k, _n, o in expected if k == "base"]
        assert types.udt_by_name(name) == ti
        checked += 1
    assert checked >= 2
    kinds = frozenset({LF_STRUCTURE, LF_CLASS, LF_UNION})
    assert set(types.types.indexes_of_kinds(kinds)) == set(oracle.udts)


def test_procedure_module_and_compile_flags(case, loaded):
    pdb, _ = loaded
    mods = {m.name: m for m in pdb.modules}
    assert "* Linker *" in mods
    src_mod = next(m for m in pdb.modules if m.name.endswith(f"{case.name}_{case.arch}.obj"))
    assert src_mod.hotpatch
    assert pdb.compile_flags[src_mod.name].hotpatch
    assert not mods["* Linker *"].hotpatch
    assert all(p.module == src_mod.name for p in pdb.procedures)


def test_lld_drops_hotpatchfunc_records(loaded):
    # lld-link does not copy S_HOTPATCHFUNC into the PDB: the set is empty here and the
    # object files are where the marks are read (see test_coff_objects.py).
    pdb, _ = loaded
    assert pdb.hotpatch_functions == set()
    assert not any(p.hotpatch_marked for p in pdb.procedures)


def test_pdb_matches(case):
    """The GUID must match; the age may be the info-stream or the DBI age.  (The error
    a mismatch gives is tested through the loader in test_info_symbols.py.)"""
    pdb = load_pdb(case.pdb)
    assert pdb.matches(pdb.guid, pdb.age)
    assert pdb.matches(pdb.guid, pdb.dbi_age)
    assert not pdb.matches(uuid.UUID(int=pdb.guid.int ^ 1), pdb.age)
    assert not pdb.matches(pdb.guid, max(pdb.age, pdb.dbi_age) + 1)


# --- facts about the C sample (all architectures) ----------------------------------------
C_SIGNATURES = {
    "telemetry_push": "int telemetry_push(struct ring *, unsigned int)",
    "helper": "int helper(int)",
    "var_fn": "int var_fn(const char *, ...)",
    "get_fp": "void (*get_fp(void))(int)",
    "patched": "int patched(int)",
    "use_all": "int use_all(union value *, enum color, int (*)(int, const char *))",
    "set_cb": "void set_cb(int (*)(int, const char *))",
}


def _c_case(case):
    if case.name != "sample":
        pytest.skip("C sample facts")


def test_c_signatures(case, loaded):
    _c_case(case)
    pdb, _ = loaded
    sigs = {p.name: p.signature for p in pdb.procedures}
    for name, sig in C_SIGNATURES.items():
        assert sigs[name] == sig
    if case.arch == "x86":
        assert sigs["std_fn"] == "int __stdcall std_fn(int, const char *)"
        assert sigs["fast_fn"] == "int __fastcall fast_fn(int, int)"
    else:  # the conventions are ignored on x64 / ARM64
        assert sigs["std_fn"] == "int std_fn(int, const char *)"
        assert sigs["fast_fn"] == "int fast_fn(int, int)"


def test_c_ring_layout(case, loaded):
    _c_case(case)
    pdb, _ = loaded
    ptr = 4 if case.arch == "x86" else 8
    lay = pdb.types.layout(pdb.types.udt_by_name("ring"))
    fields = {f.name: f for f in lay.fields}
    assert lay.name == "struct ring"
    assert lay.kind == "struct"
    assert [f.name for f in lay.fields] == [
        "head",
        "tail",
        "buf",
        "next",
        "in",
        "f1",
        "f2",
        "big",
        "label",
        "matrix",
    ]
    assert (fields["buf"].offset, fields["buf"].type_name, fields["buf"].size) == (8, "int[16]", 64)
    assert (fields["next"].type_name, fields["next"].size) == ("struct ring *", ptr)
    assert fields["in"].type_name == "struct inner"
    assert fields["in"].size == 4
    assert fields["in"].offset == 72 + ptr
    f1, f2 = fields["f1"], fields["f2"]
    assert f1.offset == f2.offset == fields["in"].offset + 4
    assert (f1.bit_offset, f1.bit_size, f2.bit_offset, f2.bit_size) == (0, 3, 3, 5)
    assert f1.type_name == "unsigned int"
    assert fields["head"].bit_size is None
    assert fields["big"].type_name == "unsigned long long"
    assert fields["label"].type_name == "const char *"
    assert (fields["matrix"].type_name, fields["matrix"].size) == ("double[2][3]", 48)
    inner = pdb.types.layout(pdb.types.udt_by_name("struct inner"))
    assert [(f.name, f.offset, f.type_name) for f in inner.fields] == [
        ("a", 0, "short"),
        ("b", 2, "char"),
    ]
    color = pdb.types.layout(pdb.types.udt_by_name("color"))
    assert color.kind == "enum"
    assert color.enumerators == [("RED", 0), ("GREEN", 5), ("BLUE", 6)]
    value = pdb.types.layout(pdb.types.udt_by_name("value"))
    assert value.kind == "union"
    assert value.size == ptr
    assert {f.offset for f in value.fields} == {0}


def test_c_globals(case, loaded):
    _c_case(case)
    pdb, _ = loaded
    ptr = 4 if case.arch == "x86" else 8
    g = {d.name: d for d in pdb.globals_}
    assert (g["g_name"].type_name, g["g_name"].size, g["g_name"].contains_pointers) == (
        "const char *",
        ptr,
        True,
    )
    assert not g["g_name"].is_const  # the pointer itself is writable
    assert (g["k_table"].type_name, g["k_table"].is_const, g["k_table"].contains_pointers) == (
        "const int[4]",
        True,
        False,
    )
    assert (g["k_names"].type_name, g["k_names"].is_const, g["k_names"].contains_pointers) == (
        "const char *const[2]",
        True,
        True,
    )
    assert g["g_callback"].type_name == "int (*)(int, const char *)"
    assert g["g_callback"].contains_pointers
    assert g["g_volatile"].type_name == "volatile long"
    assert g["g_color"].type_name == "enum color"
    assert not g["g_color"].contains_pointers
    assert g["s_counter"].is_global is False
    assert g["local_static"].procedure == "patched"
    assert g["local_static"].is_global is False
    assert g["k_in_long_section"].type_name == "const int"
    assert g["g_name"].is_global
    assert g["g_name"].module is not None and g["g_name"].module.endswith(".obj")
    if case.arch == "arm64":
        # clang's ARM64 backend splits the struct / union globals (g_ring.0, ...) and
        # drops their debug records
        assert "g_ring" not in g
        return
    assert (g["g_ring"].type_name, g["g_ring"].contains_pointers, g["g_ring"].is_const) == (
        "struct ring",
        True,
        False,
    )
    assert g["g_value"].type_name == "union value"
    assert g["g_value"].contains_pointers


def test_c_inline_sites(case, loaded):
    _c_case(case)
    pdb, _ = loaded
    assert "add7" in pdb.inline_sites.get("telemetry_push", set())


# --- facts about the C++ sample ----------------------------------------------------------
def test_cpp_signatures_and_classes(case, loaded):
    if case.name != "sample_cpp":
        pytest.skip("C++ sample facts")
    pdb, _ = loaded
    sigs = {p.name: p.signature for p in pdb.procedures}
    assert sigs["ns::Base::get"] == "int ns::Base::get(void) const"
    assert sigs["ns::Derived::extra"] == "int ns::Derived::extra(int &, int &&)"
    assert sigs["ns::free_fn"] == "int ns::free_fn(const struct ns::Derived &)"
    assert sigs["entry"] == "int entry(int)"
    t = pdb.types
    base = t.layout(t.udt_by_name("ns::Base"))
    derived = t.layout(t.udt_by_name("ns::Derived"))
    assert base.has_vfptr
    assert [(f.name, f.offset) for f in base.fields] == [("b", 8)]
    assert [(b.name, b.offset) for b in derived.bases] == [("struct ns::Base", 0)]
    assert [(f.name, f.offset, f.type_name) for f in derived.fields] == [("d", 16, "double")]
    assert t.contains_pointers(t.udt_by_name("ns::Derived"))  # the vfptr, through the base
    g = {d.name: d for d in pdb.globals_}
    assert g["ns::Derived::count"].type_name == "int"
    assert "ns::Derived::extra" in pdb.inline_sites.get("entry", set())


def test_scope_pointers_in_module_stream(case):
    """In a PDB the linker fills each procedure's parent/end offsets: they match the records."""
    from pehotpatch.image.codeview.symbols import S_END, S_INLINESITE_END, iter_records
    from pehotpatch.image.pdb.dbi import parse_dbi
    from pehotpatch.image.pdb.modules import decode_module_stream
    from pehotpatch.image.pdb.msf import Msf

    msf = Msf.open(str(case.pdb))
    mod = parse_dbi(msf.stream(3)).modules[0]
    data = msf.stream(mod.sym_stream)
    kinds = {off: kind for off, kind, _e in iter_records(data, 4, mod.sym_byte_size)}
    scan = decode_module_stream(data, mod)
    assert scan.procedures and all(kinds[p.end] == S_END for p in scan.procedures)
    for site in scan.inline_sites:
        assert kinds[site.end] == S_INLINESITE_END
        assert site.parent in kinds
