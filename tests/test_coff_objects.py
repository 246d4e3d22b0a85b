"""The COFF object reader against llvm-readobj-22.

Always: the committed ``tests/data/pdb/sample_x64.obj`` against the committed
``sample_x64.readobj.txt``.  With the toolchain: fresh x64 / x86 / ARM64 / bigobj / C++
objects against a live ``llvm-readobj-22 --codeview --symbols``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PDB_DATA as DATA  # noqa: E402
from conftest import pdb_fixture_build  # noqa: E402

from pehotpatch.errors import FormatError, InputError
from pehotpatch.image.coff import load_object, load_objects, parse_object
from pehotpatch.image.coff_symtab import (
    IMAGE_COMDAT_SELECT_ASSOCIATIVE,
    IMAGE_SYM_CLASS_WEAK_EXTERNAL,
)

build = pdb_fixture_build()
HAVE_TOOLCHAIN = build.have_toolchain()


# --- llvm-readobj dump parsing ------------------------------------------------------------
@dataclass
class ReadobjOracle:
    symbols: list[dict[str, str]] = field(default_factory=list)
    procs: list[dict[str, str]] = field(default_factory=list)
    data: list[dict[str, str]] = field(default_factory=list)
    hotpatch: list[dict[str, str]] = field(default_factory=list)
    compile_flags: list[int] = field(default_factory=list)


def _blocks(lines: list[str], opener: re.Pattern[str]) -> list[dict[str, str]]:
    """``Key: value`` pairs of every block whose first line matches ``opener``."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] | None = None
    depth = 0
    for ln in lines:
        s = ln.strip()
        if cur is None:
            if opener.match(s):
                cur, depth = {"_open": s}, 1
            continue
        flags = re.match(r"^(\w+) \[ \((0x[0-9A-Fa-f]+)\)$", s)  # "Flags [ (0x4000)"
        if flags:
            cur.setdefault(flags.group(1), flags.group(2))
            depth += 1
            continue
        if s.endswith("{") or s.endswith("["):
            depth += 1
        elif s in ("}", "]"):
            depth -= 1
            if depth == 0:
                out.append(cur)
                cur = None
                continue
        if ":" in s:
            k, v = s.split(":", 1)
            cur.setdefault(k.strip(), v.strip())
    return out


def parse_readobj(text: str) -> ReadobjOracle:
    lines = text.splitlines()
    o = ReadobjOracle()
    o.symbols = _blocks(lines, re.compile(r"^Symbol \{$"))
    o.procs = _blocks(lines, re.compile(r"^(Global)?ProcIdSym \{$|^(Global)?ProcSym \{$"))
    o.data = _blocks(lines, re.compile(r"^(DataSym|GlobalData) \{$"))
    o.hotpatch = _blocks(lines, re.compile(r"^HotPatchFuncSym \{$"))
    for b in _blocks(lines, re.compile(r"^Compile3Sym \{$")):
        o.compile_flags.append(int(b["Flags"], 16))
    return o


def _paren_int(v: str) -> int:
    return int(re.search(r"\((-?(?:0x)?[0-9A-Fa-f]+)\)\s*$", v).group(1), 0)


# --- objects under test ---------------------------------------------------------------------
@dataclass
class ObjCase:
    name: str
    arch: str
    obj: Path
    dump: str
    bigobj: bool = False


CASES = [
    pytest.param(("committed", "x64", False), id="committed-x64"),
    pytest.param(("sample", "x64", False), id="built-c-x64", marks=pytest.mark.toolchain),
    pytest.param(("sample", "x86", False), id="built-c-x86", marks=pytest.mark.toolchain),
    pytest.param(("sample", "arm64", False), id="built-c-arm64", marks=pytest.mark.toolchain),
    pytest.param(("sample", "x64", True), id="built-c-x64-bigobj", marks=pytest.mark.toolchain),
    pytest.param(("sample_cpp", "x64", False), id="built-cpp-x64", marks=pytest.mark.toolchain),
]


@pytest.fixture(scope="session")
def _obj_cache(tmp_path_factory):
    return {"root": tmp_path_factory.mktemp("coff-samples"), "cases": {}}


def to_bigobj(data: bytes) -> bytes:
    """Re-encode a regular COFF object as /bigobj (clang only writes one past 65279 sections).

    Header -> ANON_OBJECT_HEADER_BIGOBJ, symbols 18 -> 20 bytes (32-bit section numbers,
    the section-definition aux record's high number part), every file pointer moved.
    """
    machine, nsec, stamp, symtab, nsyms, opt, _chars = struct.unpack_from("<HHIIIHH", data, 0)
    assert opt == 0
    shift = 56 - 20
    table_end = 20 + 40 * nsec
    headers = bytearray(data[20:table_end])
    for i in range(nsec):
        o = 40 * i
        raw_size, raw_ptr, reloc_ptr, ln_ptr = struct.unpack_from("<IIII", headers, o + 16)
        struct.pack_into(
            "<III",
            headers,
            o + 20,
            raw_ptr + shift if raw_ptr else 0,
            reloc_ptr + shift if reloc_ptr else 0,
            ln_ptr + shift if ln_ptr else 0,
        )
    body = data[table_end:symtab]
    syms = bytearray()
    i = 0
    while i < nsyms:
        name, value, secnum, typ, sclass, naux = struct.unpack_from(
            "<8sIhHBB", data, symtab + 18 * i
        )
        syms += struct.pack("<8sIiHBB", name, value, secnum, typ, sclass, naux)
        for k in range(naux):
            aux = data[symtab + 18 * (i + 1 + k) : symtab + 18 * (i + 2 + k)]
            syms += aux + b"\0\0"
        i += 1 + naux
    strtab = data[symtab + 18 * nsyms :]
    new_symtab = 56 + len(headers) + len(body)
    class_id = bytes.fromhex("c7a1bad1eebaa94baf20faf66aa4dcb8")
    header = struct.pack(
        "<HHHHI16sIIIIIII",
        0,
        0xFFFF,
        2,
        machine,
        stamp,
        class_id,
        0,
        0,
        0,
        0,
        nsec,
        new_symtab,
        nsyms,
    )
    return header + bytes(headers) + body + bytes(syms) + strtab


@pytest.fixture(params=CASES)
def case(request, _obj_cache) -> ObjCase:
    name, arch, big = request.param
    if name == "committed":
        return ObjCase(
            "sample", arch, DATA / "sample_x64.obj", (DATA / "sample_x64.readobj.txt").read_text()
        )
    if not HAVE_TOOLCHAIN:
        pytest.skip("needs clang-cl-22, lld-link-22, llvm-pdbutil-22, llvm-readobj-22")
    key = (name, arch, big)
    cache = _obj_cache["cases"]
    if key not in cache:
        out = _obj_cache["root"] / f"{name}-{arch}{'-big' if big else ''}"
        obj, _pdb = build.build_sample(name, arch, out)
        if big:
            big_obj = obj.with_name(obj.stem + "_big.obj")
            big_obj.write_bytes(to_bigobj(obj.read_bytes()))
            obj = big_obj
        cache[key] = ObjCase(name, arch, obj, build.readobj(obj, "--codeview", "--symbols"), big)
    return cache[key]


MACHINES = {"x64": 0x8664, "x86": 0x14C, "arm64": 0xAA64}


def test_header(case):
    obj = load_object(case.obj)
    assert obj.machine == MACHINES[case.arch]
    assert obj.is_bigobj == case.bigobj
    assert obj.path == str(case.obj)


def test_symbol_table_matches_oracle(case):
    obj = load_object(case.obj)
    oracle = parse_readobj(case.dump)
    assert len(obj.symbols) == len(oracle.symbols)
    for ours, theirs in zip(obj.symbols, oracle.symbols, strict=True):
        assert ours.name == theirs["Name"]
        assert ours.value == int(theirs["Value"])
        assert ours.section_number == _paren_int(theirs["Section"])
        assert ours.storage_class == _paren_int(theirs["StorageClass"])
        assert ours.aux_count == int(theirs["AuxSymbolCount"])
        if "Linked" in theirs:  # weak external
            assert ours.is_weak_external
            assert ours.weak_default == _paren_int(theirs["Linked"])
            assert ours.weak_characteristics == _paren_int(theirs["Search"])
            assert obj.symbol(ours.weak_default).name == theirs["Linked"].rsplit(" (", 1)[0]
    # symbol indexes count the aux records
    assert obj.symbols[1].index == 1 + obj.symbols[0].aux_count


def test_sections_and_comdats(case):
    obj = load_object(case.obj)
    oracle = parse_readobj(case.dump)
    # every section symbol's aux record (selection, association) is reflected on its section
    for s in oracle.symbols:
        if "Selection" not in s or _paren_int(s["StorageClass"]) != 3:
            continue
        sec = obj.section(_paren_int(s["Section"]))
        assert sec is not None and sec.name == s["Name"]
        selection = int(re.search(r"(0x[0-9A-F]+)", s["Selection"]).group(1), 16)
        if sec.is_comdat:
            assert sec.comdat_selection == selection
            if selection == IMAGE_COMDAT_SELECT_ASSOCIATIVE:
                assert sec.comdat_associated == int(s["Number"])
    # /Gy: one COMDAT .text section per function, led by the function's symbol
    leaders = {s.comdat_symbol for s in obj.sections if s.is_comdat and s.is_code}
    expect = {"patched", "telemetry_push"} if case.name == "sample" else {"entry"}
    decorate = "_" if case.arch == "x86" else ""
    assert {decorate + n for n in expect} <= leaders
    for s in obj.sections:
        assert len(s.data) == (0 if s.characteristics & 0x80 else s.size_of_raw_data)
        if s.comdat_selection == IMAGE_COMDAT_SELECT_ASSOCIATIVE:
            assert s.comdat_symbol is None and obj.section(s.comdat_associated) is not None


def test_long_section_name(case):
    if case.name != "sample":
        pytest.skip("C sample")
    obj = load_object(case.obj)
    assert obj.sections_named(".pehp$long_section_name")


def test_codeview_procedures_match_oracle(case):
    obj = load_object(case.obj)
    oracle = parse_readobj(case.dump)
    ours = sorted((p.name, p.size, p.symbol, p.function_id) for p in obj.procedures)
    theirs = sorted(
        (
            b["DisplayName"],
            int(b["CodeSize"], 16),
            b["CodeOffset"].rsplit("+", 1)[0],
            _paren_int(b["FunctionType"]),
        )
        for b in oracle.procs
    )
    assert ours == theirs
    for p in obj.procedures:
        sym = next(s for s in obj.symbols if s.name == p.symbol)
        assert p.section == sym.section_number
        assert p.offset == sym.value
        assert p.signature is not None


def test_codeview_data_match_oracle(case):
    obj = load_object(case.obj)
    oracle = parse_readobj(case.dump)
    ours = sorted((d.name, d.symbol) for d in obj.globals_)
    theirs = sorted((b["DisplayName"], b["DataOffset"].rsplit("+", 1)[0]) for b in oracle.data)
    assert ours == theirs


def test_hotpatch_functions_match_oracle(case):
    obj = load_object(case.obj)
    oracle = parse_readobj(case.dump)
    assert obj.hotpatch_functions == {b["Name"] for b in oracle.hotpatch}
    if case.name == "sample":
        assert obj.hotpatch_functions == {"patched", "telemetry_push"}
        assert obj.hotpatch_procedures == {"patched", "telemetry_push"}
    else:
        assert obj.hotpatch_functions == {"?free_fn@ns@@YAHAEBUDerived@1@@Z"}
        assert obj.hotpatch_procedures == {"ns::free_fn"}
    marked = {p.name for p in obj.procedures if p.hotpatch_marked}
    assert marked == obj.hotpatch_procedures
    ids = {_paren_int(b["Function"]) for b in oracle.hotpatch}
    assert {p.function_id for p in obj.procedures if p.hotpatch_marked} == ids


def test_compile_flags_match_oracle(case):
    obj = load_object(case.obj)
    oracle = parse_readobj(case.dump)
    assert obj.compile_flags is not None
    # llvm-readobj lists the flag bits above the 8-bit language code
    assert obj.compile_flags.flags & ~0xFF == oracle.compile_flags[0]
    assert obj.compile_flags.language == (1 if case.name == "sample_cpp" else 0)
    assert obj.compile_flags.hotpatch
    assert obj.compile_flags.version.startswith("Debian clang version") or obj.compile_flags.version


def test_ref_variables_are_weak_externals(case):
    if case.name != "sample":
        pytest.skip("C sample")
    obj = load_object(case.obj)
    prefix = "___ref_" if case.arch == "x86" else "__ref_"
    weak = {s.name: s for s in obj.weak_externals}
    assert f"{prefix}g_ring" in weak
    w = weak[f"{prefix}g_ring"]
    assert w.storage_class == IMAGE_SYM_CLASS_WEAK_EXTERNAL
    assert w.weak_characteristics == 3  # IMAGE_WEAK_EXTERN_SEARCH_ALIAS
    assert obj.symbol(w.weak_default).name.startswith(f".weak.{prefix}g_ring.default.")


def test_types_and_signatures_in_object(case):
    obj = load_object(case.obj)
    assert obj.types is not None and obj.type_server is None
    sigs = {p.name: p.signature for p in obj.procedures}
    if case.name == "sample":
        assert sigs["telemetry_push"] == "int telemetry_push(struct ring *, unsigned int)"
        assert (
            sigs["use_all"] == "int use_all(union value *, enum color, int (*)(int, const char *))"
        )
        lay = obj.types.layout(obj.types.udt_by_name("ring"))
        assert [f.name for f in lay.fields][:3] == ["head", "tail", "buf"]
        g = {d.name: d for d in obj.globals_}
        assert g["k_table"].type_name == "const int[4]"
        assert g["k_table"].is_const and not g["k_table"].contains_pointers
        assert g["local_static"].procedure == "patched"
        assert "add7" in obj.inline_sites.get("telemetry_push", set())
    else:
        assert sigs["ns::Derived::extra"] == "int ns::Derived::extra(int &, int &&)"


def test_bigobj_reads_like_regular(case):
    if not case.bigobj:
        pytest.skip("bigobj only")
    regular = case.obj.with_name(case.obj.name.replace("_big.obj", ".obj"))
    a, b = load_object(case.obj), load_object(regular)
    assert a.is_bigobj and not b.is_bigobj
    assert a.symbols == b.symbols
    assert [
        (s.name, s.data, s.relocations, s.comdat_selection, s.comdat_symbol) for s in a.sections
    ] == [(s.name, s.data, s.relocations, s.comdat_selection, s.comdat_symbol) for s in b.sections]
    assert a.procedures == b.procedures
    assert a.hotpatch_functions == b.hotpatch_functions


def test_committed_object_as_bigobj():
    data = (DATA / "sample_x64.obj").read_bytes()
    a, b = parse_object(to_bigobj(data), "big.obj"), parse_object(data, "x.obj")
    assert a.is_bigobj
    assert a.symbols == b.symbols
    assert a.globals_ == b.globals_
    assert a.hotpatch_functions == b.hotpatch_functions == {"patched", "telemetry_push"}


# --- directory loading and bad inputs --------------------------------------------------------
def test_load_objects_sorted(tmp_path):
    src = (DATA / "sample_x64.obj").read_bytes()
    (tmp_path / "b.obj").write_bytes(src)
    (tmp_path / "a.OBJ").write_bytes(src)
    (tmp_path / "notes.txt").write_text("not an object")
    (tmp_path / "sub.obj").mkdir()
    objs = load_objects(tmp_path)
    assert [Path(o.path).name for o in objs] == ["a.OBJ", "b.obj"]
    assert all(o.hotpatch_functions == {"patched", "telemetry_push"} for o in objs)


def test_load_objects_missing_dir(tmp_path):
    with pytest.raises(InputError):
        load_objects(tmp_path / "nope")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_object(tmp_path / "nope.obj")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "too small"),
        (b"BC\xc0\xde" + b"\0" * 64, "bitcode"),
        (struct.pack("<HHHH", 0, 0xFFFF, 0, 0x8664) + b"\0" * 60, "import library"),
        (b"MZ" + b"\0" * 62, "not a COFF object"),
    ],
)
def test_not_an_object(data, message):
    with pytest.raises(InputError, match=message):
        parse_object(data, "x.obj")


def test_truncated_object_is_format_error():
    data = (DATA / "sample_x64.obj").read_bytes()
    for cut in (30, 200, len(data) // 2, len(data) - 5):
        with pytest.raises(FormatError):
            parse_object(data[:cut], "x.obj")


def _first_long_named_symbol(data: bytes) -> int:
    """File offset of the first symbol whose name lives in the string table."""
    symtab, count = struct.unpack_from("<II", data, 8)
    i = 0
    while i < count:
        pos = symtab + 18 * i
        if data[pos : pos + 4] == b"\0\0\0\0":
            return pos
        i += 1 + data[pos + 17]
    raise AssertionError("no long symbol name")


def test_bad_symbol_names_refuse_an_object():
    """Objects are read strictly (an image's symbol table is not: see test_pe)."""
    data = bytearray((DATA / "sample_x64.obj").read_bytes())
    pos = _first_long_named_symbol(data)
    bad = bytearray(data)
    struct.pack_into("<I", bad, pos + 4, len(data))  # the name offset, past the string table
    with pytest.raises(FormatError, match="name offset .* outside the string table"):
        parse_object(bytes(bad), "x.obj")
    symtab, count = struct.unpack_from("<II", data, 8)
    bad = bytearray(data)
    struct.pack_into("<I", bad, symtab + 18 * count, len(data))  # the string table's size
    with pytest.raises(FormatError, match="string table size .* runs past the end"):
        parse_object(bytes(bad), "x.obj")
    i = last = 0
    while i < count:  # find the last symbol (not an aux record)
        last, i = i, i + 1 + data[symtab + 18 * i + 17]
    bad = bytearray(data)
    bad[symtab + 18 * last + 17] = count - last  # aux records beyond the table's end
    with pytest.raises(FormatError, match="aux records run past the symbol table"):
        parse_object(bytes(bad), "x.obj")
